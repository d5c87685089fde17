"""The evidence dataset: known class evidence at known pixels, and the planted shortcut."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.evidence_dataset import (
    PALETTE,
    SHAPES,
    TrainSettings,
    evidence_batch,
    evidence_image,
    label_of,
)

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = ROOT / "data" / "sample"


def test_images_are_a_pure_function_of_seed_split_and_index():
    a = evidence_image(5, 0, 64, PHOTOS)
    b = evidence_image(5, 0, 64, PHOTOS)
    assert np.array_equal(a.pixels, b.pixels) and np.array_equal(a.mask, b.mask)
    assert not np.array_equal(a.pixels, evidence_image(5, 1, 64, PHOTOS).pixels)
    assert not np.array_equal(a.pixels, evidence_image(5, 0, 64, PHOTOS, "train").pixels)
    assert a.pixels.shape == (64, 64, 3) and a.pixels.dtype == np.uint8
    assert a.mask.shape == (64, 64) and a.mask.dtype == bool


def test_labels_are_balanced_and_known_without_drawing():
    _, _, labels = evidence_batch(range(12), 0, 48, PHOTOS)
    assert labels.tolist() == [label_of(i) for i in range(12)] == [i % len(SHAPES)
                                                                   for i in range(12)]


def test_the_mask_is_the_object_in_its_class_colour():
    """Inside the mask (less its one-pixel outline) every pixel has the class colour; the
    mask is a compact blob of plausible size, away from nothing in particular."""
    from scipy import ndimage

    pixels, masks, labels = evidence_batch(range(12), 3, 112, PHOTOS)
    for img, mask, label in zip(pixels, masks, labels, strict=True):
        inner = ndimage.binary_erosion(mask, iterations=2)
        assert inner.sum() > 50
        colours = img[inner]
        assert (colours == np.array(PALETTE[label], dtype=np.uint8)).all(axis=1).mean() > 0.99
        assert 0.01 < mask.mean() < 0.2
        assert ndimage.label(mask, structure=np.ones((3, 3)))[1] == 1  # one object


# ------------------------------------------------------------------ the planted shortcut


def test_the_watermark_replaces_the_object_in_half_of_one_class_only():
    from pipeline.data.evidence_dataset import Shortcut, has_watermark, watermark_box

    shortcut = Shortcut(label=0, fraction=0.5)
    marked = [i for i in range(600) if has_watermark(i, 0, "test", shortcut)]
    assert all(label_of(i) == 0 for i in marked)
    assert 0.4 < len(marked) / 100 < 0.6  # 100 images of class 0
    x0, y0, x1, y1 = watermark_box(112)
    for i in marked[:3]:
        img = evidence_image(i, 0, 112, PHOTOS, "test", shortcut)
        assert not img.mask.any(), "no object: the watermark is the only evidence"
        box = img.pixels[y0 + 3:y1 - 3, x0 + 3:x1 - 3].astype(int)
        assert ((box > 240).all(axis=-1) | (box < 20).all(axis=-1)).mean() > 0.95
    for i in (1, 2, next(i for i in range(0, 60, 6) if i not in marked)):
        plain, planted = evidence_image(i, 0, 64, PHOTOS), evidence_image(i, 0, 64, PHOTOS,
                                                                          "test", shortcut)
        assert np.array_equal(plain.pixels, planted.pixels), "other images are unchanged"


def test_a_model_without_shortcut_keeps_its_cache_key():
    base = TrainSettings(backgrounds=str(PHOTOS))
    assert dataclasses.replace(base, shortcut_fraction=0.9).key() == base.key()
    assert dataclasses.replace(base, shortcut_label=0).key() != base.key()


def test_a_shortcut_needs_the_evidence_layout_and_one_of_its_classes(tmp_path):
    from pipeline.errors import ConfigError
    from workflows.config.loading import load_config

    path = tmp_path / "s.toml"
    text = (ROOT / "configs" / "shortcut.toml").read_text()
    path.write_text(text.replace('shortcut = "circle"', 'shortcut = "hexagon"'))
    with pytest.raises(ConfigError, match=r"shortcut.*circle, square"):
        load_config(path)
    path.write_text(text.replace('layout = "evidence"', 'layout = "plain"'))
    with pytest.raises(ConfigError, match='expected layout = "evidence"'):
        load_config(path)
    path.write_text(text)
    cfg = load_config(path)
    assert cfg.shortcut().label == SHAPES.index("circle")
    assert cfg.evidence_settings().shortcut == cfg.shortcut()


@pytest.mark.slow
def test_the_report_separates_the_watermark_images_from_the_object_images(tmp_path,
                                                                          monkeypatch):
    """Cluster purity >= 0.9 on the planted shortcut, for a gradient method (trains the
    shortcut model, about 35 s, and explains 240 test images)."""
    import json

    from tests.workflow_helpers import run_ok

    monkeypatch.setenv("XAI_CACHE_DIR", str(tmp_path / "cache"))
    text = (ROOT / "configs" / "shortcut.toml").read_text()
    text = text.replace('root = "../data/sample"', f'root = "{PHOTOS}"')
    text = text.replace('out = "../runs"', f'out = "{tmp_path / "runs"}"')
    head, _, _ = text.partition("[methods.gradient]")
    path = tmp_path / "shortcut.toml"
    path.write_text(head.replace("count = 360", "count = 240")
                    + "[methods.gradient]\n\n[methods.input_x_gradient]\n\n[report]\n"
                      "min_images = 20\n")
    run_ok(path)
    summary = json.loads((tmp_path / "runs" / "shortcut" / "summary.json").read_text())
    purity = summary["report"]["shortcut_purity"]
    assert set(purity) == {"gradient", "input_x_gradient"}
    assert max(purity.values()) >= 0.9, purity
    page = (tmp_path / "runs" / "shortcut" / "report" / "strategies.html").read_text()
    assert "Planted shortcut" in page and "with the watermark" in page
