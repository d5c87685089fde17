from __future__ import annotations

import pytest
from PIL import Image

from pipeline.data.layouts import build_manifest, check_labels, detect_layout, synthetic_image
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


def _tree(root, folders):
    for i, folder in enumerate(folders):
        _img(root / folder / f"{i}.png")


def test_auto_with_a_folder_that_is_not_a_class_is_an_error(tmp_path):
    _tree(tmp_path, ("tabby", "espresso", "tabbby"))
    with pytest.raises(DataError) as info:
        check_labels("auto", tmp_path)
    msg = str(info.value)
    assert "got 1 folder that is not:\n  'tabbby' (close: 'tabby'" in msg
    assert "'espresso'" not in msg.split("got", 1)[1]
    assert '--set dataset.layout="plain"' in msg and 'layout = "plain"' in msg
    with pytest.raises(DataError, match="'tabbby' \\(close: 'tabby'"):
        build_manifest("auto", tmp_path)


def test_auto_with_class_folders_labels_every_image(tmp_path):
    _tree(tmp_path, ("tabby", "espresso", "Tabby"))  # names match without regard to case
    assert check_labels("auto", tmp_path) == "class-folders"
    m = build_manifest("auto", tmp_path)
    assert (m.layout, m.labels, m.labelled) == ("class-folders", (281, 967, 281), 3)
    assert m.describe() == "class-folders (3 of 3 images labelled)"


def test_a_wordnet_id_beside_class_names_is_a_label_or_an_error(tmp_path):
    _tree(tmp_path, ("tabby", "n07920052"))  # espresso's WordNet id
    assert build_manifest("auto", tmp_path).labels == (967, 281)
    _tree(tmp_path, ("n99999999",))
    with pytest.raises(DataError) as info:
        check_labels("auto", tmp_path)
    msg = str(info.value)
    assert "got 1 folder that is not among the 1000 classes:\n  'n99999999'\n" in msg
    assert '--set dataset.layout="plain"' in msg


def test_folders_none_of_which_is_a_class_stay_plain(tmp_path):
    _tree(tmp_path, ("2024", "misc"))
    (tmp_path / "tabbby").mkdir()  # a folder without images labels nothing
    assert check_labels("auto", tmp_path) == "plain"
    m = build_manifest("auto", tmp_path)
    assert (m.ids, m.labels) == (("2024/0.png", "misc/1.png"), (-1, -1))
    assert m.describe() == "plain (0 of 2 images labelled)"


def test_plain_runs_a_tree_with_a_typo_unlabelled_on_purpose(tmp_path):
    _tree(tmp_path, ("tabby", "espresso", "tabbby"))
    assert check_labels("plain", tmp_path) == "plain"
    assert build_manifest("plain", tmp_path).describe() == "plain (0 of 3 images labelled)"


def test_the_model_classes_decide_what_a_folder_is(tmp_path):
    _tree(tmp_path, ("cat", "dog", "dgo"))
    with pytest.raises(DataError) as info:
        check_labels("auto", tmp_path, classes=("cat", "dog", "bird"))
    assert "got 1 folder that is not:\n  'dgo' (close: 'dog')" in str(info.value)
    assert "one of its 3 classes, such as 'cat', 'dog', 'bird')" in str(info.value)
    assert check_labels("auto", tmp_path, classes=("cat", "dog", "dgo")) == "class-folders"
    assert check_labels("auto", tmp_path, classes=("ant", "bee")) == "plain"


def test_csv_labels_that_are_not_classes_are_an_error(tmp_path):
    _img(tmp_path / "a.png")
    _img(tmp_path / "b.png")
    (tmp_path / "labels.csv").write_text("path,label\na.png,tabby\nb.png,tabbby\n")
    with pytest.raises(DataError) as info:
        check_labels("auto", tmp_path)
    msg = str(info.value)
    assert msg.startswith(f"Expected every label name in {tmp_path / 'labels.csv'} to be a "
                          "class of the model")
    assert "got 1 label that is not:\n  'tabbby' (close: 'tabby'" in msg
    assert '--set dataset.layout="plain"' in msg
    (tmp_path / "labels.csv").write_text("path,label\na.png,tabby\n")
    assert check_labels("auto", tmp_path) == "flat-csv"
    assert build_manifest("auto", tmp_path).describe() == "flat-csv (1 of 2 images labelled)"


def test_many_unknown_folders_are_listed_up_to_a_limit(tmp_path):
    _tree(tmp_path, ("tabby", *(f"x{i:02d}" for i in range(12))))
    with pytest.raises(DataError) as info:
        check_labels("auto", tmp_path)
    msg = str(info.value)
    assert "got 12 folders that are not:" in msg
    assert "'x09'" in msg and "'x10'" not in msg and "... and 2 more" in msg
