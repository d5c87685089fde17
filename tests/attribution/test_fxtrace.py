"""pipeline.attribution.fxtrace: tracing beside other threads' modules."""

from __future__ import annotations

import threading

import torch
from torch import fx, nn

from pipeline.attribution.fxtrace import symbolic_trace
from pipeline.data.images import preprocess_transform


class _Pausing(nn.Module):
    """A network whose trace waits, mid-forward, until another thread is done."""

    def __init__(self, reached: threading.Event, release: threading.Event) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 2)
        self.reached, self.release = reached, release

    def forward(self, x):
        h = self.conv(x)
        self.reached.set()  # the process-wide patches are in place now
        self.release.wait(10)
        return self.fc(h.mean((2, 3)))


def _call_during_trace(trace) -> tuple[list[Exception], fx.GraphModule]:
    """Run a preprocessing transform and a plain network in another thread while ``trace``
    traces: what they raised, and the traced graph."""
    from PIL import Image

    reached, release = threading.Event(), threading.Event()
    model = _Pausing(reached, release)
    other = nn.Sequential(nn.Linear(2, 2))
    errors: list[Exception] = []

    def elsewhere() -> None:
        reached.wait(10)
        try:
            preprocess_transform(16, 8)(Image.new("RGB", (20, 20)))
            other(torch.ones(1, 2))
            model.conv(torch.ones(1, 3, 5, 5))  # the traced network's own module
        except Exception as exc:
            errors.append(exc)
        release.set()

    thread = threading.Thread(target=elsewhere)
    thread.start()
    gm = trace(model)
    thread.join()
    return errors, gm


def test_another_threads_modules_run_untouched_while_tracing():
    errors, gm = _call_during_trace(symbolic_trace)
    assert not errors
    ops = [n.op for n in gm.graph.nodes]
    assert ops.count("call_module") == 2, "only the tracing thread's calls are recorded"
    x = torch.randn(2, 3, 6, 6)
    assert torch.equal(gm(x), gm.fc(gm.conv(x).mean((2, 3))))


def test_torch_fx_alone_breaks_them():
    """The failure the module exists for: without it, the other thread's transform raises."""
    errors, _ = _call_during_trace(fx.symbolic_trace)
    assert errors and isinstance(errors[0], NameError)
    assert "not installed as a submodule" in str(errors[0])


def test_the_trace_equals_torch_fx():
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    net(torch.zeros(1, 3, 5, 5))
    ours, theirs = symbolic_trace(net), fx.symbolic_trace(net)
    assert str(ours.graph) == str(theirs.graph)
