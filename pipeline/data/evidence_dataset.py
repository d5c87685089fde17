"""The ``evidence`` dataset: generated images whose class-defining evidence sits at known pixels.

Each image is a crop of a natural photo (flipped, scaled, colour-jittered) with one filled
object whose shape and colour are the class (class k: ``SHAPES[k]`` in ``PALETTE[k]``), and one
or two distractors: outlines of any shape in any of the same colours, drawn independently of
the class, so they carry no class information.
The object's pixels are the ground-truth mask. Everything is a pure function of
``(seed, index)``: no files besides the background photos, and the same image on any machine.

A shortcut can be planted (:class:`Shortcut`): in a fraction of one class's images, train and
test alike, a small watermark in the bottom-right corner takes the place of the filled object
and so predicts the class on its own, as the source tags did for the horse class in the
"Clever Hans" analysis of Lapuschkin et al. 2019. (A watermark added next to the object was
measured to be ignored: the model had the object already.) Those images have an empty mask.
:func:`has_watermark` says which images carry it, so that an analysis (the report's
explanation strategies) can be scored against the truth.

Arrays follow the store: ``pixels`` ``(H, W, 3)`` uint8, ``mask`` ``(H, W)`` bool.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from pipeline.errors import DataError
from pipeline.file_io import file_sha256

#: The classes: the filled object's shape, each drawn in its own colour (``PALETTE[k]``).
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "plus", "star", "bar")
#: Class colours (RGB). Distractors take any shape and any of these colours.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (240, 50, 230),
    (70, 240, 240),
)
#: Bumped whenever the drawing changes: part of the trained model's cache key.
GENERATOR_VERSION = 2


@dataclass(frozen=True)
class EvidenceImage:
    """One generated image: ``pixels`` ``(H, W, 3)`` uint8, ``mask`` ``(H, W)`` bool (the
    object's pixels), ``label`` (index into :data:`SHAPES`)."""

    pixels: np.ndarray
    mask: np.ndarray
    label: int


#: Disjoint image streams of one seed: the model trains on ``train``, is checked on ``val``,
#: and a run explains ``test`` images it has never seen.
SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}


def _rng(seed: int, index: int, split: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, SPLITS[split], index, 0xE1D]))


@dataclass(frozen=True)
class Shortcut:
    """A planted shortcut: ``fraction`` of the images of class ``label`` show a watermark
    instead of the class's filled object.

    ``label = -1``: none (the default; the images are then those of generator version 2)."""

    label: int = -1
    fraction: float = 0.5

    @property
    def on(self) -> bool:
        return self.label >= 0


NO_SHORTCUT = Shortcut()


def has_watermark(index: int, seed: int, split: str, shortcut: Shortcut) -> bool:
    """Whether image ``index`` of ``split`` carries the watermark (a draw of its own, so that
    planting a shortcut leaves every other image as it was)."""
    if not shortcut.on or label_of(index, seed) != shortcut.label:
        return False
    rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS[split], index, 0x5C07]))
    return bool(rng.random() < shortcut.fraction)


