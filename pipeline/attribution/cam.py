"""Layer maps: Grad-CAM and Guided Grad-CAM, and finding the layer they read.

Grad-CAM (Selvaraju et al. 2017) weighs a layer's feature maps by the spatial mean of the
target's gradient and keeps the positive part: ``relu(sum_c mean(dF/dA_c) A_c)``, one map per
image at the layer's resolution, upsampled (bilinear) to the input's. On convolutional layers
it is Captum's ``LayerGradCam`` with ``LayerAttribution.interpolate``; on a transformer's tokens
``(N, T, C)`` the tokens are first laid out on their grid (ViT: the class token dropped,
``T - 1 = h * w``), and the same formula is applied.

The layer is ``[methods.grad_cam] layer = "layer4"`` (a module name of the backbone), or,
when empty, found automatically: the last module whose output is a spatial feature map
``(N, C, h, w)`` with ``h = w > 1`` or a token grid, in the order the forward pass finishes
them, that the target's gradient reaches at more than one position: ``layer4`` for a ResNet
at 224 px, ``features`` for MobileNet, EfficientNet and ConvNeXt, ``permute`` for Swin, and
``encoder.layers.encoder_layer_11.ln_1`` for ViT-B/16 (after it, only the class token
reaches the head).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pipeline.attribution.method_registry import LAYER, METHODS, MethodSpec
from pipeline.errors import ConfigError

if TYPE_CHECKING:  # torch loads when a function runs, not when the registry is read
    import torch
    from torch import nn

def named_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The network's modules under its own names (``layer4``, ``features.7``): those of
    :func:`pipeline.attribution.accel.network`, inside the engine's wrappers."""
    from pipeline.attribution.accel import network

    return {name: module for name, module in network(model).named_modules() if name}


def _grid(shape: Sequence[int]) -> tuple[int, int] | None:
    """(h, w) of a token sequence ``(N, T, C)`` on a square grid (a class token, or a class
    and a distillation token as DeiT's, allowed)."""
    if len(shape) != 3:
        return None
    tokens = int(shape[1])
    for t in (tokens, tokens - 1, tokens - 2):
        side = math.isqrt(t) if t > 0 else 0
        if side > 1 and side * side == t:
            return side, side
    return None


def _is_map(shape: Sequence[int]) -> bool:
    return len(shape) == 4 and shape[2] == shape[3] and shape[2] > 1


def layer_grid(shape: Sequence[int]) -> tuple[int, int] | None:
    """(h, w) of a layer's output a map can be read from: a feature map ``(N, C, h, w)`` or
    a square grid of tokens ``(N, T, C)``; None for any other output."""
    if _is_map(shape):
        return int(shape[2]), int(shape[3])
    return _grid(shape)


def _outputs(model: nn.Module, image: torch.Tensor
             ) -> list[tuple[str, tuple[int, ...], int | None]]:
    """``(name, output shape, positions the target's gradient reaches)`` of every named module
    whose output is a tensor, in the order their forward finishes, for one image
    ``(1, 3, H, W)`` (the target is the top class). The reach is None where the target does
    not depend on the output at all (a branch the head does not use, or one cut off from
    the graph), and for outputs that are no map or grid of tokens."""
    import torch

    seen: list[tuple[str, torch.Tensor]] = []
    hooks = []
    for name, module in named_layers(model).items():
        def hook(_m: Any, _i: Any, out: Any, name: str = name) -> None:
            if isinstance(out, torch.Tensor):
                seen.append((name, out))
        hooks.append(module.register_forward_hook(hook))
    try:
        with torch.enable_grad():
            scores = model(image.detach().requires_grad_(True))
        grids = [(i, t) for i, (_n, t) in enumerate(seen)
                 if layer_grid(tuple(t.shape)) and t.requires_grad]
        reach: list[int | None] = [None] * len(seen)
        if grids and scores.requires_grad:
            top = scores[0, scores[0].argmax()]
            grads = torch.autograd.grad(top, [t for _i, t in grids], allow_unused=True)
            for (i, _t), g in zip(grids, grads, strict=True):
                if g is not None:
                    reach[i] = int((as_map(g).abs().sum(dim=1) > 0).sum())
    finally:
        for h in hooks:
            h.remove()
    return [(n, tuple(t.shape), r) for (n, t), r in zip(seen, reach, strict=True)]


_FOUND: weakref.WeakKeyDictionary[nn.Module, dict[tuple[Any, ...], Any]] = \
    weakref.WeakKeyDictionary()


def _cached(model: nn.Module, key: tuple[Any, ...], make: Any) -> Any:
    """``make()`` once per model and key: the layer checks run a forward pass, and a batch
    method calls them on every chunk."""
    per_model = _FOUND.setdefault(model, {})
    if key not in per_model:
        per_model[key] = make()
    return per_model[key]


