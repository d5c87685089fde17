"""``torch.fx`` tracing that other threads can run beside.

:func:`torch.fx.symbolic_trace` patches ``torch.nn.Module.__call__`` and ``__getattr__`` for
the whole process while it traces. A module called meanwhile by another thread (the ingest
stage's ``transforms.Resize``, a predict task's network) is then routed into the tracer, which
raises ``NameError: module is not installed as a submodule``. A streaming run traces the
engine's model (:mod:`pipeline.attribution.stem`, :mod:`pipeline.attribution.network_rewrite`)
while ingest threads preprocess images, so without it images would be skipped at random as
"cannot preprocess". The tracer here records only the calls of the thread that traces and
lets every other thread's calls through untouched.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from torch import fx, nn


class ThreadLocalTracer(fx.Tracer):
    """A :class:`torch.fx.Tracer` that records the tracing thread's module calls and
    attribute reads only; other threads' calls run their original code."""

    _thread: int | None = None

    def trace(self, root: nn.Module | Callable[..., Any],
              concrete_args: dict[str, Any] | None = None) -> fx.Graph:
        self._thread = threading.get_ident()
        return super().trace(root, concrete_args)

    def _mine(self) -> bool:
        return threading.get_ident() == self._thread

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
        if not self._mine():
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, Any]) -> Any:
        if not self._mine():
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)


def symbolic_trace(root: nn.Module) -> fx.GraphModule:
    """:func:`torch.fx.symbolic_trace` of ``root``, safe beside other threads' modules.

    Parameters
    ----------
    root : nn.Module
        The module to trace.

    Returns
    -------
    fx.GraphModule
        The traced copy (shares ``root``'s submodules and parameters).
    """
    tracer = ThreadLocalTracer()
    graph = tracer.trace(root)
    return fx.GraphModule(tracer.root, graph, root.__class__.__name__)
