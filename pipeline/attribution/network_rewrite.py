"""Rewriting a network for the modified-gradient methods (Guided Backpropagation, DeepLift).

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
modules. The function computed is the same, exactly. :func:`for_deeplift` also replaces two
of Captum's DeepLift rules that do not add up (max pooling, the softmax head), so DeepLift's
completeness ``sum(A) = F(x) - F(x_bar)`` holds on ReLU networks with max pooling to float
rounding (tested on ResNet18, logits and softmax). Nonlinearities Captum's DeepLift has no
rule for (GELU, SiLU, Hardswish, LayerNorm's division, attention's products) pass the plain
gradient: on those networks the store's ``delta`` says how far completeness is off.
"""

from __future__ import annotations

import copy
import operator
import weakref
from collections.abc import Mapping
from typing import Any

import torch
from torch import fx, nn

from pipeline.attribution.accel import network_path
from pipeline.attribution.fxtrace import symbolic_trace

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
        gm = symbolic_trace(inner)
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


#: Gauss-Legendre nodes of the softmax rule's path integral: softmax is smooth, and 64
#: nodes take its average Jacobian to float64 rounding for logit gaps of a few tens.
_SOFTMAX_NODES = 64


def _zero_sum_round(m: torch.Tensor, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """``m`` (float64, summing to zero along ``dim``) rounded to ``dtype`` so that the rounded
    values still sum to exactly zero along ``dim``.

    Rounding each value on its own leaves a sum of a few units in the last place of the
    largest (about 1e-9 for float32 multipliers of 0.1), and softmax is blind to a shift
    common to all its inputs: a logit offset ``C`` shared by the image and its baseline turns
    that sum into a completeness miss of ``C`` times it (1e-3 at logits of 1e6). So every
    value of a row is rounded to one grid, twice the spacing of ``dtype`` at the row's
    largest magnitude (so each rounded value is exact in ``dtype``), and the units the
    rounding added up are taken back from the values that gained most (largest remainder).
    """
    if dtype == torch.float64:
        return m
    info = torch.finfo(dtype)
    peak = m.abs().amax(dim, keepdim=True)
    exponent = torch.floor(torch.log2(torch.where(peak > 0, peak, 1.0)))
    step = torch.clamp(torch.exp2(exponent + 1) * info.eps, min=info.smallest_normal * info.eps)
    scaled = m / step
    units = torch.round(scaled)
    excess = units.sum(dim, keepdim=True)  # whole units, |excess| <= half the row length
    # Rank each value by how much its rounding added: the first |excess| of them give one
    # unit back when the sum came out high, the last |excess| take one when it came out low.
    gained = units - scaled
    order = torch.argsort(torch.argsort(gained, dim=dim, descending=True), dim=dim)
    size = m.shape[dim]
    units = (units - (excess > 0).to(units.dtype) * (order < excess).to(units.dtype)
             + (excess < 0).to(units.dtype) * (order >= size + excess).to(units.dtype))
    return (units * step).to(dtype)


class _SoftmaxPathRule(torch.autograd.Function):
    """Softmax forward; backward: the multipliers of DeepLift's summation-to-delta for a
    layer that mixes its inputs, the softmax Jacobian averaged along the straight line from
    the baseline's logits to the image's.

    ``m = mean_a J(z_ref + a (z - z_ref))^T g`` gives ``sum_j m_j (z_j - z_ref_j)`` equal to
    ``g . (p(z) - p(z_ref))`` exactly (up to the quadrature), so DeepLift's maps add up to
    ``F(x) - F(baseline)`` through the softmax head too. Captum's own softmax rule (an
    elementwise ``delta_out / delta_in`` less its mean) missed it by 1.5% on ResNet18 and by
    more where the gap is small, and it took that mean over the whole batch, so an image's
    map moved with the other images of its pass. The batch is DeepLift's: the images, then
    their baselines (``(2N, C)``).

    The multipliers are computed in float64 and rounded so that each row still sums to
    exactly zero (:func:`_zero_sum_round`): a logit offset shared by an image and its
    baseline then adds nothing, and the maps add up to float32 rounding of the gap at logits
    of 1e6 as at logits of 10. Where the logits' gaps are so large (hundreds) that the
    softmax switches between two nodes, what the nodes miss is put back along the zero-sum
    direction of the logit change, so the maps still add up."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, dim: int) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.dim = dim
        return torch.softmax(x, dim)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        import numpy as np

        (x,) = ctx.saved_tensors
        dim, n = ctx.dim, x.shape[0] // 2
        z, z_ref = x[:n].double(), x[n:].double()
        g = grad[:n].double()
        nodes, weights = np.polynomial.legendre.leggauss(_SOFTMAX_NODES)
        m = torch.zeros_like(z)
        for a, w in zip((nodes + 1) / 2, weights / 2, strict=True):
            p = torch.softmax(z_ref + float(a) * (z - z_ref), dim)
            m += float(w) * p * (g - (g * p).sum(dim, keepdim=True))
        m = m - m.mean(dim, keepdim=True)
        # Where the softmax switches within a sliver of the path (logit gaps of hundreds),
        # the nodes miss the switch; what they miss goes back along the zero-sum direction
        # of the logit change, so that sum_j m_j dz_j = g . (p(z) - p(z_ref)) holds. A
        # zero-sum m ignores the logit change's shared part, so only its spread enters (an
        # offset of 1e6 would drown the sum in float64 rounding), and a miss below what
        # float32 maps can show leaves the nodes' multipliers as they are.
        dz = z - z_ref
        spread = dz - dz.mean(dim, keepdim=True)
        want = (g * (torch.softmax(z, dim) - torch.softmax(z_ref, dim))).sum(dim, keepdim=True)
        missed = want - (m * spread).sum(dim, keepdim=True)
        norm = (spread * spread).sum(dim, keepdim=True)
        visible = (missed.abs() > 1e-10 * g.abs().sum(dim, keepdim=True)) & (norm > 0)
        m = m + torch.where(visible, missed / torch.where(norm > 0, norm, 1.0), 0.0) * spread
        out = _zero_sum_round(m, dim, grad.dtype)
        return torch.cat([out, out]), None


class DeepLiftSoftmax(nn.Module):
    """``nn.Softmax`` whose DeepLift rule adds up (see :class:`_SoftmaxPathRule`); Captum
    leaves a module of another type to autograd."""

    def __init__(self, dim: int | None) -> None:
        super().__init__()
        self.dim = -1 if dim is None else dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = _SoftmaxPathRule.apply(x, self.dim)
        return out


class _MaxPoolRescale(torch.autograd.Function):
    """2-D max pooling forward; backward: Captum's DeepLift max-pool rule (each window's
    ``grad * (out - out_ref)`` credited to its argmax inputs, the image's and the baseline's),
    with the shares *scatter-added* onto the inputs.

    Captum places the shares with ``max_unpool2d``, which keeps one value where an input is
    the argmax of two overlapping windows (ResNet's 3x3/2 pool). Its maps missed
    completeness by 75% on a conv + 3x3/2 pool network, by 14% on conv + ReLU + 2x2 pool,
    and by 10-50% on ResNet18 from the black image; with the shares added up they miss it
    by 1e-7. The batch is DeepLift's: images, then their baselines."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, pool: nn.MaxPool2d) -> torch.Tensor:
        out, idx = torch.nn.functional.max_pool2d(
            x, pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode,
            return_indices=True)
        ctx.save_for_backward(x, out, idx)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        x, out, idx = ctx.saved_tensors
        n = x.shape[0] // 2

        def scatter(values: torch.Tensor) -> torch.Tensor:
            flat = torch.zeros((*x.shape[:2], x.shape[2] * x.shape[3]), dtype=values.dtype,
                               device=values.device)
            flat.scatter_add_(2, idx.flatten(2), values.flatten(2))
            return flat.view_as(x)

        cross = torch.max(out[:n], out[n:])
        delta_out = torch.cat([cross - out[n:], out[:n] - cross])
        shares = scatter(grad * delta_out)
        total = (shares[:n] + shares[n:]).repeat(2, 1, 1, 1)
        delta_in = (x[:n] - x[n:]).repeat(2, 1, 1, 1)
        plain = scatter(grad)
        return torch.where(delta_in.abs() < 1e-10, plain, total / delta_in), None


class DeepLiftMaxPool2d(nn.Module):
    """``nn.MaxPool2d`` whose DeepLift rule adds overlapping windows' shares up (see
    :class:`_MaxPoolRescale`); Captum leaves a module of another type to autograd."""

    def __init__(self, pool: nn.MaxPool2d) -> None:
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = _MaxPoolRescale.apply(x, self.pool)
        return out


_DEEPLIFT: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()


def for_deeplift(model: nn.Module) -> nn.Module:
    """:func:`unshared` ``model`` with each ``nn.Softmax`` a :class:`DeepLiftSoftmax` and each
    ``nn.MaxPool2d`` a :class:`DeepLiftMaxPool2d`: rules under which the maps add up."""
    if model not in _DEEPLIFT:
        net = copy.deepcopy(unshared(model)[0])
        for parent in list(net.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is nn.Softmax:
                    setattr(parent, name, DeepLiftSoftmax(child.dim))
                elif type(child) is nn.MaxPool2d:
                    setattr(parent, name, DeepLiftMaxPool2d(child))
        _DEEPLIFT[model] = net.eval()
    return _DEEPLIFT[model]