def find_layer(model: nn.Module, image: torch.Tensor, name: str = ""
               ) -> tuple[str, tuple[int, int]]:
    """:func:`search_layer`, once per model, name and image size."""
    result: tuple[str, tuple[int, int]] = _cached(
        model, ("find", name, tuple(image.shape[1:]), image.dtype, str(image.device)),
        lambda: search_layer(model, image, name))
    return result


def search_layer(model: nn.Module, image: torch.Tensor, name: str = ""
                 ) -> tuple[str, tuple[int, int]]:
    """The network's module a layer method reads, and its grid ``(h, w)``.

    ``name`` is checked: a module of the network that runs as one, with a feature map or a
    grid of tokens as its output, on which the target depends (a layer whose output the
    head never uses, or that is cut off from the graph by ``detach`` or ``no_grad``, has no
    gradient to weigh its maps by: Captum would fail inside its backward pass). One forward
    and backward pass of ``image`` checks it. Empty, it is found: the last module in the
    order the forward pass finishes them whose output is a spatial map ``(N, C, h, w)``
    (``h = w > 1``) or a square grid of tokens, and whose every position is not cut off
    from the target's gradient (a ViT's last blocks pass only the class token on: their
    Grad-CAM would be zero, so the last block's ``ln_1`` is chosen, as pytorch-grad-cam
    advises).

    Parameters
    ----------
    image
        ``(1, 3, H, W)`` normalized: any image of the run's crop.

    Raises
    ------
    ConfigError
        ``name`` is not such a module (the message lists candidates), or the network has no
        layer a map can be read from (an exported program runs operators, not modules).
    """
    outputs = _outputs(model, image[:1])
    runs: dict[str, int] = {}
    for n, _shape, _reach in outputs:
        runs[n] = runs.get(n, 0) + 1
    # A module that runs more than once (ResNet's shared ReLU) has no one output to read.
    candidates = [(n, shape, reach) for n, shape, reach in outputs
                  if layer_grid(shape) and runs[n] == 1 and reach is not None]
    last_first = list(dict.fromkeys(n for n, _s, _r in reversed(candidates)))
    shown = ", ".join(last_first[:6]) or "none"
    if name:
        found = [(shape, reach) for n, shape, reach in outputs if n == name]
        if name not in named_layers(model) or len(found) != 1 or not layer_grid(found[0][0]) \
                or found[0][1] is None:
            why = ("is not a module of the model" if name not in named_layers(model) else
                   "never runs as a module (an exported program runs operators: use a state "
                   "dict with [model] arch)" if not found else
                   f"runs {len(found)} times in one forward pass (a module used more than "
                   "once has no one output: name the block around it)" if len(found) > 1 else
                   f"gives an output of shape {found[0][0]}, not a map (N, C, h, w) or a "
                   "grid of tokens" if not layer_grid(found[0][0]) else
                   "runs, but the target does not depend on its output (the head does not "
                   "use it, or it is cut off from the graph): it has no gradient to weigh "
                   "its maps by")
            raise ConfigError(f"[methods] layer: expected a layer with a spatial output that "
                              f"the target's gradient reaches, got {name!r}, which {why}. "
                              f"Such layers, last first: {shown}.")
        grid = layer_grid(found[0][0])
        assert grid is not None
        return name, grid
    # A gradient that reaches no layer at all (a zero classifier head) rules nothing out.
    # On tokens, a projection's output (a ViT block's qkv) mixes what the block keeps
    # apart: the block's own outputs and norms are read instead, as pytorch-grad-cam does.
    from torch import nn

    modules = named_layers(model)
    candidates = [(n, shape, reach) for n, shape, reach in candidates
                  if len(shape) == 4 or not isinstance(modules[n], nn.Linear)]
    reached = [(n, shape) for n, shape, reach in candidates if reach and reach > 1] or \
        ([(n, shape) for n, shape, _r in candidates]
         if all(reach == 0 for _n, _s, reach in candidates) else [])
    if not reached:
        raise ConfigError(
            "[methods] layer: expected a layer with a spatial output (N, C, h, w) or a grid "
            "of tokens that the gradient reaches, found none (an exported program runs "
            "operators, not modules: use a state dict with [model] arch). Name one with "
            "layer = \"...\".")
    chosen, shape = reached[-1]
    grid = layer_grid(shape)
    assert grid is not None
    return chosen, grid


def as_map(out: torch.Tensor) -> torch.Tensor:
    """A layer's output as ``(N, C, h, w)``: feature maps as they are, tokens ``(N, T, C)``
    laid out on their grid (a class token, and DeiT's distillation token, dropped)."""
    if out.ndim == 4:
        return out
    grid = _grid(tuple(out.shape))
    if grid is None:
        raise ConfigError(f"[methods] layer: expected a (N, C, h, w) feature map or a square "
                          f"grid of tokens, got an output of shape {tuple(out.shape)}; name "
                          "another layer with layer = \"...\".")
    h, w = grid
    tokens = out[:, -h * w:, :]  # the class (and distillation) tokens, if any, are first
    return tokens.transpose(1, 2).reshape(out.shape[0], out.shape[2], h, w)


