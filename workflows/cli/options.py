"""The options several commands share, and the run config they name together (a run folder,
``--dataset``, ``--config`` or ``--data-dir`` alone)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.attribution.method_registry import METHODS
from pipeline.errors import ConfigError
from pipeline.evaluation.metrics import default_metrics

DataDirOpt = Annotated[Path | None, typer.Option(
    "--data-dir", metavar="DIR", help="image folder (else $XAI_DATA_DIR, else the config's root)")]
DatasetOpt = Annotated[str | None, typer.Option("--dataset", "-d", metavar="NAME",
                                                help="configs/<NAME>.toml (default: sample)")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", metavar="FILE",
                                                help="a config file")]
OutOpt = Annotated[Path | None, typer.Option("--out", metavar="DIR",
                                             help="output root (run folder: DIR/NAME)")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", metavar="SECTION.KEY=VALUE",
    help="override a config value (the value is read as TOML)")]
DeviceOpt = Annotated[str | None, typer.Option(metavar="DEVICE",
                                               help="auto | cpu | cuda | cuda:N")]
SchedulerOpt = Annotated[str, typer.Option(metavar="SCHEDULER", help="as for `xai run`")]
RunDirArg = Annotated[Path | None, typer.Argument(
    metavar="RUN_DIR", help="a run folder (runs/NAME): its saved config.toml says the rest",
    show_default=False)]
NameOpt = Annotated[str | None, typer.Option(
    "--name", metavar="NAME", help="the run's name, its folder under --out (default: the "
    "dataset's name; with --data-dir alone, the folder's)")]
ClassesOpt = Annotated[Path | None, typer.Option(
    "--classes", metavar="FILE", help="a checkpoint's class names, one a line, in output "
    "order ([model] classes)")]
MethodOpt = Annotated[list[str] | None, typer.Option(
    "--method", metavar="METHOD", help=f"repeatable: add a method with its default parameters "
    f"({', '.join(METHODS)}); one the config already has keeps its own")]


EvaluateOpt = Annotated[bool, typer.Option(
    "--evaluate", help="turn on the evaluate stage with the metrics that need no mask "
    f"({', '.join(default_metrics())}), unless [evaluate] metrics already names some")]


def check_methods(names: list[str]) -> None:
    """Each ``--method`` names a registered method, else the registry's "Expected a method
    in [...], got 'x'; did you mean ...?" error, blamed on ``--method``."""
    for name in names:
        if name not in METHODS:
            message = METHODS.unknown_message(name)
            end = "" if message.endswith("?") else "."
            raise ConfigError(f"--method: {message}{end} Pass a registered name; "
                              "`xai run --help` lists them.")


def with_command_line_choices(cfg: Any, *, classes: Path | None = None,
                              methods: list[str] | None = None, evaluate: bool = False
                              ) -> Any:
    """``cfg`` with what ``--classes``, ``--method`` and ``--evaluate`` ask for.

    ``--classes`` replaces ``[model] classes`` (a path against the working directory, as
    every path given on the command line). ``--method`` adds each method the config does not
    have, with its defaults; one it has keeps its parameters. ``--evaluate`` turns on
    :func:`default_metrics` when ``[evaluate] metrics`` names none.

    Raises
    ------
    ConfigError
        A ``--classes`` file that does not exist, or an unknown ``--method``, named as given
        on the command line.
    """
    import dataclasses

    if classes is not None:
        path = classes.expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"--classes: expected a file of class names (one a line) at "
                              f"{classes}, but there is none.")
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, classes=path))
    if methods:
        check_methods(methods)
        added = {name: METHODS[name].resolve({}) for name in methods if name not in cfg.methods}
        if added:
            cfg = dataclasses.replace(cfg, methods={**cfg.methods, **added})
    if evaluate and not cfg.evaluate.metrics:
        cfg = dataclasses.replace(
            cfg, evaluate=dataclasses.replace(cfg.evaluate, metrics=default_metrics()))
    return cfg


def config_for_command(dataset: str | None, config: Path | None, sets: list[str] | None,
               run_dir: Path | None = None, **kw: Any) -> Any:
    """The config of a run folder, ``--config``, ``--dataset``, or (``--data-dir`` alone)
    your own images, named after their folder unless ``name`` says otherwise.

    ``kw`` are :func:`workflows.config.loading.load_config`'s keywords (``out``,
    ``data_dir``, ``name``, ...), the options as given (None: not given).
    """
    from workflows.config.loading import load_config
    from workflows.config.paths import own_images_config, resolve_config_path

    if run_dir is not None:
        if dataset is not None or config is not None:
            raise ConfigError(f"Expected either a run folder ({run_dir}) or --dataset/--config, "
                              "got both. The run folder's config.toml already says which "
                              "dataset; drop one of them.")
        path = resolve_config_path(None, None, run_dir)
        # The folder is the run, wherever it was moved to.
        if kw.get("out") is None:
            kw["out"] = run_dir.resolve().parent
        kw["name"] = kw.get("name") or run_dir.resolve().name
        return load_config(path, sets or [], **kw)
    data_dir = kw.get("data_dir")
    if dataset is None and config is None and data_dir is not None:
        path = own_images_config()
        kw["name"] = kw.get("name") or data_dir.expanduser().resolve().name
        return load_config(path, sets or [], **kw)
    return load_config(resolve_config_path(dataset, config), sets or [], **kw)
