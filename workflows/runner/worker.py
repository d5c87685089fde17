"""What a worker process keeps between shard tasks: its device slot, its models, its identity.

A device task carries a :class:`ModelSpec` (weights, head, precision, engine options), never a
model; the worker loads the model once per spec and caches it, keyed by the frozen spec itself
and the device it resolved to, so two specs that differ in anything (the precision too) never
share a model. The same code serves the coordinator's own process (in-process schedulers),
``LocalCluster`` workers and any Dask worker on another machine.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import WeightsError, XaiError

#: This process's device slot: set by the device-slot worker plugin on ``local:N`` workers (the
#: N-th GPU when several are visible), None elsewhere (the default device of the process).
_SLOT: dict[str, int | None] = {"gpu": None}
_MODELS: dict[tuple[ModelSpec, str], WorkerModel] = {}
_MODELS_LOCK = threading.Lock()
_DEVICE_LOCKS: dict[str, threading.Lock] = {}


@dataclass(frozen=True)
class ModelSpec:
    """Everything a worker needs to build the model a run uses (picklable, hashable, no
    tensors): the cache key of :func:`model_for`."""

    weights: str
    weights_id: str
    head: str
    seed: int
    device: str
    precision: str
    channels_last: bool
    fuse_bn: bool
    compile: bool
    max_batch: int
    crop: int
    #: ``weights = "evidence"``: the training settings (a TrainSettings), else None.
    evidence: Any = None
    arch: str = "resnet18"
    #: The class names the coordinator resolved (a checkpoint's: the workers use the same).
    classes: tuple[str, ...] = ()
    #: :class:`pipeline.models.architectures.Preprocessing` (None: the architecture's).
    preprocessing: Any = None


@dataclass
class WorkerModel:
    """A loaded model on this worker's device, optimized and wrapped for the run's precision,
    with its planned batch size. ``model`` has the run's head; ``backbone`` gives logits."""

    model: Any
    backbone: Any
    device: Any
    max_batch: int
    weights_id: str
    classes: tuple[str, ...] = ()
    #: What the engine does on this model, in words: which optimisations are on, and why
    #: the others are off (kept in every record of a device stage and in the summary).
    facts: dict[str, str] = field(default_factory=dict)
    #: ``model`` and ``backbone`` as the methods that hook modules need them (without BatchNorm
    #: folding and compilation, whose traced graphs call no modules); they are ``model`` and
    #: ``backbone`` themselves when neither is on.
    hookable: Any = None
    hookable_backbone: Any = None

    def for_method(self, hooks: bool, head: bool = True) -> Any:
        """The model a method runs on: with the head (``model``) or without (``backbone``),
        hookable when the method ``hooks`` modules."""
        if hooks:
            return self.hookable if head else self.hookable_backbone
        return self.model if head else self.backbone


def set_gpu_slot(index: int | None) -> None:
    _SLOT["gpu"] = index


def resolve_device(request: str) -> Any:
    """The torch device for ``request`` on this worker (or in this process).

    ``cpu`` and ``cuda:N`` are taken as they are. ``cuda`` and ``auto`` mean this worker's own
    GPU: its slot on a ``local:N`` cluster, else the process's default (under dask-cuda, or
    with ``CUDA_VISIBLE_DEVICES`` per worker, that is the worker's GPU). ``auto`` without a GPU
    is the CPU.
    """
    import torch

    if request == "cpu" or request.startswith("cuda:"):
        dev = torch.device(request)
    elif torch.cuda.is_available():
        slot = _SLOT["gpu"]
        dev = torch.device("cuda", slot % torch.cuda.device_count() if slot is not None else 0)
    elif request == "auto":
        dev = torch.device("cpu")
    else:
        dev = torch.device(request)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from pipeline.errors import ConfigError

        raise ConfigError(
            f"Expected a CUDA device for --device {request} on {socket.gethostname()}, but "
            "torch sees none there. Use --device cpu or auto, or run the device stages on GPU "
            "workers (--scheduler tcp://...)."
        )
    return dev


def model_for(spec: ModelSpec) -> WorkerModel:
    """This worker's model for ``spec``: loaded and optimized once, then cached."""
    device = resolve_device(spec.device)
    key = (spec, str(device))
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = _build(spec, device)
        return _MODELS[key]


def _build(spec: ModelSpec, device: Any) -> WorkerModel:
    import dataclasses

    from pipeline.attribution.accel import for_precision, optimize
    from pipeline.models.classifier import load_model

    loaded = load_model(spec.weights, spec.head, seed=spec.seed, device=device,
                        evidence=spec.evidence, arch=spec.arch, classes=spec.classes or None,
                        preprocessing=spec.preprocessing)
    if loaded.weights_id != spec.weights_id:
        raise WeightsError(
            f"Expected weights {spec.weights_id} on {socket.gethostname()} (as the coordinator "
            f"loaded them), got {loaded.weights_id}. Put the same weights file on every worker "
            "(see README, Model weights)."
        )
    opts = {"channels_last": spec.channels_last, "fuse_bn": spec.fuse_bn,
            "compile": spec.compile}
    loaded_model, loaded_backbone = loaded.model, loaded.backbone
    model = optimize(loaded.model, device, **opts)
    # With the logits head they are one network: copy (and compile) it once.
    backbone = model if loaded.backbone is loaded.model else optimize(loaded.backbone, device,
                                                                      **opts)
    # fp32-fwd: forward strict, backward TF32 (attribution only; predict has no backward).
    model = for_precision(model, spec.precision, device)
    loaded = dataclasses.replace(loaded, model=model, backbone=backbone)
    max_batch, how = (spec.max_batch, "[run] max_batch") if spec.max_batch else \
        planned_pass(spec, model, device)
    facts = engine_facts(model, spec, max_batch, how)
    hookable, hookable_backbone = model, backbone
    if spec.fuse_bn or spec.compile:
        plain = {"channels_last": spec.channels_last}
        hookable = for_precision(optimize(loaded_model, device, **plain), spec.precision,
                                 device)
        hookable_backbone = (hookable if loaded_backbone is loaded_model
                             else optimize(loaded_backbone, device, **plain))
        facts["hook methods"] = ("without fuse_bn and compile (Grad-CAM, guided backprop "
                                 "and DeepLift hook the network's modules)")
    return WorkerModel(model=model, backbone=backbone, device=device, max_batch=max_batch,
                       weights_id=loaded.weights_id, classes=tuple(loaded.classes),
                       facts=facts, hookable=hookable, hookable_backbone=hookable_backbone)