def layer_cam(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: str
              ) -> torch.Tensor:
    """Grad-CAM at ``layer``, at the layer's resolution: ``(N, 1, h, w)``, float.

    A feature map goes to Captum's ``LayerGradCam`` (``relu_attributions=True``); a grid of
    tokens gets the same formula after :func:`as_map`."""
    import torch
    from captum.attr import LayerGradCam

    module = named_layers(model)[layer]

    def probe_ndim() -> int:
        seen: dict[str, int] = {}

        def hook(_m: Any, _i: Any, out: Any) -> None:  # returns None: keeps the output
            seen.setdefault("ndim", out.ndim)

        handle = module.register_forward_hook(hook)
        try:
            with torch.no_grad():
                model(images[:1])
        finally:
            handle.remove()
        return seen["ndim"]

    ndim = _cached(model, ("ndim", layer, tuple(images.shape[1:]), images.dtype,
                           str(images.device)), probe_ndim)
    if ndim == 4:
        cam = LayerGradCam(model, module).attribute(images, target=targets,
                                                    relu_attributions=True)
        return cam.detach()
    return _token_grad_cam(model, module, images, targets)


def grad_cam_maps(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: str,
                  mode: str = "bilinear") -> torch.Tensor:
    """Grad-CAM at ``layer`` upsampled to the images (``LayerAttribution.interpolate``):
    ``(N, 1, H, W)``, float."""
    from captum.attr import LayerAttribution

    return LayerAttribution.interpolate(layer_cam(model, images, targets, layer),
                                        tuple(images.shape[2:]), interpolate_mode=mode)


def _token_grad_cam(model: nn.Module, module: nn.Module, images: torch.Tensor,
                    targets: torch.Tensor) -> torch.Tensor:
    """Captum's Grad-CAM formula on tokens laid out on their grid: ``(N, 1, h, w)``."""
    import torch

    kept: dict[str, torch.Tensor] = {}

    def keep(_m: Any, _i: Any, out: torch.Tensor) -> None:
        out.retain_grad()
        kept["out"] = out

    handle = module.register_forward_hook(keep)
    try:
        x = images.detach().requires_grad_(True)
        with torch.enable_grad():
            scores = model(x)
            picked = scores.gather(1, targets.view(-1, 1)).sum()
            (grad,) = torch.autograd.grad(picked, kept["out"])
    finally:
        handle.remove()
    acts, grads = as_map(kept["out"].detach()), as_map(grad)
    weights = grads.mean(dim=(2, 3), keepdim=True)
    return torch.relu((weights * acts).sum(dim=1, keepdim=True))


def grad_cam(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
             params: Mapping[str, Any], max_batch: int,
             _seeds: Sequence[int] | None = None) -> torch.Tensor:
    """The registry's ``grad_cam``: ``(N, 3, H, W)``, the upsampled map divided evenly over the
    channels, so that the channel sum (``aggregated``) is the map."""
    import torch

    layer, _grid_hw = find_layer(model, images, params.get("layer", ""))
    out = []
    for start in range(0, images.shape[0], max(1, max_batch)):
        stop = start + max(1, max_batch)
        cam = grad_cam_maps(model, images[start:stop], targets[start:stop], layer)
        out.append((cam / 3).expand(-1, 3, -1, -1))
    return torch.cat(out).contiguous()


def guided_grad_cam(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                    params: Mapping[str, Any], max_batch: int,
                    _seeds: Sequence[int] | None = None) -> torch.Tensor:
    """The registry's ``guided_grad_cam``: Captum ``GuidedGradCam``'s product, guided
    backprop times the Grad-CAM at the layer upsampled (nearest, Captum's default), with the
    guided backprop on :func:`pipeline.attribution.network_rewrite.unshared` ``model`` and
    token layers laid out on their grid; ``(N, 3, H, W)``."""
    import torch

    from pipeline.attribution.propagation import guided_backprop

    layer, _grid_hw = find_layer(model, images, params.get("layer", ""))
    step = max(1, max_batch)
    out = []
    for start in range(0, images.shape[0], step):
        x, t = images[start:start + step], targets[start:start + step]
        guided = guided_backprop(model, x, t, {}, step)
        out.append(guided * grad_cam_maps(model, x, t, layer, mode="nearest"))
    return torch.cat(out)


METHODS.add("grad_cam", MethodSpec(
    "grad_cam", grad_cam,
    "Captum LayerGradCam at a layer, upsampled (bilinear) to the input", "captum",
    {"layer": LAYER}, space="layer", hooks=True,
))

METHODS.add("guided_grad_cam", MethodSpec(
    "guided_grad_cam", guided_grad_cam,
    "Captum GuidedGradCam: guided backprop times the upsampled Grad-CAM", "captum",
    {"layer": LAYER}, space="guided", hooks=True,
))
