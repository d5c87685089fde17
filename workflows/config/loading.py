"""Load ``configs/<name>.toml`` into a typed, frozen :class:`Config`, validated on load.

Unknown keys and bad values raise :class:`ConfigError` naming the key and the file and line
(or the ``--set`` override that wrote it). Relative paths in a file resolve against that
file's folder; paths given on the command line resolve against the working directory.

The steps: read the file, apply the ``--set`` overrides to its tables, check every name
(:mod:`workflows.config.names`), write the command-line options in, validate each section
(:mod:`workflows.config.sections`) and each method's parameters (the method registry), fill
the preprocessing the config leaves unsaid from the model's, then the checks of keys
together.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from pipeline.attribution.method_registry import METHODS
from pipeline.errors import ConfigError
from pipeline.models.sources import is_weights_path
from workflows.config.names import check_names
from workflows.config.origins import Origins, key_error, no_methods
from workflows.config.overrides import (
    apply_command_line,
    apply_overrides,
    parse_override,
)
from workflows.config.paths import (
    DATA_DIR_ENV,
)
from workflows.config.run_config import Config
from workflows.config.sections import (
    BASE_FOLDER,
    SECTIONS,
    DatasetConfig,
    ModelConfig,
)

#: A validator per section (validating through it passes the config file's folder on, for
#: relative paths).
_VALIDATORS: dict[str, TypeAdapter[Any]] = {name: TypeAdapter(cls)
                                            for name, cls in SECTIONS.items()}


def _read(path: Path) -> tuple[str, dict[str, Any]]:
    """A config file's text and tables."""
    try:
        text = path.read_text(encoding="utf-8")
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc.strerror}") from None


def _section(name: str, table: Mapping[str, Any], where: Origins, base: Path) -> Any:
    """Validate section ``name`` from its table (whose names :func:`check_names` checked).

    Of several bad keys, the one written first is reported.
    """
    try:
        return _VALIDATORS[name].validate_python(dict(table),
                                                 context={BASE_FOLDER: base})
    except ValidationError as exc:
        order = list(table)
        errors = exc.errors()
        first = min(errors, key=lambda e: order.index(e["loc"][0])
                    if e["loc"] and e["loc"][0] in order else len(order))
        key = str(first["loc"][0]) if first["loc"] else ""
        raise key_error(where(name, key), name, key, first["msg"]) from None


def _methods(table: Mapping[str, Any] | None, where: Origins) -> dict[str, Mapping[str, Any]]:
    """Each ``[methods.<name>]`` table resolved by its registry entry, defaults filled in."""
    if not table:
        raise no_methods(where("methods"), METHODS)
    resolved: dict[str, Mapping[str, Any]] = {}
    for name, params in table.items():
        spec = METHODS[name]
        # Each key on its own first, so that a bad value is reported at its line.
        for key, value in params.items():
            param = spec.param(key)  # check_names made sure it names one
            problem = param.check(key, value) if param is not None else None
            if problem:
                raise ConfigError(f"{where('methods', name, key)}: [methods.{name}] {problem}")
        try:
            resolved[name] = spec.resolve(params)
        except ValueError as exc:  # the method's check of its keys together
            bad = next((k for k in params if f"{k} " in str(exc) or f"{k}>" in str(exc)), None)
            entry = ("methods", name, bad) if bad else ("methods", name)
            raise ConfigError(f"{where(*entry)}: {exc}") from None
    return resolved


def _check_dataset(dataset: DatasetConfig, where: Origins) -> None:
    """The ``[dataset]`` rules that involve more than one key (after the preprocessing is
    filled in: ``crop`` is checked against the model's ``resize`` when the file sets none)."""
    if dataset.shortcut and dataset.layout != "evidence":
        raise key_error(where("dataset", "shortcut"), "dataset", "shortcut",
                        f"expected layout = \"evidence\" for a planted shortcut, got layout = "
                        f"{dataset.layout!r}; remove the key or generate the evidence dataset")
    if dataset.layout != "synthetic" and dataset.root is None:
        raise key_error(str(where.path), "dataset", "root",
                        f"expected the image folder (or --data-dir / ${DATA_DIR_ENV}), got none")
    if dataset.crop > dataset.resize:
        raise key_error(where("dataset", "crop"), "dataset", "crop",
                        f"expected crop <= resize ({dataset.resize}), got {dataset.crop}")


