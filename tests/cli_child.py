"""What the tests' fork server preloads, and what each of its children runs: one ``xai``
command, as ``python -m workflows`` would, in a process of its own.

A fresh ``python -m workflows`` spends about four seconds importing torch, torchvision,
captum, zarr and the project before it does anything; the crash and interrupt tests start
a dozen of them. Children of a fork server that imported all of that once (and ran no torch
op, so no thread pool is copied) start in milliseconds and are still separate processes a
test can SIGKILL or interrupt (``tests.workflow_helpers.run_subprocess``).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

# Imported here, in the fork server, so that its children have them already.
import captum.attr  # noqa: F401
import torch
import torchvision  # noqa: F401
import zarr  # noqa: F401

import pipeline.attribution.method_registry
import pipeline.models.classifier  # noqa: F401
import workflows.cli.app
import workflows.runner.run
import workflows.stages


def run_command(args: Sequence[str]) -> int:
    """``xai ARGS``: its exit code (typer ends with SystemExit)."""
    sys.argv = ["xai", *args]
    try:
        workflows.cli.app.main()
    except SystemExit as end:
        return end.code if isinstance(end.code, int) else (0 if end.code is None else 1)
    return 0


def child(target: Callable[..., int | None], args: Sequence[Any], env: Mapping[str, str],
          output: str, cwd: str) -> None:
    """Run ``target(*args)`` as a fresh process would: ``env`` as the environment, stdout and
    stderr into ``output``, Ctrl-C a KeyboardInterrupt (a suite started as a background job
    inherits SIGINT ignored), ``cwd`` as the folder; exit with its code."""
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ.clear()
    os.environ.update(env)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(cwd)
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    code = 1
    try:
        code = int(target(*args) or 0)
    except KeyboardInterrupt:
        code = 130
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
