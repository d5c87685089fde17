"""Where configs live: the shipped ``configs/``, a run folder's saved ``config.toml``, and
the file behind ``--dataset NAME``, ``--config FILE`` or a run folder."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.errors import ConfigError

#: The environment variable that moves ``configs/`` (tests, installed copies).
CONFIG_DIR_ENV = "XAI_CONFIG_DIR"
#: The environment variable that gives ``[dataset] root`` when the command line does not.
DATA_DIR_ENV = "XAI_DATA_DIR"
#: The resolved config a run saves in its folder; later commands read it back.
RUN_CONFIG = "config.toml"
#: The config for ``xai run --data-dir DIR`` without ``--dataset`` or ``--config`` (not a
#: dataset of its own: it has no folder until ``--data-dir`` gives one).
OWN_IMAGES = "own"


def config_dir() -> Path:
    """Where ``DATASET=<name>`` configs live: ``$XAI_CONFIG_DIR`` or the repo's ``configs/``."""
    env = os.environ.get(CONFIG_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2] / "configs"


def available_datasets() -> list[str]:
    """Names of the shipped configs."""
    return sorted(p.stem for p in config_dir().glob("*.toml"))


def own_images_config() -> Path:
    """``configs/templates/own.toml``."""
    return config_dir() / "templates" / f"{OWN_IMAGES}.toml"


def run_config_path(run_dir: Path) -> Path:
    """The saved config of the run in ``run_dir``; a :class:`ConfigError` when it is no run."""
    path = run_dir / RUN_CONFIG
    if not path.is_file():
        why = "that folder does not exist" if not run_dir.exists() else (
            "it is a file" if run_dir.is_file() else f"it holds no {RUN_CONFIG}")
        raise ConfigError(
            f"Expected a run folder at {run_dir} (one that `xai run` made, with its "
            f"{RUN_CONFIG}), but {why}. Pass a folder under runs/, e.g. runs/sample, or name "
            "the dataset with --dataset NAME.")
    return path


def resolve_config_path(dataset: str | None, config: Path | None,
                        run_dir: Path | None = None) -> Path:
    """The config file for a run folder, ``--config FILE`` or ``--dataset NAME``."""
    if run_dir is not None:
        return run_config_path(run_dir)
    if config is not None:
        if not config.is_file():
            raise ConfigError(f"Expected a config file at {config}, but there is none.")
        return config
    name = dataset or "sample"
    path = config_dir() / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(available_datasets()) or "none"
        raise ConfigError(
            f"Expected a dataset config {path}, but there is none. Known datasets: {known}. "
            "Add configs/<name>.toml or pass --config FILE."
        )
    return path
