"""The ``xai`` command line: the typer app, its commands (each module under
:mod:`workflows.cli` adds its own), the commands of the ``xai.commands`` entry points, and
:func:`main`, the installed script.

The commands only parse and call: what they compute and print lives in
:mod:`workflows.commands` and :mod:`workflows.runner`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from typing import Any

import typer

from workflows.cli import (
    compare_command,
    explain_command,
    run_commands,
    run_folder_commands,
    setup_commands,
)
from workflows.cli.console import fail


def _argument_type(self: Any, ctx: Any) -> str | None:
    """An argument's help shows its metavar alone ("RUN_DIR", "IMAGE..."), not typer's
    ``<path>`` or ``<list[Path]>`` after it."""
    return None if self.metavar else _typer_argument_type(self, ctx)


_typer_argument_type = typer.core.TyperArgument.display_type_rich
typer.core.TyperArgument.display_type_rich = _argument_type  # type: ignore[method-assign]

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Batch gradient-based explanations of an image classifier (ImageNet "
                       "ResNet18 by default) over whole datasets.")

# In the order `xai --help` lists them.
for _commands in (run_commands, run_folder_commands, compare_command, explain_command,
                  setup_commands):
    _commands.register(app)

#: Entry-point group of commands that live outside the package (``xai bench``: the
#: benchmarks of a source checkout). Each entry is ``register(app)``, adding its commands.
COMMANDS_GROUP = "xai.commands"


def _plugin_commands() -> None:
    """Add the commands of the ``xai.commands`` entry points; one whose module is not there
    (an installed wheel has no ``benchmarks/``) becomes a command that says so."""
    import importlib.metadata

    for entry in importlib.metadata.entry_points(group=COMMANDS_GROUP):
        try:
            entry.load()(app)
        except ImportError as exc:
            missing_command(app, entry.name, entry.value, exc)


def missing_command(app: typer.Typer, name: str, where: str, exc: ImportError) -> None:
    """Add ``name`` to ``app`` as a command that fails saying ``where`` (its entry point) could
    not be imported, and that it comes with a source checkout."""

    def missing() -> None:
        raise fail(f"Expected {where} for `xai {name}`, got {exc}. It comes with a source "
                   "checkout of the project (a clone of the repository), not with the "
                   "installed package.")

    app.command(name, help=f"(not available here: {where} is missing)")(missing)


_plugin_commands()


def exit_code(exc: SystemExit) -> int:
    """The process exit status of a ``SystemExit`` (``None``: 0; a message: printed, 1)."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def exit_now(code: int) -> None:
    """End the process once the command is done, without the interpreter's teardown.

    Freeing torch's and the other modules' objects at exit takes seconds after a large run
    (``docs/design.md``), after every file was written: time a user would wait for nothing,
    which would leave the printed "whole run" time short of the process's. What the normal exit
    does first still happens, in its order: non-daemon threads are joined (with the
    executors' own exit hooks), the ``atexit`` handlers run and the streams are flushed.
    Only the final freeing is skipped (the OS frees the memory). A Ctrl-C during these steps
    ends the process at once with 130, without a traceback from whichever handler it
    interrupted (the command itself is already over).
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, lambda *_: os._exit(130))
    shutdown = getattr(threading, "_shutdown", None)  # joins non-daemon threads, as at exit
    if shutdown is not None:
        shutdown()
    else:  # pragma: no cover - every CPython we support has it
        for t in threading.enumerate():
            if t is not threading.main_thread() and not t.daemon:
                t.join()
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def main() -> None:  # pragma: no cover - entry point
    """The ``xai`` script: run the command, then end the process with its status
    (:func:`exit_now`); ``XAI_TIMING`` set prints the command's wall time."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    t0 = time.perf_counter()
    code = 0
    try:
        app()
    except SystemExit as exc:
        code = exit_code(exc)
    finally:
        if os.environ.get("XAI_TIMING"):
            print(f"xai: {time.perf_counter() - t0:.2f}s", file=sys.stderr)
    exit_now(code)
