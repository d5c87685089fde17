from __future__ import annotations

import numpy as np

from pipeline.render import RIGHT, WRONG, SheetRow, contact_sheet, save_figure_atomic


def _row(status="ok", pred="tabby", true="tabby"):
    rng = np.random.default_rng(0)
    return SheetRow("a/b.png", rng.integers(0, 255, (8, 8, 3), dtype=np.uint8),
                    rng.random((2, 8, 8)), status, pred, 0.5, true)


def test_sheet_layout_headers_and_captions(tmp_path):
    rows = [_row(), _row(pred="junco"), _row(true=None), _row(status="cannot decode: empty")]
    fig = contact_sheet(rows, ["gradient", "ig"], banner="RANDOM WEIGHTS")
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(axes) == 4 * 3
    assert axes[1].get_title() == "gradient" and axes[2].get_title() == "ig"
    captions = [axes[r * 3].get_title(loc="left") for r in range(4)]
    assert "pred: tabby (0.50)" in captions[0] and "true: tabby" in captions[0]
    assert axes[0].title.get_color() == RIGHT or axes[0]._left_title.get_color() == RIGHT
    assert axes[3]._left_title.get_color() == WRONG
    assert "true" not in captions[2]
    assert "skipped: cannot decode" in captions[3]
    assert not axes[9].get_images()  # the skipped row draws no image
    assert fig._suptitle is not None and "RANDOM WEIGHTS" in fig._suptitle.get_text()
    path = tmp_path / "s" / "sheet.png"
    save_figure_atomic(fig, path, dpi=30)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["sheet.png"]
