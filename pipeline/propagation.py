"""Modified-gradient methods: Guided Backpropagation and DeepLift, on any network.

Both rewrite how the gradient passes the network's nonlinearities, and Captum does so with
hooks on the nonlinearity *modules*. Two things in stock torchvision models break that:

- one module used more than once: ResNet's blocks call ``self.relu`` twice. DeepLift keeps
  each module's input and output in attributes, so a second use overwrites the first, and
  Captum refuses ("A Module ReLU() was detected that does not contain some of the
  input/output attributes", captum #378, #934);
- functions instead of modules (``F.relu`` in DenseNet, ``x.relu()``): no hook sees them, so
  they pass the plain gradient and DeepLift's summation-to-delta fails silently.

:func:`unshared` fixes both on a traced copy of the network (``torch.fx``): every use of a
nonlinearity module gets a module of its own, and ``relu``/``sigmoid``/``tanh`` calls become
modules. The function computed is the same, exactly; DeepLift's completeness
``sum(A) = F(x) - F(x_bar)`` then holds on ReLU networks with max pooling to float rounding
(tested on ResNet18). Nonlinearities Captum's DeepLift has no rule for (GELU, SiLU, Hardswish,
LayerNorm's division, attention's products) pass the plain gradient: on those networks the
store's ``delta`` says how far completeness is off.
"""

from __future__ import annotations

import copy
import operator
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import fx, nn

from pipeline.accel import network_path

#: Module types whose gradient Captum's DeepLift and Guided Backprop rewrite: each use needs
#: a module of its own.
_NONLINEAR: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ELU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.MaxPool1d,
    nn.MaxPool2d, nn.MaxPool3d, nn.Softmax,
)
#: Functions (and tensor methods) that become modules, so that the rules apply to them.
_FUNCTIONS: dict[Any, type[nn.Module]] = {
    torch.relu: nn.ReLU, torch.nn.functional.relu: nn.ReLU, torch.sigmoid: nn.Sigmoid,
    torch.tanh: nn.Tanh, torch.nn.functional.sigmoid: nn.Sigmoid,
    torch.nn.functional.tanh: nn.Tanh,
}
_METHODS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "relu_": nn.ReLU,
                                         "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}

_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[nn.Module, str]] = \
    weakref.WeakKeyDictionary()


def _own_module(gm: fx.GraphModule, node: fx.Node, module: nn.Module, count: int) -> str:
    """Register a copy of ``module`` (not in place) for ``node``; return its target name."""
    base = str(node.target).replace(".", "_") if node.op == "call_module" else str(node.name)
    name = f"{base}__use{count}"
    fresh = copy.deepcopy(module)
    if hasattr(fresh, "inplace"):
        fresh.inplace = False  # type: ignore[assignment]  # DeepLift keeps its input intact
    gm.add_submodule(name, fresh)
    return name


def _rewrite(gm: fx.GraphModule) -> int:
    """Give every nonlinearity use in ``gm`` a module of its own; return how many changed."""
    uses: dict[str, int] = {}
    changed = 0
    for node in list(gm.graph.nodes):
        if node.op == "call_module":
            module = gm.get_submodule(str(node.target))
            if not isinstance(module, _NONLINEAR):
                continue
            uses[str(node.target)] = uses.get(str(node.target), 0) + 1
            if uses[str(node.target)] == 1 and not getattr(module, "inplace", False):
                continue  # the first use keeps the original module
            node.target = _own_module(gm, node, module, uses[str(node.target)])
            changed += 1
        elif node.op in ("call_function", "call_method"):
            table: Mapping[Any, type[nn.Module]] = (
                _FUNCTIONS if node.op == "call_function" else _METHODS)
            kind = table.get(node.target) if node.target is not operator.getitem else None
            if kind is None or len(node.args) != 1 or node.kwargs.get("inplace"):
                continue
            with gm.graph.inserting_after(node):
                name = _own_module(gm, node, kind(), 1)
                new = gm.graph.call_module(name, (node.args[0],))
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
            changed += 1
    gm.graph.lint()
    gm.delete_all_unused_submodules()  # the shared originals, now called by no node
    gm.recompile()
    return changed


