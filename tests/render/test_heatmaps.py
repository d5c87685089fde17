"""The Pillow contact sheet: lookup-table colormaps, display scaling, layout, fonts."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from PIL import Image

from pipeline.render import heatmaps as render
from pipeline.render.heatmaps import (
    SheetRow,
    SheetStyle,
    colormap_lut,
    contact_sheet,
    display_values,
    heatmap_tile,
    save_image_atomic,
)


def _row(k: int = 0, status: str = "ok", pred: str = "tabby", true: str | None = "tabby",
         size: int = 16, methods: int = 2) -> SheetRow:
    rng = np.random.default_rng(k)
    return SheetRow(f"a/img{k}.png", rng.integers(0, 255, (size, size, 3), dtype=np.uint8),
                    rng.random((methods, size, size)), status, pred, 0.5, true)


def test_lut_is_matplotlibs_colormap_at_256_levels():
    lut = colormap_lut("viridis")
    ref = matplotlib.colormaps["viridis"](np.linspace(0, 1, 256))[:, :3]
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    np.testing.assert_array_equal(lut, np.round(ref * 255).astype(np.uint8))


def test_display_clips_at_the_percentile_and_keeps_nan():
    amap = np.linspace(0, 1, 101, dtype=np.float32).reshape(1, 101)
    amap[0, 0] = np.nan
    shown = display_values(amap, SheetStyle(clip_percentile=90))
    p90 = np.percentile(amap[0, 1:], 90)
    assert np.isnan(shown[0, 0])
    np.testing.assert_allclose(shown[0, 1:], np.clip(amap[0, 1:] / p90, 0, 1), rtol=1e-6)
    assert (shown[0, 1:] == 1).sum() == (amap[0, 1:] >= p90).sum()
    np.testing.assert_allclose(display_values(amap, SheetStyle(clip_percentile=100)), amap)
    assert (display_values(np.zeros((4, 4)), SheetStyle()) == 0).all()


def test_signed_display_puts_zero_at_the_centre():
    amap = np.array([[-2.0, -1.0, 0.0, 1.0, 2.0]])
    shown = display_values(amap, SheetStyle(signed=True, clip_percentile=100))
    np.testing.assert_allclose(shown, [[0.0, 0.25, 0.5, 0.75, 1.0]])


def test_tile_is_a_lookup_and_overlay_keeps_the_photo_where_nothing_is_relevant():
    rng = np.random.default_rng(1)
    amap = rng.random((8, 8)).astype(np.float32)
    style = SheetStyle(clip_percentile=100)
    expected = colormap_lut("inferno")[np.floor(display_values(amap, style) * 255 + 0.5)
                                       .astype(np.uint8)]
    np.testing.assert_array_equal(heatmap_tile(amap, style), expected)
    photo = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    over = heatmap_tile(np.zeros((8, 8)), SheetStyle(overlay=True), photo)
    np.testing.assert_array_equal(over, photo)
    missing = heatmap_tile(np.full((8, 8), np.nan), style)
    assert (missing == 230).all()


def test_sheet_places_every_tile_and_lists_skipped_images_in_a_footer(tmp_path):
    style = SheetStyle()
    rows = [_row(0), _row(1, pred="junco"), _row(2, true=None),
            _row(3, status="cannot decode: empty")]
    sheet = contact_sheet(rows, ["gradient", "integrated_gradients"], style=style,
                          banner="RANDOM WEIGHTS", title="images 1-4")
    assert sheet.mode == "RGB"
    pixels = np.asarray(sheet)
    boxes = sheet.info["tiles"]
    assert sorted(boxes) == [(r, c) for r in range(3) for c in range(3)]  # 3 shown rows
    for r, row in enumerate(rows[:3]):
        x, y = boxes[(r, 0)]
        np.testing.assert_array_equal(pixels[y:y + 16, x:x + 16], row.pixels)
        for c in range(2):
            x, y = boxes[(r, c + 1)]
            np.testing.assert_array_equal(pixels[y:y + 16, x:x + 16],
                                          heatmap_tile(row.maps[c], style, row.pixels))
    # the banner is red, the wrong label's caption is red, the right one green
    red = np.array([0xCF, 0x22, 0x2E])
    green = np.array([0x1A, 0x7F, 0x37])
    top_band = pixels[: boxes[(0, 0)][1]]
    assert (np.abs(top_band.astype(int) - red).sum(-1) < 40).any()
    assert (np.abs(pixels.astype(int) - green).sum(-1) < 40).any()
    # a skipped image takes no row: the sheet is shorter than with it shown
    shown = contact_sheet([*rows[:3], _row(3)], ["gradient", "integrated_gradients"],
                          style=style, banner="RANDOM WEIGHTS", title="images 1-4")
    assert sheet.size[1] < shown.size[1]
    path = tmp_path / "s" / "sheet.png"
    save_image_atomic(sheet, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["sheet.png"]
    assert Image.open(path).mode == "RGB"


def test_an_unloadable_font_falls_back_with_a_warning(monkeypatch):
    from PIL import ImageFont

    real = ImageFont.truetype

    def broken(font: object, *a: object, **k: object) -> object:
        if isinstance(font, str) and font.endswith(".ttf"):
            raise OSError("cannot open resource")
        return real(font, *a, **k)

    render._font.cache_clear()
    monkeypatch.setattr(ImageFont, "truetype", broken)
    try:
        with pytest.warns(UserWarning, match="Pillow's default font"):
            sheet = contact_sheet([_row(0)], ["gradient", "ig"], style=SheetStyle(font_size=11))
        assert sheet.size[0] > 0
    finally:
        render._font.cache_clear()


def test_odd_ids_and_long_method_names_fit_the_sheet():
    """Long ids and class names are shortened, never widen the sheet; a long method name
    takes a second header line."""
    from PIL import ImageDraw

    odd = "päth/<img src=x onerror=alert(1)>.png" * 3
    base = _row(0)
    long = SheetRow(odd, base.pixels, base.maps, "ok", "a very long class name " * 4, 0.9, None)
    short = SheetRow("a.png", base.pixels, base.maps, "ok", "cat", 0.9, None)
    methods = ["custom_integrated_gradients", "x"]
    wide, plain = contact_sheet([long], methods), contact_sheet([short], methods)
    assert wide.size == plain.size, "text never changes the layout"
    big = _row(0, size=112)
    two = contact_sheet([big], ["custom_integrated_gradients", "x"])
    one_line = contact_sheet([big], ["ab", "x"])
    lines = two.info["headers"]["custom_integrated_gradients"]
    assert len(lines) > 1
    assert two.size[1] == one_line.size[1] + (len(lines) - 1) * round(SheetStyle().font_size * 1.3)
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    room = wide.size[0] - 2 * max(8, 16 // 16)
    fitted = render._fit(draw, odd, render.load_font(14), room)
    assert "…" in fitted and render._text_width(draw, fitted, render.load_font(14)) <= room
    _x, y = wide.info["tiles"][(0, 0)]
    caption = np.asarray(wide)[y - 3 * round(14 * 1.3):y]
    assert (caption != 255).any(), "the shortened caption is drawn"


def test_render_benchmark_measures_both_renderers_on_the_same_rows():
    from benchmarks.bench_render import measure

    m = measure(images=1, repeats=1)
    assert m["before_s"] > 0 and m["after_s"] > 0
    assert m["speedup"] == pytest.approx(m["before_s"] / m["after_s"])
    assert m["after_mb"] > 0.01 and m["before_mb"] > 0.01


def test_encode_png_round_trips_through_pillow():
    import io

    from pipeline.render.heatmaps import encode_png

    rgb = np.random.default_rng(3).integers(0, 255, (17, 23, 3), dtype=np.uint8)
    decoded = Image.open(io.BytesIO(encode_png(rgb)))
    decoded.load()
    assert decoded.mode == "RGB" and decoded.size == (23, 17)
    np.testing.assert_array_equal(np.asarray(decoded), rgb)


# --------------------------------------------------------------------------- sheet layout

LONG_METHODS = ["gradient", "integrated_gradients", "smoothgrad", "custom_gradient",
                "custom_integrated_gradients"]


def _probe():
    from PIL import ImageDraw

    return ImageDraw.Draw(Image.new("RGB", (1, 1)))


def test_wrap_text_keeps_every_character_and_fits_the_width():
    font = render.load_font(16, bold=True)
    for text, width in (("custom_integrated_gradients", 90), ("a_b", 500),
                        ("supercalifragilistic_x", 30), ("", 50)):
        lines = render.wrap_text(_probe(), text, font, width)
        assert "".join(lines) == text
        assert all(render._text_width(_probe(), ln.rstrip(), font) <= width for ln in lines)


def test_headers_wrap_whole_at_underscores_and_are_never_cut():
    """At the evidence run's 112-px tiles every default method's header is the name itself,
    on one to three lines broken after an underscore (no ellipsis)."""
    rows = [_row(0, size=112, methods=len(LONG_METHODS))]
    sheet = contact_sheet(rows, LONG_METHODS)
    bold = render.load_font(round(SheetStyle().font_size * 1.15), bold=True)
    assert sheet.info["legend"] == []
    for name in LONG_METHODS:
        lines = sheet.info["headers"][name]
        assert "".join(lines) == name, lines
        assert 1 <= len(lines) <= render.MAX_HEADER_LINES
        assert all("…" not in ln for ln in lines)
        assert all(render._text_width(_probe(), ln, bold) <= 112 for ln in lines)
    assert sheet.info["headers"]["custom_integrated_gradients"] == [
        "custom_", "integrated_", "gradients"]


def test_a_header_too_long_for_a_tiny_tile_is_numbered_and_named_in_the_legend():
    sheet = contact_sheet([_row(0, size=24, methods=2)], ["ig", "custom_integrated_gradients"])
    assert sheet.info["headers"]["ig"] == ["ig"]
    assert sheet.info["headers"]["custom_integrated_gradients"] == ["[2]"]
    assert "".join(sheet.info["legend"]) == "[2] custom_integrated_gradients"
    width = sheet.size[0] - 2 * 8
    small = render.load_font(SheetStyle().font_size)
    assert all(render._text_width(_probe(), ln, small) <= width for ln in sheet.info["legend"])


def _ink_rows(pixels: np.ndarray, y0: int, y1: int) -> np.ndarray:
    """Rows in ``[y0, y1)`` holding text: neither background nor the rule between rows."""
    band = pixels[y0:y1].astype(int)
    plain = (band == render.BACKGROUND).all(-1) | (band == render.RULE).all(-1)
    return y0 + np.flatnonzero(~plain.all(axis=1))


def test_each_caption_is_nearer_its_own_row_than_the_row_above():
    rows = [_row(k, size=112, methods=2) for k in range(3)]
    sheet = contact_sheet(rows, ["gradient", "integrated_gradients"])
    pixels, boxes = np.asarray(sheet), sheet.info["tiles"]
    for r in (1, 2):
        above = boxes[(r - 1, 0)][1] + 112   # the previous row's tiles end here
        own = boxes[(r, 0)][1]               # this row's tiles start here
        ink = _ink_rows(pixels, above, own)
        assert ink.size, "the caption is drawn between the rows"
        to_own, to_above = own - (ink.max() + 1), ink.min() - above
        assert to_own < to_above, (to_own, to_above)
        assert to_above >= 2 * to_own
        rule = [y for y in range(above, ink.min())
                if (pixels[y, 20:-20] == render.RULE).all()]
        assert rule, "a thin rule separates the rows"


def test_the_colour_bar_says_each_map_has_its_own_clipped_scale():
    text = render.colour_bar_label(SheetStyle())
    assert "fraction of each map's own clipped maximum" in text
    assert "99th percentile" in text and "one scale for every map" not in text
    assert "its maximum" in render.colour_bar_label(SheetStyle(clip_percentile=100))
    signed = render.colour_bar_label(SheetStyle(signed=True, clip_percentile=95))
    assert "zero at the centre" in signed and "95th percentile" in signed
    assert "blended on the image" in render.colour_bar_label(SheetStyle(overlay=True))
    sheet = contact_sheet([_row(0, size=16)], ["a", "b"])  # a narrow sheet wraps the label
    lines = sheet.info["colour_bar"]
    assert len(lines) > 1 and "".join(lines) == text


def test_explain_figure_is_the_sheets_row_with_its_clipping(tmp_path):
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    raw = rng.normal(size=(2, 3, 32, 32)).astype(np.float32)
    raw[1, :, 0, 0] = 1e4  # one outlier: without clipping the rest of the map would be black
    path = tmp_path / "out" / "explain.png"
    fig = render.explain_figure(pixels, raw, ["gradient", "integrated_gradients"],
                                image_id="junco.jpg", pred_name="junco", prob=0.9,
                                path=path)
    from pipeline.attribution.postprocess import normalize_block

    shown = normalize_block(raw.sum(axis=1)[:, None])[:, 0]
    row = SheetRow("junco.jpg", pixels, shown, "ok", "junco", 0.9, None)
    np.testing.assert_array_equal(np.asarray(fig), np.asarray(contact_sheet(
        [row], ["gradient", "integrated_gradients"])))
    x, y = fig.info["tiles"][(0, 2)]
    tile = np.asarray(fig)[y:y + 32, x:x + 32]
    np.testing.assert_array_equal(tile, heatmap_tile(shown[1], SheetStyle()))
    assert (tile.sum(-1) > 100).mean() > 0.3, "clipped at p99: the map is not black"
    assert Image.open(path).size == fig.size
    chw = pixels.transpose(2, 0, 1) / 255.0  # a (3, H, W) float image is the same picture
    same = render.explain_figure(chw, raw.sum(axis=1), ["gradient", "integrated_gradients"],
                                 image_id="junco.jpg", pred_name="junco", prob=0.9)
    np.testing.assert_array_equal(np.asarray(same), np.asarray(fig))


def test_explain_figure_says_what_shape_it_expected():
    pixels = np.zeros((8, 8, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"Expected maps of shape \(2, H, W\)"):
        render.explain_figure(pixels, np.zeros((3, 8, 8)), ["a", "b"], image_id="x",
                              pred_name="p", prob=0.5)
    with pytest.raises(ValueError, match="Expected maps of the image's size"):
        render.explain_figure(pixels, np.zeros((2, 4, 4)), ["a", "b"], image_id="x",
                              pred_name="p", prob=0.5)
    with pytest.raises(ValueError, match=r"Expected an image of shape \(H, W, 3\)"):
        render.explain_figure(np.zeros((8, 8)), np.zeros((2, 8, 8)), ["a", "b"],
                              image_id="x", pred_name="p", prob=0.5)
