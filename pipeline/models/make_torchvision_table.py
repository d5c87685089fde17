"""Make ``resources/torchvision_models.json`` (:mod:`pipeline.models.torchvision_table`) from
the installed torchvision, each model built by the torchvision source's builder::

    python -m pipeline.models.make_torchvision_table > pipeline/resources/torchvision_models.json
"""

from __future__ import annotations

import json
from typing import Any

from pipeline.models.preprocessing import Preprocessing
from pipeline.models.sources import MODEL_SOURCES
from pipeline.models.torchvision_table import state_signature


def make_table() -> dict[str, Any]:
    """What ``resources/torchvision_models.json`` holds, from the installed torchvision: per
    classification model its published weights, their preprocessing, its classifier entries
    and its state signature. Builds every model twice (slow: minutes)."""
    import torch
    import torchvision
    from torchvision.models import get_model_weights, list_models

    models: dict[str, Any] = {}
    for arch in list_models(module=torchvision.models):
        weights = get_model_weights(arch).DEFAULT
        t = weights.transforms()
        a, b = _shapes(arch, None), _shapes(arch, 7)
        classifier = sorted(k for k in a if a[k] != b.get(k))
        models[arch] = {
            "weights": str(weights), "url": weights.url,
            "num_classes": len(weights.meta["categories"]),
            "preprocessing": Preprocessing(
                int(t.resize_size[0]), int(t.crop_size[0]),
                tuple(float(v) for v in t.mean), tuple(float(v) for v in t.std),  # type: ignore[arg-type]
                str(t.interpolation.value)).to_dict(),
            "classifier": classifier,
            "signature": state_signature(a, classifier),
        }
        del a, b
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    categories = list(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    return {"torchvision": torchvision.__version__, "models": models,
            "imagenet_categories": categories}


def _shapes(arch: str, num_classes: int | None) -> dict[str, list[int]]:
    import torch

    source = MODEL_SOURCES["torchvision"]
    try:
        with torch.device("meta"):
            net = source.build(arch, num_classes)
    except (NotImplementedError, RuntimeError):  # builders that compute on tensors
        net = source.build(arch, num_classes)
    return {k: list(v.shape) for k, v in net.state_dict().items()}


if __name__ == "__main__":
    print(json.dumps(make_table(), indent=1, sort_keys=True))
