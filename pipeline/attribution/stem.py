"""Split a classifier into its affine stem and the rest, for path methods.

Many image classifiers start with layers that are affine in the input: ResNet's
``conv1 -> bn1`` (an eval-mode BatchNorm is a per-channel scale and shift). On a straight
path ``p_k = b + a_k (x - b)`` an affine stem ``S(p) = J p + c`` maps the path onto a straight
path in its output space, ``S(p_k) = S(b) + a_k (S(x) - S(b))``, and the input gradient is
``J^T`` of the gradient at the stem's output. So Integrated Gradients needs the stem only
twice per image (at ``b`` and ``x``) and ``J^T`` only once (on the weighted sum of the
gradients), instead of ``m`` forwards and ``m`` backwards. For ResNet18 at 224 px the stem is
the largest activation and its input-gradient convolution is slow (3 output channels): per
path point the rest costs about 20 ms against 25 ms for the whole model on 2 CPU cores, and IG
as a whole ran about 15% faster (``docs/performance.md``).

The split is found with ``torch.fx`` and works for any traceable model whose input flows
through a chain of ``Conv2d`` / eval-mode ``BatchNorm2d`` / ``Identity`` modules (and
``contiguous`` calls, e.g. from :class:`pipeline.attribution.accel.ChannelsLast`) before
anything else uses it. Models that do not match are left to the plain engine.
"""

from __future__ import annotations

import copy
import functools
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from pipeline.attribution.accel import CompiledWithFallback, TF32Backward
from pipeline.attribution.fxtrace import symbolic_trace


@dataclass(frozen=True)
class AffineStem:
    """``model(x) == rest(stem(x))`` with ``stem`` affine in ``x``.

    Attributes
    ----------
    stem
        ``(B, 3, H, W) -> (B, C, h, w)``, affine.
    rest
        ``(B, C, h, w) -> (B, classes)``; never modifies its input in place, so the gradient
        with respect to its input is well defined.
    """

    stem: nn.Module
    rest: nn.Module

    def float64_stem(self, device: torch.device) -> nn.Module:
        """A float64 copy of the stem on ``device`` (a fresh copy: a few thousand weights).

        Evaluated in float64 and rounded once, the stem's outputs are the float32 numbers
        closest to the exact ones, so the max-pool right after ResNet's stem orders
        near-equal values as float64 does (measured: IG error vs float64 1.6e-3 -> 7e-4).
        """
        return copy.deepcopy(self.stem).to(device=device, dtype=torch.float64)

    def vjp(self, grad_out: torch.Tensor, input_shape: tuple[int, ...]) -> torch.Tensor:
        """``J^T grad_out``: the input gradient of the stem's linear part.

        Parameters
        ----------
        grad_out
            ``(B, C, h, w)``, a gradient at the stem's output.
        input_shape
            ``(B, 3, H, W)``.

        Returns
        -------
        torch.Tensor
            ``(B, 3, H, W)`` in ``grad_out``'s dtype. The stem is affine, so its Jacobian is
            the same everywhere and is evaluated at zero.
        """
        x0 = torch.zeros(input_shape, dtype=grad_out.dtype, device=grad_out.device,
                         requires_grad=True)
        with torch.enable_grad():
            out = self.stem(x0)
            (grad,) = torch.autograd.grad(out, x0, grad_out.to(out.dtype))
        return grad


_AFFINE_MODULES = (nn.Conv2d, nn.Identity)
_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[AffineStem | None, str]] = \
    weakref.WeakKeyDictionary()


def _attr(root: nn.Module, target: str) -> Any:
    return functools.reduce(getattr, target.split("."), root)


def _is_affine(gm: fx.GraphModule, node: fx.Node, source: fx.Node) -> bool:
    """Whether ``node`` applies an affine map to ``source`` and to nothing else."""
    if node.args[:1] != (source,) or len(node.args) > 1:
        return False
    if node.op == "call_method":
        return node.target == "contiguous"
    if node.op != "call_module" or node.kwargs:
        return False
    mod = _attr(gm, str(node.target))
    if isinstance(mod, nn.BatchNorm2d):
        # Training-mode BatchNorm mixes rows; without running stats it normalizes per batch.
        return not mod.training and mod.running_mean is not None
    return isinstance(mod, _AFFINE_MODULES)


def _stem_chain(gm: fx.GraphModule) -> list[fx.Node] | None:
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        return None
    if len(placeholders[0].users) != 1:
        return None  # the input is read by more than its first layer (e.g. its shape)
    node, chain = placeholders[0], []
    while len(node.users) == 1:
        (user,) = node.users
        if not _is_affine(gm, user, node):
            break
        chain.append(user)
        node = user
    if not any(n.op == "call_module" and not isinstance(_attr(gm, str(n.target)), nn.Identity)
               for n in chain):
        return None
    return chain


def _submodules(gm: fx.GraphModule, graph: fx.Graph) -> dict[str, Any]:
    return {str(n.target): _attr(gm, str(n.target))
            for n in graph.nodes if n.op in ("call_module", "get_attr")}


