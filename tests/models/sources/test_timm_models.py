"""timm's models: spelled ``timm:<name>``, refused with the install command when timm is
missing, and never given published weights."""

from __future__ import annotations

import sys

import pytest

from pipeline.errors import ConfigError
from pipeline.models.classifier import load_model
from pipeline.models.sources import MODEL_SOURCES, check_arch, source_for


def test_timm_names_are_taken_by_the_timm_source():
    assert check_arch("timm:deit_tiny_patch16_224") is None
    assert check_arch("timm:") == "expected timm:<model name>"
    assert source_for("timm:x", "random") is MODEL_SOURCES["timm"]
    assert source_for("timm:x", "w.pth") is MODEL_SOURCES["state-dict"]


def test_auto_weights_of_a_timm_model_are_random_without_trying():
    timm = MODEL_SOURCES["timm"]
    assert timm.weights_id("timm:x", "auto", 4) == "random:timm:x:seed=4"
    assert timm.weights_id("timm:x", "random", 4) == "random:timm:x:seed=4"
    assert timm.fallback_hint("timm:x", "auto") == ""


def test_timm_missing_is_refused_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(ConfigError, match=r"make setup EXTRAS=timm"):
        load_model("random", arch="timm:some_model_never_cached")
