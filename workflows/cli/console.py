"""Where the commands write: results to standard output, progress and errors to standard
error, and the one way a command ends on an error."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

#: Progress bars, warnings and errors (standard error).
console = Console(stderr=True, soft_wrap=True)
#: What a command reports (standard output).
out = Console(soft_wrap=True)


def fail(exc: BaseException | str, code: int = 2) -> typer.Exit:
    """Print ``exc`` as an error and return the exit to raise (status ``code``)."""
    # escape: messages quote config sections such as "[run]", which rich would eat as markup
    console.print(f"[bold red]error:[/] {escape(str(exc))}")
    return typer.Exit(code)