def _build_stem(gm: fx.GraphModule, chain: list[fx.Node]) -> fx.GraphModule:
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    first_input = chain[0].args[0]
    assert isinstance(first_input, fx.Node)  # checked by _is_affine
    env[first_input] = graph.placeholder("x")
    for node in chain:
        env[node] = graph.node_copy(node, lambda a: env[a])
    graph.output(env[chain[-1]])
    return fx.GraphModule(_submodules(gm, graph), graph)


def _build_rest(gm: fx.GraphModule, chain: list[fx.Node]) -> fx.GraphModule | None:
    """The graph after the stem, fed by a new input ``z`` that no op modifies in place."""
    skip = set(chain) | {n for n in gm.graph.nodes if n.op == "placeholder"}
    graph = fx.Graph()
    z = graph.placeholder("z")
    env: dict[fx.Node, fx.Node] = {chain[-1]: z}
    for node in gm.graph.nodes:
        if node not in skip:
            env[node] = graph.node_copy(node, lambda a: env[a])
    modules = _submodules(gm, graph)
    for user in list(z.users):
        if user.op == "call_method" and str(user.target).endswith("_"):
            return None
        if user.op == "call_function" and user.kwargs.get("inplace"):
            user.kwargs = {**user.kwargs, "inplace": False}
        if user.op == "call_module" and getattr(modules[str(user.target)], "inplace", False):
            # An in-place first op (ResNet's ReLU) would overwrite the tensor we need the
            # gradient of; an out-of-place copy of that one call costs one activation.
            name = f"{user.target}_out_of_place".replace(".", "_")
            out_of_place = copy.copy(modules[str(user.target)])
            out_of_place.inplace = False
            modules[name] = out_of_place
            user.target = name
    return fx.GraphModule(modules, graph)


def _split(model: nn.Module) -> AffineStem | None:
    return _split_why(model)[0]


def _split_why(model: nn.Module) -> tuple[AffineStem | None, str]:
    """The split, and in words what it is or why there is none."""
    if isinstance(model, CompiledWithFallback | TF32Backward):
        inner, why = _split_why(model.inner)
        wrap = type(model)
        return (None, why) if inner is None else (AffineStem(inner.stem, wrap(inner.rest)),
                                                  why)
    try:
        gm = symbolic_trace(model)
    except Exception as exc:  # untraceable models keep the plain engine
        return None, f"not found: torch.fx cannot trace the model ({type(exc).__name__})"
    chain = _stem_chain(gm)
    if chain is None:
        inputs = [n for n in gm.graph.nodes if n.op == "placeholder"]
        if len(inputs) == 1 and len(inputs[0].users) > 1:
            return None, ("not found: the input is read by more than its first layer "
                          "(e.g. its shape is checked, as ViT's patch embedding does)")
        what = ""
        if len(inputs) == 1:
            node = inputs[0]
            while len(node.users) == 1 and _is_affine(gm, next(iter(node.users)), node):
                node = next(iter(node.users))  # past the layout conversion
            # An exported program reads the input's size once per dimension: name each op
            # once.
            ops = ", ".join(list(dict.fromkeys(_op_name(gm, u) for u in node.users))[:3])
            what = f" (it goes to {ops})" if ops else ""
        return None, ("not found: the input does not go through Conv2d / eval BatchNorm "
                      f"layers first{what}")
    rest = _build_rest(gm, chain)
    if rest is None:
        return None, "not found: the first op after it changes its input in place"
    stem, rest = _build_stem(gm, chain).eval(), rest.eval()
    names = " -> ".join(_own_name(str(n.target)) for n in chain if n.op == "call_module")
    return AffineStem(stem, rest), f"factored out ({names})"


def _own_name(target: str) -> str:
    """A module name without the engine's wrapper prefixes (``inner.0.conv1`` -> ``conv1``)."""
    while target.startswith(("inner.", "0.")):
        target = target.split(".", 1)[1]
    return target


def _op_name(gm: fx.GraphModule, node: fx.Node) -> str:
    """What ``node`` does, in words: a module's type and name, or the function's name."""
    if node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        return f"{type(module).__name__} {_own_name(str(node.target))}"
    name = getattr(node.target, "__name__", str(node.target))
    return f"{name} ({node.op.replace('_', ' ')})"


def describe_stem(model: nn.Module) -> str:
    """``factored out (conv1 -> bn1)``, or ``not found: <why>`` (what :func:`affine_stem`
    found for ``model``): for the run's summary."""
    if not isinstance(model, nn.Module):
        return f"not found: expected a torch module, got {type(model).__name__}"
    affine_stem(model)
    return _CACHE[model][1]


def affine_stem(model: nn.Module) -> AffineStem | None:
    """The model's affine stem and the rest, or None when it has none (cached per model).

    Parameters
    ----------
    model
        Eval-mode classifier ``(N, 3, H, W) -> (N, classes)``; the split shares its modules.
    """
    if model not in _CACHE:
        _CACHE[model] = _split_why(model)
    split = _CACHE[model][0]
    if split is not None and any(m.training for m in split.stem.modules()
                                 if isinstance(m, nn.BatchNorm2d)):
        return None  # switched to training mode since the split was made
    return split
