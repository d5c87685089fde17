"""A run's dataset checks: a class-folder tree with a folder that is not a class is refused
before the model loads and before anything is made; a good tree's layout and labelled
count are on the console and in ``summary.json``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.workflow_helpers import cli, write_config


def _tree(root, folders):
    for i, folder in enumerate(folders):
        (root / folder).mkdir(parents=True)
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / folder / "a.png")


def _run(data, out, layout="auto"):
    config = write_config(data.parent / "run.toml", data, out, methods=("gradient",),
                          report=True)
    config.write_text(config.read_text().replace('layout = "plain"', f'layout = "{layout}"'))
    return cli("run", "--config", str(config), "--scheduler", "synchronous")


def test_a_folder_that_is_not_a_class_is_refused_before_the_model_loads(tmp_path,
                                                                          monkeypatch):
    import pipeline.models.classifier as classifier

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(classifier, "load_model", no_loading)
    _tree(tmp_path / "data", ("tabby", "espresso", "tabbby"))
    result = _run(tmp_path / "data", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert "got 1 folder that is not:\n  'tabbby' (close: 'tabby'" in result.output
    assert '--set dataset.layout="plain"' in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("folders", "layout", "expected"), [
    (("tabby", "espresso", "Tabby"), "auto", "class-folders (3 of 3 images labelled)"),
    (("tabby", "espresso", "tabbby"), "plain", "plain (0 of 3 images labelled)"),
])
def test_the_layout_found_and_the_labelled_images_are_said(tmp_path, folders, layout,
                                                           expected):
    _tree(tmp_path / "data", folders)
    result = _run(tmp_path / "data", tmp_path / "out", layout)
    assert result.exit_code == 0, result.output
    assert f"layout: {expected}\n" in result.output
    summary = json.loads((tmp_path / "out" / "run" / "summary.json").read_text())
    assert f"{summary['layout']} ({summary['labelled']} of 3 images labelled)" == expected
    page = (tmp_path / "out" / "run" / "report" / "summary.html").read_text()
    assert f"<td>layout</td><td>{expected}</td>" in page
