from __future__ import annotations

import pytest
from PIL import Image

from pipeline.data.layouts import build_manifest, detect_layout, synthetic_image
from pipeline.errors import DataError


def _img(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(path)


def test_class_folders(tmp_path):
    for wnid in ("n01440764", "n01534433"):
        for i in range(3):
            _img(tmp_path / wnid / f"ILSVRC2012_val_{wnid}_{i}.JPEG")
    m = build_manifest("auto", tmp_path)
    assert m.layout == "class-folders"
    assert len(m) == 6
    assert m.labels == (0, 0, 0, 13, 13, 13)
    sub = build_manifest("class-folders", tmp_path, per_class=2)
    assert sub.labels == (0, 0, 13, 13)
    assert sub.ids[0] == "n01440764/ILSVRC2012_val_n01440764_0.JPEG"
    assert build_manifest("class-folders", tmp_path, per_class=2, limit=3).labels == (0, 0, 13)


def test_flat_csv_official_layout(tmp_path):
    for i in (1, 2, 3):
        _img(tmp_path / f"ILSVRC2012_val_{i:08d}.JPEG")
    (tmp_path / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n"
        "ILSVRC2012_val_00000001,n01751748 1 2 3 4\n"
        "ILSVRC2012_val_00000002,n01534433 5 6 7 8 n01534433 1 1 2 2\n")
    m = build_manifest("auto", tmp_path)
    assert m.layout == "flat-csv"
    assert m.labels == (65, 13, -1)  # n01751748 sea snake, n01534433 junco


def test_unknown_wnid_is_an_error(tmp_path):
    _img(tmp_path / "n99999999" / "a.JPEG")
    with pytest.raises(DataError, match="n99999999"):
        build_manifest("class-folders", tmp_path)


def test_plain_layout_and_per_class_needs_labels(tmp_path):
    _img(tmp_path / "b" / "x.png")
    _img(tmp_path / "a.jpg")
    assert detect_layout(tmp_path, "LOC_val_solution.csv") == "plain"
    assert build_manifest("plain", tmp_path).ids == ("a.jpg", "b/x.png")
    with pytest.raises(DataError, match="per_class"):
        build_manifest("plain", tmp_path, per_class=1)


def test_missing_folder_says_which_layout_to_put_where(tmp_path):
    with pytest.raises(DataError) as info:
        build_manifest("auto", tmp_path / "nope", dataset_name="imagenet-val-subset")
    msg = str(info.value)
    assert "imagenet-val-subset" in msg and "n01440764/" in msg and "LOC_val_solution.csv" in msg
    assert "--data-dir" in msg


def test_missing_csv_for_flat_layout(tmp_path):
    _img(tmp_path / "a.JPEG")
    with pytest.raises(DataError, match="label CSV"):
        build_manifest("flat-csv", tmp_path)


def test_synthetic_is_deterministic():
    m = build_manifest("synthetic", None, count=5, limit=3)
    assert m.ids == ("synthetic/000000", "synthetic/000001", "synthetic/000002")
    a, b = synthetic_image(1, 40), synthetic_image(1, 40)
    assert (a == b).all() and a.shape == (40, 40, 3)
    assert not (synthetic_image(2, 40) == a).all()
