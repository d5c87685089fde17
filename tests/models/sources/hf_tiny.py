"""Tiny random Hugging Face image classifiers, saved with ``save_pretrained`` together with
their image processor, for the Hugging Face source's tests (transformers needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

LABELS = ("cat", "dog", "owl")
ARCHS = ("vit", "deit", "beit", "convnext", "swin", "resnet", "efficientnet")


def _tiny(arch: str, size: int) -> tuple[str, dict[str, Any], str, dict[str, Any]]:
    """(config class, its keywords, image processor class, its keywords) of a tiny ``arch``
    for ``size`` px images."""
    patch = 16 if size >= 64 else 8
    square = {"height": size, "width": size}
    vit = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
           "intermediate_size": 37, "patch_size": patch, "image_size": size}
    short = {"size": {"shortest_edge": size}}
    return {
        "vit": ("ViTConfig", vit, "ViTImageProcessor", {"size": square}),
        "deit": ("DeiTConfig", vit, "DeiTImageProcessor",
                 {"size": {"height": size * 8 // 7, "width": size * 8 // 7},
                  "crop_size": square}),
        "beit": ("BeitConfig", {**vit, "use_mean_pooling": True}, "BeitImageProcessor",
                 {"size": square, "do_center_crop": False}),
        "convnext": ("ConvNextConfig", {"hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1]},
                     "ConvNextImageProcessor", short),
        "swin": ("SwinConfig", {"embed_dim": 16, "depths": [1, 1], "num_heads": [2, 2],
                                "window_size": 7 if size >= 224 else 4, "image_size": size,
                                "patch_size": 4}, "ViTImageProcessor", {"size": square}),
        "resnet": ("ResNetConfig", {"embedding_size": 8, "hidden_sizes": [8, 16, 24, 32],
                                    "depths": [1, 1, 1, 1], "layer_type": "basic"},
                   "ConvNextImageProcessor", short),
        "efficientnet": ("EfficientNetConfig", {"width_coefficient": 0.1,
                                                "depth_coefficient": 0.1, "image_size": size,
                                                "hidden_dim": 128},
                         "EfficientNetImageProcessor", {"size": square}),
    }[arch]


def save_tiny(arch: str, folder: Path, labels: Sequence[str] = LABELS, seed: int = 0,
              size: int = 224) -> Path:
    """A seeded random ``arch`` classifier of ``labels`` for ``size`` px images, and its
    processor, in ``folder``."""
    import torch
    import transformers

    config_class, kwargs, processor_class, processor_kwargs = _tiny(arch, size)
    config = getattr(transformers, config_class)(
        **kwargs, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)})
    model_class = getattr(transformers, config_class.replace("Config", "ForImageClassification"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config).eval()
        if arch == "efficientnet":  # its own init leaves the tiny network's output at zero
            for param in model.parameters():
                if param.ndim > 1:
                    torch.nn.init.kaiming_normal_(param.data)
    model.save_pretrained(folder)
    getattr(transformers, processor_class)(**processor_kwargs).save_pretrained(folder)
    return folder
