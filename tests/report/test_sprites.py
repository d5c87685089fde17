"""The sprite grid: every tile one place, placed by a class."""

from __future__ import annotations

import pytest

from pipeline.report.sprites import (
    SPRITE_PX,
    Sprites,
    map_kind,
    sprite_position,
    sprite_tiles,
    tile_place,
)


@pytest.mark.parametrize("images,shard,px", [(100, 32, 224), (70, 32, 32), (5, 2, 32),
                                             (1000, 300, 224)])
def test_every_image_has_one_tile_place_and_a_sprite_holds_whole_tiles(images, shard, px):
    tiles = sprite_tiles(px, shard)
    assert tiles * px <= SPRITE_PX and 1 <= tiles <= shard
    seen = {}
    for i in range(images):
        at = tile_place(i, shard, images, tiles)
        assert 0 <= at.pos < at.count <= tiles
        seen.setdefault((at.shard, at.part), []).append(at.pos)
        assert at.shard * shard + at.part * tiles + at.pos == i
    for (sh, part), positions in seen.items():  # a sprite's tiles: 0..count-1, each once
        count = tile_place(sh * shard + part * tiles, shard, images, tiles).count
        assert positions == list(range(count))


def test_a_static_page_places_a_tile_by_a_class_its_stylesheet_defines() -> None:
    sprites = Sprites(shard_size=4, images=10, px=32)
    img = sprites.img(map_kind(1), 9, "image <10>")  # shard 2 holds images 8 and 9
    assert 'class="sp t2-1"' in img and 'src="img/m1/000002-0.png"' in img
    assert "image &lt;10&gt;" in img and "loading=lazy" in img and "style=" not in img
    css = sprites.css()  # full shards: sprites of 4 tiles; the last shard's: 2
    assert "img.sp.t2-1{object-position:0 100%}" in css
    assert "img.sp.t4-0{object-position:0 0%}" in css
    assert "img.sp.t4-2{object-position:0 66.6667%}" in css
    assert css.count("{") == 4 + 2
    assert sprite_position(0, 1) == "0%"
