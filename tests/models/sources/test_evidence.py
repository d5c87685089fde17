"""The evidence model as a source: a ResNet18 only, named by its training settings, its
classes the dataset's shapes."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.data.evidence_dataset import SHAPES, TrainSettings
from pipeline.errors import WeightsError
from pipeline.models.classifier import load_model
from pipeline.models.preprocessing import IMAGENET, Preprocessing

PHOTOS = Path(__file__).resolve().parents[3] / "data" / "sample"


def test_the_evidence_model_is_a_resnet18_only():
    with pytest.raises(WeightsError, match="Expected arch = resnet18 for the evidence model"):
        load_model("evidence", arch="mobilenet_v3_small")


def test_the_evidence_model_loads_with_its_shapes_and_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("XAI_CACHE_DIR", str(tmp_path / "cache"))
    settings = TrainSettings(images=16, batch=8, val_images=6, size=32,
                             backgrounds=str(PHOTOS))
    loaded = load_model("evidence", "logits", evidence=settings,
                        preprocessing=Preprocessing(32, 32))
    assert loaded.classes == SHAPES and not loaded.is_random
    assert loaded.weights_id == f"evidence:resnet18-{settings.key()}"
    assert loaded.report["key"] == settings.key() and loaded.arch == "resnet18"
    assert load_model("evidence", evidence=settings).preprocessing == IMAGENET
