"""The report's sprites: a shard's tiles (crops, grey-level maps, mask outlines) stacked top to
bottom in one file, so the report's files grow with the shards, not the images.

A sprite is ``img/<kind>/<shard>-<part>.jpg`` (crops) or ``.png`` (:func:`sprite_path`; a part
per :data:`SPRITE_PX` pixels). A page shows a tile as its sprite in a tile-sized ``<img>`` with
``object-fit: cover`` and the tile's ``object-position`` (:meth:`Sprites.img`, placed by a
class of :meth:`Sprites.css`: the pages' policy allows no inline styles). Paths hold numbers
only, never an image's name. The tiles' picture files are made in
:mod:`pipeline.report.tile_files`.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.report.templating import macro

#: A sprite, one image file of a shard's tiles stacked top to bottom, is at most this many
#: pixels tall (JPEG's limit is 65,535; browsers decode what they show, so keep it small).
SPRITE_PX = 8192
#: The tile kinds: ``c`` crops (JPEG), ``o`` mask outlines (RGBA PNG), ``m<j>`` the grey-level
#: maps of the method in slot ``j`` (PNG).
CROP, OUTLINE = "c", "o"
#: The placing classes of the static pages' tiles (:meth:`Sprites.css`).
SPRITES_CSS = "data/sprites.css"


def map_kind(method_slot: int) -> str:
    """The tile kind of the maps of the method in slot ``method_slot``."""
    return f"m{method_slot}"


def sprite_tiles(tile_px: int, shard_size: int) -> int:
    """Tiles per sprite for tiles ``tile_px`` pixels tall in shards of ``shard_size``."""
    return max(1, min(shard_size, SPRITE_PX // max(1, tile_px)))


def sprite_path(kind: str, shard: int, part: int) -> str:
    """Sprite ``part`` of shard ``shard``'s tiles of ``kind``, relative to the report folder:
    ``img/<kind>/<shard>-<part>.jpg`` (crops) or ``.png``. Numbers only, never a name."""
    ext = "jpg" if kind == CROP else "png"
    return f"img/{kind}/{shard:06d}-{part}.{ext}"


@dataclass(frozen=True)
class TilePlace:
    """Where image ``index``'s tile lies: in sprite ``part`` of ``shard``, ``pos`` tiles
    from its top, of ``count`` tiles."""

    shard: int
    part: int
    pos: int
    count: int


def tile_place(index: int, shard_size: int, images: int, tiles: int) -> TilePlace:
    """The sprite place of image ``index`` of ``images``, ``tiles`` a sprite."""
    shard, k = divmod(index, shard_size)
    part, pos = divmod(k, tiles)
    in_shard = min(shard_size, images - shard * shard_size)
    return TilePlace(shard, part, pos, min(tiles, in_shard - part * tiles))


def sprite_position(pos: int, count: int) -> str:
    """The CSS ``object-position`` height of tile ``pos`` of a sprite of ``count`` tiles,
    shown with ``object-fit: cover`` in a tile-sized box."""
    return f"{100 * pos / (count - 1):.6g}%" if count > 1 else "0%"


@dataclass(frozen=True)
class Sprites:
    """The report's sprite grid: ``images`` in shards of ``shard_size``, tiles ``px``
    pixels square, :func:`sprite_tiles` of them a sprite."""

    shard_size: int
    images: int
    px: int

    @property
    def tiles(self) -> int:
        """Tiles per sprite (:func:`sprite_tiles`)."""
        return sprite_tiles(self.px, self.shard_size)

    def place(self, index: int) -> TilePlace:
        """Image ``index``'s place in its sprite (:func:`tile_place`)."""
        return tile_place(index, self.shard_size, self.images, self.tiles)

    def src(self, kind: str, index: int) -> str:
        """The sprite that holds image ``index``'s tile of ``kind`` (:func:`sprite_path`)."""
        at = self.place(index)
        return sprite_path(kind, at.shard, at.part)

    def img(self, kind: str, index: int, alt: str) -> str:
        """Image ``index``'s tile of ``kind`` for static HTML: its sprite, lazily loaded, in
        a tile-sized ``<img>`` that ``object-fit: cover`` scales to the tile's width, placed
        by a class of :meth:`css` (the template ``parts.html``'s ``sprite_img``)."""
        return str(macro("parts.html", "sprite_img")(self, kind, index, alt))

    def css(self) -> str:
        """The placing classes :meth:`img` uses: ``t<count>-<pos>`` for every sprite size
        of the grid (a full shard's parts and the last shard's)."""
        shards = -(-self.images // self.shard_size)
        last = self.images - (shards - 1) * self.shard_size if shards else 0
        counts = sorted({min(self.tiles, size - p * self.tiles)
                         for size in {self.shard_size, last} if size > 0
                         for p in range(-(-size // self.tiles))})
        return "".join(f"img.sp.t{n}-{k}{{object-position:0 {sprite_position(k, n)}}}\n"
                       for n in counts for k in range(n))
