"""``xai explain``: one figure for single image files, a row per image: the image with its
predicted class and probability, then one heat map per method, drawn by the contact sheets'
own renderer (each map clipped at its 99th percentile, headers, captions, colour bar).

:func:`check_request` validates everything it can without torch, so that a bad argument
is an error within a second, before any model loads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, DataError, WeightsError


@dataclass(frozen=True)
class ExplainResult:
    """What ``xai explain`` prints: a line per image (and the model's note), whether the
    weights were random, and with ``--evaluate`` the scores."""

    lines: list[str]
    random_weights: bool
    scores: list[ImageScores] = field(default_factory=list)


@dataclass(frozen=True)
class ImageScores:
    """One image's scores: per metric, one score per method and the random map's last
    (the floor a method must beat), ``{metric: (methods + 1,)}``."""

    image: str
    scores: dict[str, list[float]]


def check_request(paths: Sequence[Path], methods: Sequence[str], *, weights: str, arch: str,
                  head: str, classes: Path | None, n_steps: int, nt_samples: int,
                  device: str, out_file: Path) -> None:
    """Every argument of ``xai explain`` that can be checked without loading a model.

    Raises
    ------
    DataError
        An image that is missing, a folder, or not an image file.
    ConfigError
        An unknown method, architecture, head or device, or a count below 1.
    WeightsError
        A weights file that does not exist, or ImageNet weights that are not in the cache
        while a download failed recently (with how to put them in place).
    """
    from pipeline.attribution.method_registry import METHODS
    from pipeline.data.discovery import is_image_file
    from pipeline.models.checkpoints import HEADS
    from pipeline.models.sources import check_arch, source_for, weight_names
    from workflows.config.key_checks import device_problem

    if not paths:
        raise DataError("Expected one or more image files, got none: xai explain IMAGE ...")
    for path in paths:
        if path.is_dir():
            raise DataError(f"Expected image files, got the folder {path}. Pass its files "
                            f"({path}/*.jpg), or explain a whole folder with "
                            f"`xai run --data-dir {path}`.")
        if not path.is_file():
            raise DataError(f"Expected an image file at {path}, but there is none.")
        if not is_image_file(path):
            raise DataError(f"Expected an image file (.jpg, .png, ...), got {path}.")
    # The registry's own did-you-mean, as `xai run --method` gives it.
    for name in methods:
        if name not in METHODS:
            message = METHODS.unknown_message(name)
            end = "" if message.endswith("?") else "."
            raise ConfigError(f"--method: {message}{end} Pass a registered name; "
                              "`xai explain --help` lists them.")
    if problem := check_arch(arch):
        raise ConfigError(f"--arch: {problem}")
    if head not in HEADS:
        raise ConfigError(f"--head: expected one of {', '.join(HEADS)}, got {head!r}.")
    # The counts go to every method that has the parameter: each is checked by its
    # method's own rule, the one a config's [methods.<name>] table meets.
    for flag, key, value in (("--n-steps", "n_steps", n_steps),
                             ("--nt-samples", "nt_samples", nt_samples)):
        for name in methods:
            param = METHODS[name].params.get(key)
            if param is not None and (problem := param.check(key, value)):
                raise ConfigError(f"{flag}: {problem} ({name}).")
    if problem := device_problem(device):
        raise ConfigError(f"--device: {problem}.")
    if classes is not None and not classes.is_file():
        raise ConfigError(f"--classes: expected a file of class names (one a line) at "
                          f"{classes}, but there is none.")
    if out_file.suffix.lower() != ".png":
        raise ConfigError(f"--out: expected a .png file, got {out_file}.")
    # Which weights these are is the model sources' to say: nothing here names one.
    source = source_for(arch, weights)
    if source.single_images_refusal:
        raise ConfigError(f"--weights: {source.single_images_refusal}")
    if source.weights_missing(weights):
        names = ", ".join(weight_names(single_images=True))
        raise WeightsError(f"--weights: expected {names} or a weights file, got {weights!r}, "
                           "which is no file.")
    if (problem := source.weights_problem(arch, weights)) is not None:
        raise WeightsError(f"--weights {weights}: {problem}")


def explain_images(paths: list[Path], out_file: Path, *, weights: str = "auto",
                   head: str = "softmax", methods: list[str], n_steps: int = 50,
                   nt_samples: int = 10, device: str = "auto", seed: int = 0,
                   progress: Callable[[str], None] | None = None, arch: str = "resnet18",
                   classes: Path | None = None, evaluate: Sequence[str] = ()
                   ) -> ExplainResult:
    """Explain each image with each method; write one PNG with a row per image.

    ``progress(what)`` is called after each (image, method), ``len(paths) * len(methods)``
    times in all, with what was just done. ``evaluate`` names metrics that need no mask
    (:func:`pipeline.evaluation.metrics.default_metrics`) to score each image's maps with,
    beside a random map's, as the run's evaluate stage does with its defaults.
    """
    import torch

    from pipeline.attribution.memory_planner import plan_max_batch
    from pipeline.attribution.method_registry import attribute, get_method, image_seed
    from pipeline.data.images import ImageDecodeError, load_tensor, normalize, to_uint8_hwc
    from pipeline.models.classifier import load_model
    from pipeline.render.heatmaps import SheetRow, contact_sheet, save_image_atomic
    from workflows.runner.worker import resolve_device

    check_request(paths, methods, weights=weights, arch=arch, head=head, classes=classes,
                  n_steps=n_steps, nt_samples=nt_samples, device=device, out_file=out_file)
    dev = resolve_device(device)
    loaded = load_model(weights, head, seed=seed, device=dev, arch=arch, classes=classes)
    prep = loaded.preprocessing
    rows, lines, scores = [], [], []
    for i, path in enumerate(paths):
        try:
            image = load_tensor(path, prep.resize, prep.crop, prep.interpolation,
                                prep.resize_mode)
        except ImageDecodeError as exc:
            raise DataError(f"{path}: {exc}") from None
        x = normalize(image, prep.normalization).unsqueeze(0).to(dev)
        with torch.no_grad():
            probs = loaded.backbone(x).softmax(1)
        target = probs.argmax(1)
        max_batch = plan_max_batch(loaded.model, tuple(x.shape[1:]), dev)
        maps, aggregated = [], []
        for name in methods:
            spec = get_method(name)
            params = spec.resolve({k: v for k, v in
                                   {"n_steps": n_steps, "nt_samples": nt_samples}.items()
                                   if k in spec.params})
            attr, _, _ = attribute(spec, loaded.model, x, target, params, max_batch,
                                   [image_seed(seed, i)], norm=prep.normalization)
            maps.append(sheet_map(attr))
            aggregated.append(attr.sum(dim=1)[0].float().cpu().numpy())
            if progress is not None:
                progress(f"{path.name}: {name}")
        if evaluate:
            scores.append(ImageScores(path.name, map_scores(
                loaded.backbone, x, _stack(aggregated), target, evaluate, max_batch,
                seed=image_seed(seed + 7919, i), norm=prep.normalization)))
        label, prob = loaded.classes[int(target)], float(probs[0, target])
        rows.append(SheetRow(path.name, to_uint8_hwc(image), _stack(maps), "ok", label, prob,
                             None))
        lines.append(f"{path}: {label} ({prob:.2f})")
    if loaded.note:
        lines.insert(0, loaded.note)
    banner = "RANDOM WEIGHTS: the maps say nothing about a real model" \
        if loaded.is_random else None
    save_image_atomic(contact_sheet(rows, methods, banner=banner,
                                    title=f"xai explain: {loaded.weights_id}"), out_file)
    return ExplainResult(lines, loaded.is_random, scores)


def map_scores(backbone: Any, x: Any, maps: Any, target: Any, metrics: Sequence[str],
               max_batch: int, *, seed: int, norm: Any) -> dict[str, list[float]]:
    """One image's maps scored by ``metrics`` (mask-free), a random map's score last.

    Parameters
    ----------
    backbone
        The network, logits out; the model-based metrics read its softmax.
    x
        The normalized image ``(1, 3, H, W)`` on the model's device.
    maps
        The image's channel-summed maps ``(M, H, W)`` float32, one per method.
    target
        The explained class ``(1,)``.
    metrics
        Registered metric names that need no mask.
    max_batch
        The attribution's batch bound (the perturbation batches take 4 times it, as the
        evaluate stage's do).
    seed
        The random map's seed.
    norm
        The model's normalization, for the perturbation baseline.

    Returns
    -------
    dict
        Per metric, ``M + 1`` scores: the methods' in order, the random map's last.
    """
    import numpy as np
    import torch

    from pipeline.evaluation.metrics import (
        METRICS,
        random_attribution,
        score_maps,
        target_probabilities,
    )
    from workflows.config.sections import EvaluateConfig

    stack = np.concatenate([maps, random_attribution((1, *maps.shape[1:]), seed)])
    images = x.repeat(len(stack), 1, 1, 1)
    targets = target.repeat(len(stack))
    params = EvaluateConfig().flip_params(max_batch, norm)
    forward = target_probabilities(backbone)
    out: dict[str, list[float]] = {}
    with torch.no_grad():
        for name in metrics:
            score, _ = score_maps(METRICS[name], stack, None, forward, images, targets, params)
            out[name] = [float(v) for v in np.asarray(score, dtype=np.float64)]
    return out


def sheet_map(attributions: Any) -> Any:
    """One image's attributions ``(1, 3, H, W)`` as its sheet shows them: the channel sum,
    normalized by the pipeline's one normaliser (as the store's ``normalized``), ``(H, W)``
    numpy."""
    from pipeline.explainers import aggregate_attribution, normalize_attribution

    # aggregate_attribution drops the batch of one: (1, 3, H, W) -> (H, W)
    return normalize_attribution(aggregate_attribution(attributions.cpu())).numpy()


def _stack(maps: list[Any]) -> Any:
    """The sheet's maps of one image ``(methods, H, W)`` float32."""
    import numpy as np

    return np.stack([np.asarray(m, dtype=np.float32) for m in maps])

