"""Generate every kind of awkward image file a 50,000-image folder contains."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width x height`` pixels (no real pixel data needed to open it)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def make_hostile(root: Path) -> dict[str, str]:
    """Write the hostile set under ``root``; return ``{dataset-relative id: expected
    outcome}``, the outcome ``"ok"`` or a substring of the recorded reason."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    expected: dict[str, str] = {}

    def rgb(h: int = 48, w: int = 48) -> Image.Image:
        return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))

    def put(rel: str, outcome: str, img: Image.Image | None = None, data: bytes | None = None,
            **save: object) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is not None:
            path.write_bytes(data)
        else:
            assert img is not None
            img.save(path, **save)
        expected[rel] = outcome

    put("zero_bytes.jpg", "empty file", data=b"")
    buf = io.BytesIO()
    rgb(64, 64).save(buf, format="JPEG")
    put("truncated.jpg", "cannot decode", data=buf.getvalue()[: len(buf.getvalue()) // 2])
    put("text.png", "not a recognised image format", data=b"just some text, honestly\n")
    put("gray16.png", "ok", Image.fromarray(
        (np.arange(48 * 48).reshape(48, 48) * 20).astype(np.uint16)))
    pal = Image.new("P", (48, 48))
    pal.putpalette(list(rng.integers(0, 256, 768)))
    pal.info["transparency"] = 0
    put("palette_transparent.png", "ok", pal, transparency=0)
    put("la.png", "ok", Image.new("LA", (48, 48), (128, 200)))
    put("rgba.png", "ok", Image.new("RGBA", (48, 48), (10, 20, 30, 100)))
    put("cmyk.jpg", "ok", Image.new("CMYK", (48, 48), (0, 255, 255, 0)))
    rotated = Image.new("RGB", (80, 40), (0, 0, 255))
    rotated.paste((255, 0, 0), (0, 0, 80, 20))  # top half red
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: red ends up on the right
    put("exif_rotated.jpg", "ok", rotated, exif=exif, quality=95)
    put("one_pixel.png", "ok", Image.new("RGB", (1, 1), (200, 10, 10)))
    put("bomb.png", "decompression-bomb", data=_png_header_only(20000, 20000))
    frames = [Image.new("RGB", (48, 48), c) for c in ((0, 200, 0), (200, 0, 0))]
    put("animated.gif", "ok", frames[0], save_all=True, append_images=frames[1:], duration=50)
    put("image.webp", "ok", rgb(), format="WEBP")
    pages = [rgb(), rgb()]
    put("multipage.tif", "ok", pages[0], save_all=True, append_images=pages[1:])
    put("name with spaces é ü 日本.png", "ok", rgb())
    put("nested/deeper/still/deep.png", "ok", rgb())
    put("target.png", "ok", rgb())
    os.symlink("target.png", root / "link.png")
    expected["link.png"] = "ok"
    os.symlink("does_not_exist.png", root / "broken_link.png")
    expected["broken_link.png"] = "file not found"
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / ".hidden").mkdir()
    rgb().save(root / ".hidden" / "ignored.png")
    (root / "notes.txt").write_text("not an image, ignored by extension")
    return expected
