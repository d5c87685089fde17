"""The comparison's known answer end to end (``make shortcut-compare``): the evidence model
trained with the planted shortcut against the same model trained on clean images. Slow: two
trainings (cached after the first use) and three runs of 360 images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workflows.commands.shortcut_case import main

METHODS = ("gradient", "integrated_gradients", "grad_cam")


@pytest.mark.slow
def test_the_shortcut_class_changes_first_and_its_change_is_the_watermark(
        tmp_path: Path) -> None:
    main(["--out", str(tmp_path)])
    result = json.loads((tmp_path / "shortcut-compare.json").read_text())
    for method in METHODS:
        ranked = result["classes"]["A-vs-B"]["label"][method]
        assert ranked[0]["class"] == "circle" and ranked[0]["changed"], method
        assert result["watermark"][method]["ratio"] >= 3, method
        reinit = result["classes"]["A-vs-A-reinit"]["label"][method]
        assert all(r["changed"] for r in reinit), method
        same = result["classes"]["A-vs-A"]["label"][method]
        assert not any(r["changed"] for r in same) and {r["p_value"] for r in same} == {1.0}
