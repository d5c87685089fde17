"""The evidence model's training: once from its settings, deterministically, and cached under
the hash of every setting, a damaged or foreign cache file retrained."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pipeline.data.evidence_dataset import SHAPES, TrainSettings

PHOTOS = Path(__file__).resolve().parents[3] / "data" / "sample"


@pytest.fixture()
def tiny(tmp_path, monkeypatch) -> TrainSettings:
    monkeypatch.setenv("XAI_CACHE_DIR", str(tmp_path / "cache"))
    return TrainSettings(images=16, batch=8, val_images=6, size=32, backgrounds=str(PHOTOS))


def test_the_model_trains_once_then_loads_from_the_cache(tiny, monkeypatch):
    import torch

    from pipeline.models.sources import evidence_training

    net, report = evidence_training.load_evidence_model(tiny)
    assert set(report) >= {"accuracy", "seconds", "settings", "key", "sha256"}
    assert report["key"] == tiny.key()
    monkeypatch.setattr(evidence_training, "train", lambda *a, **k: pytest.fail("retrained"))
    again, cached = evidence_training.load_evidence_model(tiny)
    assert cached == report
    for (k, v), w in zip(net.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
    assert net.fc.out_features == len(SHAPES)


def test_training_is_deterministic(tiny):
    import torch

    from pipeline.models.sources.evidence_training import train

    a, _ = train(tiny)
    b, _ = train(tiny)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_corrupt_or_foreign_cache_file_is_retrained_with_a_message(tiny):
    from pipeline.models.sources import evidence_training

    _, report = evidence_training.load_evidence_model(tiny)
    weights, _ = evidence_training._paths(tiny)
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")  # damaged in place
    said: list[str] = []
    _, again = evidence_training.load_evidence_model(tiny, notify=said.append)
    assert len(said) == 1 and "hash does not match" in said[0] and str(weights) in said[0]
    assert again["sha256"] == report["sha256"]  # the same settings train the same weights
    other = dataclasses.replace(tiny, lr=1e-3)
    assert other.key() != tiny.key()
    assert evidence_training.cached_report(other) is None


def test_missing_backgrounds_are_a_clear_error(tiny):
    from pipeline.errors import WeightsError
    from pipeline.models.sources.evidence_training import load_evidence_model

    bad = dataclasses.replace(tiny, backgrounds="/nonexistent/photos")
    with pytest.raises(WeightsError, match="background photos"):
        load_evidence_model(bad)
