"""The strategies page: each cluster's members shown as pairs, the photo beside its own map,
and its counts in words."""

from __future__ import annotations

import re

import numpy as np

from pipeline.evaluation.spray import Cluster
from pipeline.report.sprites import Sprites, sprite_path, tile_place
from pipeline.report.strategies_page import StrategySettings, strategies_page

SETTINGS = StrategySettings(min_images=3, downsample=28, neighbors=2, max_clusters=2,
                            members=3)


def _page() -> str:
    clusters = {"gradient": [Cluster(0, 0, [5, 2, 7, 1], np.zeros(4)),
                             Cluster(0, 1, [3], np.zeros(4))]}
    return strategies_page("t", clusters, {}, ["gradient"], ["cat"], Sprites(4, 8, 16), [],
                           SETTINGS, "viridis")


def test_each_member_is_its_photo_beside_its_map() -> None:
    page = _page()
    pairs = re.findall(r"<div class=pair>(.*?)</div>", page)
    assert len(pairs) == 3 + 1  # three members shown of the first cluster, one of the second
    sprites = Sprites(4, 8, 16)
    for pair, index in zip(pairs, [5, 2, 7, 3], strict=True):
        at = tile_place(index, 4, 8, sprites.tiles)
        photo, map_ = re.findall(r'<img [^>]*src="([^"]+)"[^>]*alt="([^"]+)"', pair)
        assert photo == (sprite_path("c", at.shard, at.part), f"image {index + 1}")
        assert map_ == (sprite_path("m0", at.shard, at.part), f"image {index + 1}, map")
        assert f'<span class=maps><img loading=lazy class="sp t{at.count}-{at.pos}"' in pair
    assert 'class="members maps"' not in page, "no row of maps apart from their photos"


def test_counts_are_in_words() -> None:
    page = _page()
    assert "(5 images, 2 clusters)" in page
    assert "<b>cluster 0</b>: 4 images" in page
    assert "<b>cluster 1</b>: 1 image<br>" in page
