"""Image decoding, resizing, cropping and normalisation.

Tensors follow PyTorch's layout: an image is ``(3, H, W)`` float in ``[0, 1]`` before
normalization; a batch is ``(N, 3, H, W)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision import transforms

# Image discovery is torch-free (a no-op rerun plans without importing torch); kept
# importable from here.
from pipeline.data.discovery import IMAGE_EXTENSIONS, discover_images, is_image_file  # noqa: F401

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
RESIZE: int = 256
CROP: int = 224


class ImageDecodeError(Exception):
    """An image file could not be turned into an RGB picture; the message is the reason."""


def preprocess_transform(resize: int = RESIZE, crop: int = CROP,
                         interpolation: str = "bilinear", resize_mode: str = "short-side"
                         ) -> transforms.Compose:
    """The preprocessing: resize the short side (with ``interpolation``: bilinear,
    bicubic or nearest, as the model's weights were trained), centre-crop, to a tensor in
    ``[0, 1]``. ``resize_mode = "squash"`` resizes the whole image to ``resize x resize``
    instead, its aspect ratio not kept, as Hugging Face's ViT processors do.

    Returns
    -------
    transforms.Compose
        Maps a PIL RGB image to a float tensor of shape ``(3, crop, crop)``.
    """
    mode = transforms.InterpolationMode(interpolation)
    size: int | tuple[int, int] = (resize, resize) if resize_mode == "squash" else resize
    return transforms.Compose(
        [transforms.Resize(size, interpolation=mode), transforms.CenterCrop(crop),
         transforms.ToTensor()]
    )


@dataclass(frozen=True)
class Normalization:
    """A model's input normalization ``(x - mean) / std`` per channel, ``x`` in [0, 1]."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (3, 1, 1) if like.ndim == 3 else (1, 3, 1, 1)
        mean = torch.tensor(self.mean, dtype=like.dtype, device=like.device).view(shape)
        std = torch.tensor(self.std, dtype=like.dtype, device=like.device).view(shape)
        return mean, std


#: The ImageNet normalization: ResNet18's, and the default everywhere.
IMAGENET_NORMALIZATION = Normalization()


def normalize(image: torch.Tensor, norm: Normalization | None = None) -> torch.Tensor:
    """``(x - mean) / std`` of a ``(3, H, W)`` or ``(N, 3, H, W)`` tensor (ImageNet's mean
    and std unless ``norm`` says otherwise)."""
    mean, std = (norm or IMAGENET_NORMALIZATION).stats(image)
    return (image - mean) / std


def denormalize(image: torch.Tensor, norm: Normalization | None = None) -> torch.Tensor:
    """Inverse of :func:`normalize`: ``x * std + mean``, same shapes."""
    mean, std = (norm or IMAGENET_NORMALIZATION).stats(image)
    return image * std + mean


def black_baseline(like: torch.Tensor, norm: Normalization | None = None) -> torch.Tensor:
    """The black image in normalized space, ``-mean / std`` per channel, shaped like ``like``."""
    return normalize(torch.zeros_like(like), norm)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode (L, LA, P, RGBA, CMYK, I;16, F, ...) to RGB.

    Transparent pixels are composited onto white, as a viewer would show them; 16- and 32-bit
    greyscale is rescaled from its real range to 8 bits instead of being clipped.
    """
    if image.mode == "RGB":
        return image
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "RGBa"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        hi = float(arr.max()) if arr.size else 0.0
        scale = 255.0 / hi if hi > 255.0 else 1.0
        arr8 = np.clip(arr * scale, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    return image.convert("RGB")


def load_image(path: str | Path, max_pixels: int | None = None) -> Image.Image:
    """Open an image file as upright RGB.

    Applies the EXIF orientation, takes the first frame of animated or multi-page files and
    converts any mode to RGB.

    Parameters
    ----------
    path
        The image file.
    max_pixels
        Refuse images with more pixels than this (decompression-bomb guard); ``None`` keeps
        PIL's own limit.

    Raises
    ------
    ImageDecodeError
        With a one-line reason when the file is not a usable image.
    """
    path = Path(path)
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    try:
        with Image.open(path) as raw:
            width, height = raw.size
            if limit is not None and width * height > limit:
                raise ImageDecodeError(
                    f"image is {width}x{height} = {width * height} pixels, over the limit of "
                    f"{limit} (decompression-bomb guard)"
                )
            raw.seek(0)
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                raw.load()
                upright = ImageOps.exif_transpose(raw)
            return to_rgb(upright if upright is not None else raw)
    except ImageDecodeError:
        raise
    except FileNotFoundError as exc:
        raise ImageDecodeError(f"file not found: {exc.filename}") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"decompression-bomb guard: {exc}") from exc
    except Image.UnidentifiedImageError as exc:
        size = path.stat().st_size if path.exists() else 0
        what = "empty file (0 bytes)" if size == 0 else "not a recognised image format"
        raise ImageDecodeError(f"cannot decode: {what}") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageDecodeError(f"cannot decode: {exc}") from exc


def load_tensor(path: str | Path, resize: int = RESIZE, crop: int = CROP,
                interpolation: str = "bilinear", resize_mode: str = "short-side"
                ) -> torch.Tensor:
    """Load and preprocess one file to a ``(3, crop, crop)`` float tensor in ``[0, 1]``
    (:func:`preprocess_transform`)."""
    return preprocess_transform(resize, crop, interpolation, resize_mode)(load_image(path))


def to_uint8_hwc(image: torch.Tensor) -> np.ndarray:
    """A ``(3, H, W)`` tensor in ``[0, 1]`` as a ``(H, W, 3)`` uint8 array (rounded)."""
    arr = image.detach().to("cpu", torch.float32).clamp(0, 1).permute(1, 2, 0).numpy()
    return np.rint(arr * 255.0).astype(np.uint8)


def from_uint8_hwc(pixels: np.ndarray) -> torch.Tensor:
    """Inverse of :func:`to_uint8_hwc`: ``(..., H, W, 3)`` uint8 to ``(..., 3, H, W)`` float."""
    t = torch.from_numpy(np.ascontiguousarray(pixels)).to(torch.float32) / 255.0
    return t.movedim(-1, -3)


def stack(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack ``(3, H, W)`` tensors into a ``(N, 3, H, W)`` batch."""
    return torch.stack(list(images), dim=0)