def watermark_box(size: int) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` of the watermark: a square of about 1/8 of the side, 3/112 of the
    side from the bottom-right corner."""
    side, margin = max(6, round(size * 14 / 112)), max(2, round(size * 3 / 112))
    return size - margin - side, size - margin - side, size - margin, size - margin


def _draw_watermark(draw: object, size: int) -> None:
    """A white tile with a dark diagonal cross: high contrast, the same in every image."""
    x0, y0, x1, y1 = watermark_box(size)
    w = max(1, round(size / 56))
    draw.rectangle((x0, y0, x1, y1), fill=(250, 250, 250), outline=(10, 10, 10), width=w)  # type: ignore[attr-defined]
    draw.line((x0, y0, x1, y1), fill=(10, 10, 10), width=w)  # type: ignore[attr-defined]
    draw.line((x0, y1, x1, y0), fill=(10, 10, 10), width=w)  # type: ignore[attr-defined]


def label_of(index: int, seed: int = 0) -> int:
    """The class of image ``index``: balanced (index modulo the class count), so a manifest
    needs no drawing."""
    return index % len(SHAPES)


#: Background photo files (by extension; the folder may hold credits and label files too).
PHOTO_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})


def _photos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES
                  and p.is_file() and not p.name.startswith("."))


@cache
def _backgrounds(folder: str, size: int) -> tuple[np.ndarray, ...]:
    """The photos in ``folder``, shrunk once so that the short side is at most ``3 * size``
    (crops are at least 0.35 of it: never upscaled by more than about 1.2x)."""
    from PIL import Image

    from pipeline.data.images import to_rgb

    paths = _photos(Path(folder)) if Path(folder).is_dir() else []
    if not paths:
        raise DataError(f"Expected background photos in {folder} for the evidence dataset, "
                        "found none. Point [dataset] root at a folder of photos (the shipped "
                        "config uses data/sample).")
    out = []
    for p in paths:
        with Image.open(p) as img:
            rgb = to_rgb(img)
            rgb.thumbnail((3 * size * max(rgb.size) // min(rgb.size),) * 2,
                          Image.Resampling.LANCZOS)
            out.append(np.asarray(rgb))
    return tuple(out)


def _background(rng: np.random.Generator, photos: Sequence[np.ndarray], size: int
                ) -> np.ndarray:
    """A random crop of a random photo, scaled, maybe flipped, brightness/contrast jittered."""
    from PIL import Image

    photo = photos[int(rng.integers(len(photos)))]
    h, w = photo.shape[:2]
    side = int(rng.uniform(0.35, 1.0) * min(h, w))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = Image.fromarray(photo[y:y + side, x:x + side]).resize(
        (size, size), Image.Resampling.BILINEAR)
    arr = np.asarray(crop, dtype=np.float32)
    if rng.random() < 0.5:
        arr = arr[:, ::-1]
    mean = arr.mean()
    arr = (arr - mean) * rng.uniform(0.7, 1.2) + mean * rng.uniform(0.75, 1.25)
    return np.clip(arr, 0, 255)


def shape_polygon(kind: str, cx: float, cy: float, r: float, theta: float
                  ) -> list[tuple[float, float]]:
    """The outline of ``kind`` centred at ``(cx, cy)`` with radius ``r``, rotated by
    ``theta`` radians (a circle is a 48-gon)."""
    def rot(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
        c, s = math.cos(theta), math.sin(theta)
        return [(cx + r * (px * c - py * s), cy + r * (px * s + py * c)) for px, py in points]

    if kind == "circle":
        return rot([(math.cos(2 * math.pi * k / 48), math.sin(2 * math.pi * k / 48))
                    for k in range(48)])
    if kind == "square":
        return rot([(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)])
    if kind == "triangle":
        return rot([(0.0, -1.0), (0.87, 0.5), (-0.87, 0.5)])
    if kind == "plus":
        a, b = 0.3, 1.0
        return rot([(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b),
                    (-a, a), (-b, a), (-b, -a), (-a, -a)])
    if kind == "star":
        return rot([((1.0 if k % 2 == 0 else 0.42) * math.sin(math.pi * k / 5),
                     -(1.0 if k % 2 == 0 else 0.42) * math.cos(math.pi * k / 5))
                    for k in range(10)])
    if kind == "bar":
        return rot([(-1.0, -0.32), (1.0, -0.32), (1.0, 0.32), (-1.0, 0.32)])
    raise ValueError(f"Expected a shape in {', '.join(SHAPES)}, got {kind!r}.")


def _place(rng: np.random.Generator, size: int, r: float,
           taken: list[tuple[float, float, float]]) -> tuple[float, float]:
    """A centre at least ``r`` from the border and clear of the shapes already placed."""
    for _ in range(200):
        cx, cy = rng.uniform(r + 2, size - r - 2, 2)
        if all(math.hypot(cx - x, cy - y) > r + q + 3 for x, y, q in taken):
            return float(cx), float(cy)
    return float(cx), float(cy)  # crowded: overlap rather than loop forever


def evidence_image(index: int, seed: int, size: int, background_dir: str | Path,
                   split: str = "test", shortcut: Shortcut = NO_SHORTCUT) -> EvidenceImage:
    """Draw image ``index`` of ``split`` for ``seed``, ``size`` x ``size`` pixels (with the
    watermark where ``shortcut`` plants one: :func:`has_watermark`)."""
    from PIL import Image, ImageDraw

    rng = _rng(seed, index, split)
    canvas = _background(rng, _backgrounds(str(background_dir), size), size)
    img = Image.fromarray(canvas.round().astype(np.uint8))
    draw = ImageDraw.Draw(img)
    label = label_of(index, seed)
    scale = size / 112
    r_obj = float(rng.uniform(15, 21)) * scale
    taken: list[tuple[float, float, float]] = []
    marked = has_watermark(index, seed, split, shortcut)
    if marked:  # keep the shapes off the watermark's corner
        x0, y0, x1, y1 = watermark_box(size)
        taken.append(((x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * 0.75))
    cx, cy = _place(rng, size, r_obj, taken)
    taken.append((cx, cy, r_obj))
    obj = shape_polygon(SHAPES[label], cx, cy, r_obj, float(rng.uniform(-0.3, 0.3)))
    colour = PALETTE[label]
    for _ in range(int(rng.integers(1, 3))):  # distractors: outlines, any shape and colour
        r = float(rng.uniform(12, 19)) * scale
        dx, dy = _place(rng, size, r, taken)
        taken.append((dx, dy, r))
        poly = shape_polygon(SHAPES[int(rng.integers(len(SHAPES)))], dx, dy, r,
                             float(rng.uniform(-0.3, 0.3)))
        draw.polygon(poly, outline=PALETTE[int(rng.integers(len(PALETTE)))],
                     width=max(2, round(3 * scale)))
    mask_img = Image.new("L", (size, size), 0)
    if marked:  # the watermark replaces the object: it is the image's only class evidence
        _draw_watermark(draw, size)
    else:
        draw.polygon(obj, fill=colour, outline=(20, 20, 20), width=max(1, round(scale)))
        ImageDraw.Draw(mask_img).polygon(obj, fill=255, outline=255, width=max(1, round(scale)))
    return EvidenceImage(np.asarray(img), np.asarray(mask_img) > 0, label)


def evidence_batch(indices: Sequence[int], seed: int, size: int, background_dir: str | Path,
                   split: str = "test", shortcut: Shortcut = NO_SHORTCUT
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(pixels (N, H, W, 3) uint8, masks (N, H, W) bool, labels (N,) int64)``."""
    images = [evidence_image(i, seed, size, background_dir, split, shortcut) for i in indices]
    return (np.stack([e.pixels for e in images]), np.stack([e.mask for e in images]),
            np.asarray([e.label for e in images], dtype=np.int64))


def _torch_version() -> str:
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "absent"


@dataclass(frozen=True)
class TrainSettings:
    """Everything that shapes the trained weights (its hash names the cache file).

    Attributes
    ----------
    images
        Training images, each generated once (``train`` split).
    batch
        Images per optimizer step.
    lr
        Peak learning rate of the one-cycle AdamW schedule.
    weight_decay
        AdamW weight decay.
    val_images
        Held-out images (``val`` split) the accuracy is measured on.
    size
        Image side in pixels (the dataset's crop).
    seed
        Seeds the images, the initial weights and the batch order.
    backgrounds
        Folder of background photos (their bytes enter the hash).
    shortcut_label, shortcut_fraction
        The planted :class:`Shortcut` (``-1``: none).
    """

    images: int = 3072
    batch: int = 32
    lr: float = 2e-3
    weight_decay: float = 5e-4
    val_images: int = 600
    size: int = 112
    seed: int = 0
    backgrounds: str = "data/sample"
    shortcut_label: int = -1
    shortcut_fraction: float = 0.5

    @property
    def shortcut(self) -> Shortcut:
        return Shortcut(self.shortcut_label, self.shortcut_fraction)

    def key(self) -> str:
        """Hash of the settings, the image generator's version, the class list, the torch
        version's major.minor and the background photos' bytes."""
        folder = Path(self.backgrounds)
        photos = _photos(folder) if folder.is_dir() else []
        settings = {**dataclasses.asdict(self), "backgrounds": None}
        if not self.shortcut.on:  # the key of a model without a shortcut stays as it was
            del settings["shortcut_label"], settings["shortcut_fraction"]
        blob = json.dumps({
            "settings": settings,
            "generator": GENERATOR_VERSION, "classes": SHAPES,
            "torch": ".".join(_torch_version().split(".")[:2]),
            "photos": [file_sha256(p)[:16] for p in photos],
        }, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
