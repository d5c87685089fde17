"""The summary page's run table: the layout row says how many images are labelled."""

from __future__ import annotations

from pipeline.report.run_facts import run_facts


def _layout_row(images=3, **kwargs):
    rows = dict(run_facts(dataset="d", layout="class-folders", methods=["gradient"],
                          config_file="", attrs={}, images=images, ok=images, skipped=0,
                          **kwargs))
    return rows["layout"]


def test_the_layout_row_has_the_labelled_count_when_it_is_known():
    assert _layout_row(labelled=2) == "class-folders (2 of 3 images labelled)"
    assert _layout_row() == "class-folders"  # a run whose summary predates the count


def test_one_image_is_counted_in_the_singular():
    assert _layout_row(images=1, labelled=1) == "class-folders (1 of 1 image labelled)"