def unshared(model: nn.Module) -> tuple[nn.Module, str]:
    """A copy of ``model`` in which every nonlinearity is used once, and what was done.

    The engine's wrappers (channels_last, precision, the softmax head) stay around the
    rewritten network; the copy shares nothing with ``model`` that a method changes. An
    untraceable network is returned as it is (the reason is the second value).

    Returns
    -------
    (network, note)
        ``network`` computes the same ``(N, 3, H, W) -> (N, C)`` function as ``model``.
    """
    if model in _CACHE:
        return _CACHE[model]
    copied = copy.deepcopy(model)
    path = network_path(copied)
    inner = copied.get_submodule(path) if path else copied
    try:
        gm = fx.symbolic_trace(inner)
    except Exception as exc:  # an untraceable network keeps its modules, as they are
        result: tuple[nn.Module, str] = (
            model, f"as it is: torch.fx cannot trace it ({type(exc).__name__})")
    else:
        changed = _rewrite(gm)
        gm.eval()
        if path:
            parent, _, leaf = path.rpartition(".")
            setattr(copied.get_submodule(parent) if parent else copied, leaf, gm)
            out: nn.Module = copied
        else:
            out = gm
        result = (out.eval(), f"{changed} nonlinearity uses given a module of their own")
    _CACHE[model] = result
    return result


class _RowSoftmaxRescale(torch.autograd.Function):
    """Softmax forward; backward: Captum's DeepLift softmax rule, normalized per row.

    Captum's rule rescales each output's gradient by ``delta_out / delta_in`` and subtracts
    the mean of the result over the *whole batch* (``grad.sum() / grad.numel()``), so a
    row's map depends on the other rows of its pass (0.2% on ResNet18 with three images).
    Here the mean is taken over each row's classes. The batch is DeepLift's: the images,
    then their baselines (``(2N, C)``)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, dim: int) -> torch.Tensor:
        out = torch.softmax(x, dim)
        ctx.save_for_backward(x, out)
        ctx.dim = dim
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        x, out = ctx.saved_tensors
        dim, n = ctx.dim, x.shape[0] // 2
        plain = out * (grad - (grad * out).sum(dim, keepdim=True))
        d_in = (x[:n] - x[n:]).repeat(2, *([1] * (x.ndim - 1)))
        d_out = (out[:n] - out[n:]).repeat(2, *([1] * (x.ndim - 1)))
        rescaled = torch.where(d_in.abs() < 1e-10, plain, grad * d_out / d_in)
        return rescaled - rescaled.mean(dim, keepdim=True), None


class DeepLiftSoftmax(nn.Module):
    """``nn.Softmax`` whose DeepLift rule is normalized per row (see
    :class:`_RowSoftmaxRescale`); Captum leaves a module of another type to autograd."""

    def __init__(self, dim: int | None) -> None:
        super().__init__()
        self.dim = -1 if dim is None else dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = _RowSoftmaxRescale.apply(x, self.dim)
        return out


_DEEPLIFT: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()


def for_deeplift(model: nn.Module) -> nn.Module:
    """:func:`unshared` ``model`` with each ``nn.Softmax`` a :class:`DeepLiftSoftmax`: a row's
    DeepLift map does not depend on the rest of its batch."""
    if model not in _DEEPLIFT:
        net = copy.deepcopy(unshared(model)[0])
        for parent in list(net.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is nn.Softmax:
                    setattr(parent, name, DeepLiftSoftmax(child.dim))
        _DEEPLIFT[model] = net.eval()
    return _DEEPLIFT[model]


def _chunks(n: int, size: int) -> list[slice]:
    size = max(1, size)
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def guided_backprop(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                    _params: Mapping[str, Any], max_batch: int,
                    _seeds: Sequence[int] | None = None) -> torch.Tensor:
    """The registry's ``guided_backprop``: Captum ``GuidedBackprop`` (only positive gradients
    pass each ReLU) on :func:`unshared` ``model``; ``(N, 3, H, W)``."""
    from captum.attr import GuidedBackprop

    explainer = GuidedBackprop(unshared(model)[0])
    return torch.cat([explainer.attribute(images[s], target=targets[s]).detach()
                      for s in _chunks(images.shape[0], max_batch)])


def deeplift(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
             params: Mapping[str, Any], max_batch: int, seeds: Sequence[int] | None = None,
             *, baselines: torch.Tensor | None = None) -> torch.Tensor:
    """The registry's ``deeplift``: Captum ``DeepLift`` (rescale rule) from the baseline, on
    :func:`for_deeplift` ``model``; ``(N, 3, H, W)``. DeepLift runs images and baselines in
    one pass, so a chunk holds at most ``max_batch / 2`` images (and at least one: two
    samples)."""
    from captum.attr import DeepLift

    if baselines is None:
        from pipeline.baselines import make_baseline

        baselines = make_baseline(params.get("baseline", "black"), images, params, seeds)
    explainer = DeepLift(for_deeplift(model), multiply_by_inputs=True)
    return torch.cat([
        explainer.attribute(images[s], baselines=baselines[s], target=targets[s]).detach()
        for s in _chunks(images.shape[0], max(1, max_batch // 2))])
