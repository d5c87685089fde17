"""How a model wants its images: the resize, crop, interpolation and normalisation a source
says its weights were trained with. Torch-free: configs resolve it when they load."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


#: How an image is brought to ``resize``: its short side (the aspect ratio kept, torchvision's
#: way), or the whole image squashed to ``resize x resize`` (Hugging Face's ViT, DeiT, BEiT,
#: Swin and EfficientNet processors).
RESIZE_MODES = ("short-side", "squash")


@dataclass(frozen=True)
class Preprocessing:
    """Resize the short side to ``resize`` px (``resize_mode = "squash"``: the whole image to
    ``resize x resize``), with ``interpolation``; centre-crop ``crop`` px, scale to [0, 1],
    then ``(x - mean) / std`` per channel."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    resize_mode: str = "short-side"

    def to_dict(self) -> dict[str, Any]:
        """The fields, the channel values as lists (what the store's attributes keep);
        ``resize_mode`` only where it is not the short side, so that stores made before it
        existed describe their preprocessing as they always have."""
        d = {**asdict(self), "mean": list(self.mean), "std": list(self.std)}
        if self.resize_mode == "short-side":
            del d["resize_mode"]
        return d

    @property
    def normalization(self) -> Any:
        """The :class:`pipeline.data.images.Normalization` of ``mean`` and ``std``."""
        from pipeline.data.images import Normalization

        return Normalization(self.mean, self.std)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocessing:
        """The inverse of :meth:`to_dict` (``interpolation`` defaults to bilinear)."""
        mean = tuple(float(v) for v in d["mean"])
        std = tuple(float(v) for v in d["std"])
        return cls(int(d["resize"]), int(d["crop"]), (mean[0], mean[1], mean[2]),
                   (std[0], std[1], std[2]), str(d.get("interpolation", "bilinear")),
                   str(d.get("resize_mode", "short-side")))


#: torchvision's ImageNet preprocessing: resize 256, crop 224, bilinear, ImageNet statistics.
IMAGENET = Preprocessing()