def planned_pass(spec: ModelSpec, model: Any, device: Any) -> tuple[int, str]:
    """Samples per pass, and how they were chosen: on a CPU (no budget set) timed among the
    sizes that fit an eighth of the machine's memory, once per model and machine, and
    recorded in the cache (``$XAI_CACHE_DIR/passes/``; the first worker measures under a file
    lock, the others and every later run and resume read its record); elsewhere planned from
    memory."""
    import fcntl
    import hashlib
    import json

    import torch

    from pipeline.attribution.memory_planner import (
        cpu_candidates,
        measure_pass_size,
        plan_max_batch,
    )
    from pipeline.models.sources.evidence_training import cache_dir

    shape = (3, spec.crop, spec.crop)
    if device.type != "cpu" or os.environ.get("XAI_CPU_MEMORY_BUDGET"):
        return plan_max_batch(model, shape, device), "planned from memory"
    candidates = cpu_candidates(model, shape)
    if len(candidates) < 2:
        return candidates[0], "planned from memory"
    facts = {"arch": spec.arch, "weights_id": spec.weights_id, "head": spec.head,
             "precision": spec.precision, "channels_last": spec.channels_last,
             "fuse_bn": spec.fuse_bn, "compile": spec.compile, "shape": list(shape),
             "host": socket.gethostname(), "threads": torch.get_num_threads(),
             "candidates": list(candidates)}
    key = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache_dir() / "passes"
    folder.mkdir(parents=True, exist_ok=True)
    # Named after the model a store records (a Hugging Face class, an exported program), not
    # the config's arch, which such weights override.
    from pipeline.models.sources import recorded_arch

    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", recorded_arch(spec.arch, spec.weights))
    path = folder / f"{name}-{key}.json"
    with open(folder / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return int(json.loads(path.read_text())["max_batch"]), f"timed, from {path}"
        except (OSError, ValueError, KeyError, TypeError):
            pass
        best, seconds = measure_pass_size(_ig_pass(model, shape, device), candidates)
        from workflows.runner.disk_writes import atomic_write_json

        atomic_write_json(path, {**facts, "max_batch": best, "seconds_per_sample": {
            str(k): round(v, 6) for k, v in seconds.items()},
            "measured": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return best, f"timed among {', '.join(map(str, candidates))}, recorded in {path}"


def _ig_pass(model: Any, shape: tuple[int, ...], device: Any) -> Any:
    """``run(size)``: one pass of ``size`` samples of the engine's IG on a seeded image (one
    image, ``n_steps = size``: one chunk), what the attribute stage's passes are."""
    import torch

    from pipeline.attribution.path_engine import integrated_gradients

    x = torch.randn((1, *shape), generator=torch.Generator().manual_seed(0)).to(device)
    base = torch.zeros_like(x)
    with torch.no_grad():
        target = model(x).argmax(1)

    def run(size: int) -> Any:
        return integrated_gradients(model, x, target, base, size, max_batch=size)

    return run


def engine_facts(model: Any, spec: ModelSpec, max_batch: int,
                 how: str = "planned from memory") -> dict[str, str]:
    """Each engine option on the model, in words: on, off (why), or fallen back (why)."""
    from pipeline.attribution.accel import compile_state
    from pipeline.attribution.stem import describe_stem

    return {
        "arch": spec.arch,
        "affine stem": describe_stem(model),
        "channels_last": "on" if spec.channels_last else "off ([run] channels_last = false)",
        "fuse_bn": "on" if spec.fuse_bn else "off ([run] fuse_bn = false)",
        "compile": compile_state(model) if spec.compile else "off ([run] compile = false)",
        "precision": spec.precision,
        "max_batch": f"{max_batch} samples per pass ({how})",
    }


def device_lock(device: Any) -> threading.Lock:
    """One lock per device in this process: two device tasks may overlap their reads and
    writes, but only one computes at a time (memory is planned for one)."""
    with _MODELS_LOCK:
        return _DEVICE_LOCKS.setdefault(str(device), threading.Lock())


def identity(device: Any = None) -> dict[str, Any]:
    """Who ran a task: Dask worker address (or ``local``), host, pid and device."""
    address = "local"
    try:
        from distributed import get_worker

        address = get_worker().address
    except (ImportError, ValueError):
        pass
    return {"address": address, "host": socket.gethostname(), "pid": os.getpid(),
            "device": str(device) if device is not None else "cpu"}


def probe(run_dir: str, token: str) -> dict[str, Any]:
    """Run on every worker before any work: can it see the run folder and the probe file?"""
    path = Path(run_dir) / token
    seen = path.is_file() and path.read_text() == token
    return {"seen": seen, **identity()}


def describe_error(exc: BaseException) -> str:
    """A one-line description of a task's failure, for the coordinator's message."""
    if isinstance(exc, XaiError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def now() -> float:
    return time.time()
