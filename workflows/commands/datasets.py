"""``xai datasets``: the datasets ``--dataset NAME`` knows, whether their images are there,
and what each one's last run used."""

from __future__ import annotations

import json
from pathlib import Path

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.errors import XaiError


def print_datasets(out: Console) -> None:
    """A table of the configs in ``configs/`` (layout, root, whether it is found, weights,
    how many methods), then one line per dataset with a run: a narrow terminal squeezes
    table columns to "r…", a line keeps the whole path."""
    from workflows.config.loading import load_config
    from workflows.config.paths import available_datasets, config_dir

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    table.add_column("name", no_wrap=True)
    for col in ("layout", "root", "found", "weights", "methods"):
        table.add_column(col, no_wrap=col == "root")
    runs: list[str] = []
    for name in available_datasets():
        path = config_dir() / f"{name}.toml"
        try:
            cfg = load_config(path)
        except XaiError as exc:
            table.add_row(name, "[red]invalid[/]", str(exc)[:60], "", "", "")
            continue
        root = cfg.dataset.root
        found = "generated" if cfg.dataset.layout == "synthetic" else (
            "yes" if root and root.is_dir() else "[red]missing[/]")
        shown = root
        if root is not None and root.is_relative_to(Path.cwd()):
            shown = root.relative_to(Path.cwd())
        table.add_row(name, cfg.dataset.layout, str(shown or "-"), found, cfg.model.weights,
                      str(len(cfg.method_names)))
        last = last_run(cfg.run_dir)
        if last:
            runs.append(f"{name}: {last}")
    out.print(table)
    for line in runs:
        out.print(line)


def last_run(run_dir: Path) -> str:
    """What the run in ``run_dir`` used, from the store's attributes (read as JSON, fast);
    empty when there is no run."""
    try:
        attrs = json.loads((run_dir / "store.zarr" / "zarr.json").read_text())["attributes"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    where = escape(str(run_dir))
    if attrs.get("random_weights"):
        return (f"the run in {where} used [bold red]random weights[/] "
                f"({escape(str(attrs.get('weights_id', '')))}): its maps say nothing about a "
                "real model")
    return f"the run in {where} used {escape(str(attrs.get('weights_id', '?')))}"
