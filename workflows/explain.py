"""``xai explain``: one figure for single image files, a row per image: the image with its
predicted class and probability, then one normalized heat map per method."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from pipeline.errors import DataError


@dataclass(frozen=True)
class ExplainResult:
    lines: list[str]
    random_weights: bool


def explain_images(paths: list[Path], out_file: Path, *, weights: str = "auto",
                   head: str = "softmax", methods: list[str], n_steps: int = 50,
                   nt_samples: int = 10, device: str = "auto", seed: int = 0,
                   progress: Callable[[str], None] | None = None, arch: str = "resnet18",
                   classes: Path | None = None) -> ExplainResult:
    """Explain each image with each method; write one PNG with a row per image.

    ``progress(what)`` is called after each (image, method), ``len(paths) * len(methods)``
    times in all, with what was just done.
    """
    from pipeline.data import ImageDecodeError, load_tensor, normalize
    from pipeline.explainers import (
        aggregate_attribution,
        draw_attribution_row,
        normalize_attribution,
    )
    from pipeline.methods import METHODS, attribute, get_method, image_seed
    from pipeline.model import load_model
    from pipeline.planner import plan_max_batch
    from pipeline.render import save_figure_atomic
    from workflows.worker import resolve_device

    for name in methods:
        if name not in METHODS:
            raise DataError(f"Expected methods among {', '.join(METHODS)}, got {name!r}.")
    dev = resolve_device(device)
    loaded = load_model(weights, head, seed=seed, device=dev, arch=arch, classes=classes)
    prep = loaded.preprocessing
    norm = prep.normalization
    fig = Figure(figsize=(2.6 * (len(methods) + 1), 2.9 * len(paths)), layout="constrained")
    rows = fig.subfigures(len(paths), 1, squeeze=False)[:, 0]
    lines = []
    import torch

    for i, path in enumerate(paths):
        try:
            image = load_tensor(path, prep.resize, prep.crop, prep.interpolation)
        except ImageDecodeError as exc:
            raise DataError(f"{path}: {exc}") from None
        x = normalize(image, norm).unsqueeze(0).to(dev)
        with torch.no_grad():
            probs = loaded.backbone(x).softmax(1)
        target = probs.argmax(1)
        max_batch = plan_max_batch(loaded.model, tuple(x.shape[1:]), dev)
        maps = []
        for name in methods:
            spec = get_method(name)
            params = spec.resolve({k: v for k, v in
                                   {"n_steps": n_steps, "nt_samples": nt_samples}.items()
                                   if k in spec.params})
            attr, _, _ = attribute(spec, loaded.model, x, target, params, max_batch,
                                   [image_seed(seed, i)], norm=norm)
            maps.append(normalize_attribution(aggregate_attribution(attr.cpu())))
            if progress is not None:
                progress(f"{path.name}: {name}")
        label = loaded.classes[int(target)]
        prob = float(probs[0, target])
        draw_attribution_row(rows[i], image, maps, methods,
                             image_title=f"{path.name}\n{label} ({prob:.2f})")
        lines.append(f"{path}: {label} ({prob:.2f})")
    if loaded.note:
        lines.insert(0, loaded.note)
    if loaded.is_random:
        fig.suptitle("RANDOM WEIGHTS: results are meaningless", color="#cf222e",
                     fontweight="bold")
    save_figure_atomic(fig, out_file)
    return ExplainResult(lines, loaded.is_random)