def _weights_path(model: ModelConfig, base: Path, from_command_line: bool) -> ModelConfig:
    """A weights file made absolute: against the working directory if given as an option,
    else against the config's folder."""
    if not is_weights_path(model.weights):
        return model
    path = Path(model.weights).expanduser()
    if not path.is_absolute():
        path = (Path.cwd() if from_command_line else base) / path
    return dataclasses.replace(model, weights=str(path))


def _preprocessing(sections: dict[str, Any], tables: Mapping[str, Any], where: Origins
                   ) -> None:
    """Fill what the config leaves unsaid of the preprocessing from the model's own.

    ``[dataset] resize``/``crop`` and ``[model] mean``/``std``/``interpolation`` come from
    torchvision's ``transforms()`` of the architecture's published weights (ImageNet's for
    an exported program and the evidence model), so that the resolved config says what was
    done.
    """
    from pipeline.models.sources import preprocessing_for

    dataset, model = sections["dataset"], sections["model"]
    try:
        prep = preprocessing_for(model.arch, model.weights)
    except ConfigError as exc:
        raise ConfigError(f"{where('model', 'arch')}: {exc}") from None
    given = tables.get("dataset", {})
    sections["dataset"] = dataclasses.replace(
        dataset, resize=dataset.resize if "resize" in given else prep.resize,
        crop=dataset.crop if "crop" in given else prep.crop)
    sections["model"] = dataclasses.replace(
        model, mean=model.mean or prep.mean, std=model.std or prep.std,
        interpolation=model.interpolation or prep.interpolation)


def _option_origins(overrides: Sequence[str], env: Mapping[str, str], *,
                    data_dir: Path | None, out: Path | None, weights: str | None,
                    device: str | None, arch: str | None) -> dict[tuple[str, ...], str]:
    """The entries the command-line options (and ``$XAI_DATA_DIR``) write, each with the
    option as typed, in the precedence :func:`apply_command_line` gives them. The run's name
    is left out: a run folder or ``--data-dir`` names it as often as ``--name`` does."""
    given: dict[tuple[str, ...], str] = {}
    for entry, option, value in ((("dataset", "root"), "--data-dir", data_dir),
                                 (("run", "out"), "--out", out),
                                 (("model", "weights"), "--weights", weights),
                                 (("run", "device"), "--device", device),
                                 (("model", "arch"), "--arch", arch)):
        if value is not None:
            given[entry] = f"{option} {value}"
    set_entries = {tuple(parse_override(o)[0]) for o in overrides}
    if (data_dir is None and env.get(DATA_DIR_ENV)
            and ("dataset", "root") not in set_entries):
        given["dataset", "root"] = f"${DATA_DIR_ENV}={env[DATA_DIR_ENV]}"
    return given


def load_config(
    path: Path,
    overrides: Sequence[str] = (),
    *,
    data_dir: Path | None = None,
    out: Path | None = None,
    weights: str | None = None,
    device: str | None = None,
    env: Mapping[str, str] | None = None,
    arch: str | None = None,
    name: str | None = None,
) -> Config:
    """Read, override and validate a config file.

    Precedence: command-line options > ``--set`` overrides > environment (``XAI_DATA_DIR``)
    > the file.

    Raises
    ------
    ConfigError
        Naming the file and the key (or the ``--set`` override), for TOML syntax errors,
        unknown keys and bad values.
    """
    env = os.environ if env is None else env
    text, written = _read(path)
    where = Origins(path, text, written, overrides,
                    _option_origins(overrides, env, data_dir=data_dir, out=out, weights=weights,
                                    device=device, arch=arch))
    tables = apply_overrides(written, overrides)
    check_names(tables, where)
    apply_command_line(tables, overrides, env, data_dir=data_dir, out=out, weights=weights,
                       device=device, arch=arch, name=name)
    tables["dataset"].setdefault("name", path.stem)
    base = path.resolve().parent
    sections = {section: _section(section, tables.get(section, {}), where, base)
                for section in SECTIONS}
    sections["model"] = _weights_path(sections["model"], base, weights is not None)
    _preprocessing(sections, tables, where)
    methods = _methods(tables.get("methods"), where)
    _check_dataset(sections["dataset"], where)
    return Config(methods=methods, source=path.resolve(), **sections)
