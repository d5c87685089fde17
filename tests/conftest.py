"""Shared fixtures: a real ResNet18 with seeded random weights on tiny inputs."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
# Bit-identical results across runs (MKL's conditional numerical reproducibility; see
# workflows/__init__.py): set before the first torch op of the test process.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
# One torch thread, here and in every process a test starts (torch reads OMP_NUM_THREADS when
# it starts): CPU results can depend on the thread count, and the tests compare runs bit for
# bit across processes (a killed run's child, Dask workers, which get one thread each on 2
# cores). Dask's LocalCluster also leaves OMP_NUM_THREADS=1 in this process's environment, so
# anything else would change halfway through the suite. Parallel test workers (make test:
# pytest -n) then share the cores instead of oversubscribing them.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)

# After MPLBACKEND is set: Captum (imported by pipeline.attribution.method_registry) imports
# matplotlib.pyplot.
from pipeline.attribution.method_registry import METHODS, MethodSpec  # noqa: E402


@pytest.fixture(scope="session")
def loaded():
    from pipeline.models.classifier import load_model

    return load_model("random", head="softmax", seed=0)


@pytest.fixture(scope="session")
def model(loaded):
    """The original model: ResNet18 followed by Softmax (random weights, eval, frozen)."""
    return loaded.model


@pytest.fixture(scope="session")
def logit_model(loaded):
    return loaded.backbone


@pytest.fixture(params=list(METHODS), ids=list(METHODS))
def any_method(request: pytest.FixtureRequest) -> MethodSpec:
    """Every registered method in turn (a test using it runs once per :data:`METHODS` entry)."""
    return METHODS[request.param]


@pytest.fixture()
def images() -> torch.Tensor:
    """Three seeded 32x32 normalized images ``(3, 3, 32, 32)``."""
    gen = torch.Generator().manual_seed(1234)
    return torch.randn(3, 3, 32, 32, generator=gen)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative L2 error of ``a`` against reference ``b``."""
    a64, b64 = a.double(), b.double()
    return float((a64 - b64).norm() / b64.norm().clamp_min(1e-300))
