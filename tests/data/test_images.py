from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.data.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageDecodeError,
    black_baseline,
    denormalize,
    discover_images,
    from_uint8_hwc,
    load_image,
    load_tensor,
    normalize,
    to_uint8_hwc,
)


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def test_preprocess_resizes_and_centre_crops(tmp_path):
    path = _save(Image.new("RGB", (451, 300), (10, 200, 30)), tmp_path / "a.png")
    t = load_tensor(path)
    assert t.shape == (3, 224, 224)
    assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    assert torch.allclose(t[:, 0, 0], torch.tensor([10, 200, 30]) / 255.0, atol=1e-6)


def test_normalize_roundtrip_and_black_baseline():
    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(denormalize(normalize(x)), x, atol=1e-6)
    base = black_baseline(x[0])
    expected = -torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(base[:, 0, 0], expected)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F", "1"])
def test_any_mode_becomes_rgb(tmp_path, mode):
    img = Image.new(mode, (20, 10))
    fmt = {"CMYK": "JPEG", "F": "TIFF", "I": "TIFF"}.get(mode, "PNG")
    path = _save(img, tmp_path / f"x.{fmt.lower()}", format=fmt)
    out = load_image(path)
    assert out.mode == "RGB"
    assert out.size == (20, 10)


def test_sixteen_bit_grey_keeps_contrast(tmp_path):
    arr = np.linspace(0, 65535, 64 * 8, dtype=np.uint16).reshape(8, 64)
    path = _save(Image.fromarray(arr), tmp_path / "g16.png")
    out = np.asarray(load_image(path))
    assert out[..., 0].min() == 0 and out[..., 0].max() == 255


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = _save(img, tmp_path / "r.jpg", exif=exif)
    assert load_image(path).size == (20, 40)


@pytest.mark.parametrize("content,reason", [(b"", "empty file"), (b"hello", "not a recognised")])
def test_undecodable_files_raise_with_reason(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError, match=reason):
        load_image(path)


def test_truncated_jpeg_raises(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, format="JPEG")
    path = tmp_path / "t.jpg"
    path.write_bytes(buf.getvalue()[:200])
    with pytest.raises(ImageDecodeError):
        load_image(path)


def test_decompression_bomb_is_refused(tmp_path):
    path = _save(Image.new("L", (100, 100)), tmp_path / "big.png")
    with pytest.raises(ImageDecodeError, match="decompression-bomb"):
        load_image(path, max_pixels=5000)


def test_uint8_roundtrip():
    x = torch.rand(3, 5, 7, generator=torch.Generator().manual_seed(0))
    pixels = to_uint8_hwc(x)
    assert pixels.shape == (5, 7, 3) and pixels.dtype == np.uint8
    assert torch.allclose(from_uint8_hwc(pixels), x, atol=0.5 / 255 + 1e-6)


def test_discovery_is_sorted_and_skips_hidden(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / ".hidden").mkdir()
    for rel in ("b/z.png", "a.JPG", ".DS_Store", ".hidden/x.png", "notes.txt"):
        (tmp_path / rel).write_bytes(b"x")
    assert discover_images(tmp_path) == ["a.JPG", "b/z.png"]
