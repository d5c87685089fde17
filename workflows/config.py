"""Typed, frozen run configuration loaded from ``configs/<name>.toml``.

Every key is validated on load: unknown keys and bad values raise :class:`ConfigError` naming
the key and the file. Relative paths in a file resolve against that file's folder; paths given
on the command line resolve against the working directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pipeline.errors import ConfigError
from pipeline.methods import METHODS
from pipeline.precision import PRECISIONS

#: What ``[run] target`` may be: explain the predicted class, or the ground-truth label.
TARGETS = ("predicted", "label")
#: Generated layouts: no image files (``evidence`` reads its background photos from root).
GENERATED_LAYOUTS = ("synthetic", "evidence")
#: Keywords of ``[model] weights``; anything else is a state-dict path.
WEIGHT_KEYWORDS = ("imagenet", "auto", "random", "evidence")
LAYOUTS = ("auto", "class-folders", "flat-csv", "plain", *GENERATED_LAYOUTS)
HEADS = ("softmax", "logits")
CONFIG_DIR_ENV = "XAI_CONFIG_DIR"
DATA_DIR_ENV = "XAI_DATA_DIR"


def config_dir() -> Path:
    """Where ``DATASET=<name>`` configs live: ``$XAI_CONFIG_DIR`` or the repo's ``configs/``."""
    env = os.environ.get(CONFIG_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parent.parent / "configs"


def available_datasets() -> list[str]:
    """Names of the shipped configs."""
    return sorted(p.stem for p in config_dir().glob("*.toml"))


@dataclass(frozen=True)
class DatasetConfig:
    """``[dataset]``: where the images are and which of them to use."""

    name: str
    layout: str = "auto"
    root: Path | None = None
    labels_csv: str = "LOC_val_solution.csv"
    limit: int = 0
    per_class: int = 0
    count: int = 64
    resize: int = 256
    crop: int = 224
    max_pixels: int = 89_478_485
    #: ``layout = "evidence"`` only: plant a shortcut in this class (a shape name, e.g.
    #: "circle"): in ``shortcut_fraction`` of its images, train and test, a corner watermark
    #: replaces the object (see pipeline.evidence.Shortcut). Empty: none.
    shortcut: str = ""
    shortcut_fraction: float = 0.5


@dataclass(frozen=True)
class ModelConfig:
    """``[model]``: ``weights`` = imagenet | auto | random | a state-dict path; ``head``."""

    weights: str = "imagenet"
    head: str = "softmax"
    #: ``weights = "evidence"`` only: images the model trains on, and held-out images its
    #: accuracy is measured on (see pipeline.evidence_model).
    train_images: int = 3072
    val_images: int = 600


@dataclass(frozen=True)
class RunConfig:
    """``[run]``: output folder, device, precision, shard size, seed, samples per pass."""

    out: Path = Path("runs")
    device: str = "auto"
    precision: str = "fp32"
    shard_size: int = 32
    seed: int = 0
    max_batch: int = 0
    streaming: bool = True
    channels_last: bool = True
    fuse_bn: bool = False
    compile: bool = False
    #: The class each map explains: the model's prediction, or the image's label.
    target: str = "predicted"
    #: Relative completeness error |delta| / |F(x) - F(baseline)| above which status flags
    #: an image's IG map.
    completeness_warning: float = 0.05


@dataclass(frozen=True)
class RenderConfig:
    """``[render]``: contact-sheet layout."""

    images_per_sheet: int = 8
    colormap: str = "inferno"
    clip_percentile: float = 99.0
    signed: bool = False
    signed_colormap: str = "RdBu_r"
    overlay: bool = False
    tiles: bool = False


@dataclass(frozen=True)
class EvaluateConfig:
    """``[evaluate]``: which metrics the ``evaluate`` stage computes (none: the stage is off)."""

    metrics: tuple[str, ...] = ()
    #: Deletion/insertion: perturbation steps, and what removed pixels become.
    steps: int = 20
    baseline: str = "black"
    baseline_sigma: float = 10.0
    #: Model-parameter randomisation on the first N images (0: off).
    randomisation_images: int = 32
    #: Bootstrap resamples for the 95% intervals of the summary table.
    bootstrap: int = 1000


@dataclass(frozen=True)
class ReportConfig:
    """``[report]``: the static HTML report (``report/index.html``) and its explanation
    strategies (SpRAy: spectral clustering of each predicted class's normalized maps)."""

    enabled: bool = True
    #: Cluster a predicted class's maps only when it has at least this many images.
    min_images: int = 20
    #: Side of the downsampled maps the clustering compares.
    downsample: int = 28
    #: Nearest neighbours per map in the affinity graph.
    neighbors: int = 10
    #: The most clusters the eigengap may choose.
    max_clusters: int = 8
    #: Members shown per cluster on the strategies page.
    members: int = 8


@dataclass(frozen=True)
class Config:
    """A resolved, validated configuration."""

    dataset: DatasetConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    run: RunConfig = field(default_factory=RunConfig)
    methods: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    render: RenderConfig = field(default_factory=RenderConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    source: Path | None = None

    def model_classes(self) -> int:
        """How many classes the configured model has (the store's ``logits`` width)."""
        if self.model.weights == "evidence":
            from pipeline.evidence import SHAPES

            return len(SHAPES)
        return 1000

    def evidence_settings(self) -> Any:
        """The evidence model's :class:`~pipeline.evidence.TrainSettings` under this config
        (its images are the dataset's crop, its backgrounds the dataset's root)."""
        from pipeline.evidence import TrainSettings

        root = self.dataset.root
        shortcut = self.shortcut()
        return TrainSettings(images=self.model.train_images, val_images=self.model.val_images,
                             size=self.dataset.crop, seed=self.run.seed,
                             backgrounds=str(root) if root else "data/sample",
                             shortcut_label=shortcut.label,
                             shortcut_fraction=shortcut.fraction)

    def shortcut(self) -> Any:
        """The planted :class:`~pipeline.evidence.Shortcut` (off unless ``[dataset]
        shortcut`` names a class of the evidence layout)."""
        from pipeline.evidence import SHAPES, Shortcut

        d = self.dataset
        if not d.shortcut:
            return Shortcut()
        return Shortcut(SHAPES.index(d.shortcut), d.shortcut_fraction)

    @property
    def run_dir(self) -> Path:
        """``<out>/<dataset>/``."""
        return self.run.out / self.dataset.name

    @property
    def method_names(self) -> tuple[str, ...]:
        return tuple(self.methods)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (paths as strings), as saved next to the results."""
        return {
            "dataset": _plain(dataclasses.asdict(self.dataset)),
            "model": _plain(dataclasses.asdict(self.model)),
            "run": _plain(dataclasses.asdict(self.run)),
            "methods": {k: dict(v) for k, v in self.methods.items()},
            "render": _plain(dataclasses.asdict(self.render)),
            "evaluate": {k: list(v) if isinstance(v, tuple) else v
                         for k, v in dataclasses.asdict(self.evaluate).items()},
            "report": dataclasses.asdict(self.report),
            "source": str(self.source) if self.source else None,
        }


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}


def stable_hash(obj: Any) -> str:
    """A short, stable hash of a JSON-able value."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("dataset", "layout"): LAYOUTS,
    ("model", "head"): HEADS,
    ("run", "precision"): PRECISIONS,
    ("run", "target"): TARGETS,
}
_MINIMUM: dict[tuple[str, str], int] = {
    ("dataset", "limit"): 0, ("dataset", "per_class"): 0, ("dataset", "count"): 1,
    ("dataset", "resize"): 8, ("dataset", "crop"): 8, ("dataset", "max_pixels"): 1,
    ("run", "shard_size"): 1, ("run", "seed"): 0, ("run", "max_batch"): 0,
    ("model", "train_images"): 1, ("model", "val_images"): 1,
    ("evaluate", "steps"): 1, ("evaluate", "randomisation_images"): 0,
    ("evaluate", "bootstrap"): 0,
    ("render", "images_per_sheet"): 1,
    ("report", "min_images"): 3, ("report", "downsample"): 2, ("report", "neighbors"): 1,
    ("report", "max_clusters"): 1, ("report", "members"): 0,
}


#: Allowed (low, high] for float keys.
_RANGES: dict[tuple[str, str], tuple[float, float]] = {
    ("render", "clip_percentile"): (0.0, 100.0),
    ("run", "completeness_warning"): (0.0, float("inf")),
    ("evaluate", "baseline_sigma"): (0.0, float("inf")),
    ("dataset", "shortcut_fraction"): (0.0, 1.0),
}
#: Keys that were removed, with what to do instead.
_REMOVED: dict[tuple[str, str], str] = {
    ("render", "dpi"): "sheets are now drawn at the crop's pixel size; remove the key",
    ("run", "prefetch"): "device tasks now overlap reads and writes by themselves; remove the "
                         "key (see [run] streaming)",
}


def _err(where: str, section: str, key: str, problem: str) -> ConfigError:
    return ConfigError(f"{where}: [{section}] {key}: {problem}")


def _check_value(where: str, section: str, f: dataclasses.Field[Any], value: Any,
                 base: Path) -> Any:
    key = f.name
    annotation = str(f.type)
    if "Path" in annotation:
        if not isinstance(value, str) or not value:
            raise _err(where, section, key, f"expected a path string, got {value!r}")
        path = Path(value).expanduser()
        return path if path.is_absolute() else (base / path).resolve()
    if annotation.startswith("tuple"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _err(where, section, key, f"expected a list of strings, got {value!r}")
        return tuple(value)
    if annotation == "bool":
        if not isinstance(value, bool):
            raise _err(where, section, key, f"expected true or false, got {value!r}")
        return value
    if annotation == "float":
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise _err(where, section, key, f"expected a number, got {value!r}")
        low, high = _RANGES.get((section, key), (float("-inf"), float("inf")))
        if not low < value <= high:
            raise _err(where, section, key, f"expected a number in ({low:g}, {high:g}], "
                                            f"got {value!r}")
        return float(value)
    if annotation == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise _err(where, section, key, f"expected an integer, got {value!r}")
        low = _MINIMUM.get((section, key))
        if low is not None and value < low:
            raise _err(where, section, key, f"expected an integer >= {low}, got {value}")
        return value
    if not isinstance(value, str):
        raise _err(where, section, key, f"expected a string, got {value!r}")
    choices = _CHOICES.get((section, key))
    if choices and value not in choices:
        raise _err(where, section, key, f"expected one of {', '.join(choices)}, got {value!r}")
    return value


Where = Callable[[str, str], str]


def _did_you_mean(key: str, allowed: Sequence[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    return f"; did you mean `{prefix}{close[0]}`?" if close else ""


def _section(cls: type[Any], table: Any, section: str, where: Where, base: Path) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{where(section, '')}: [{section}] expected a table, got {table!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        if (section, key) in _REMOVED:
            raise ConfigError(f"{where(section, key)}: [{section}] {key}: no longer used: "
                              f"{_REMOVED[(section, key)]}.")
        if key not in fields:
            allowed = ", ".join(fields)
            hint = _did_you_mean(key, list(fields), f"{section}.")
            raise ConfigError(
                f"{where(section, key)}: unknown key `{section}.{key}`{hint} (in [{section}]; "
                f"allowed keys: {allowed})."
            )
        values[key] = _check_value(where(section, key), section, fields[key], value, base)
    return cls(**values)


def _device_ok(device: str) -> bool:
    if device in ("auto", "cpu", "cuda", "mps"):
        return True
    head, _, idx = device.partition(":")
    return head == "cuda" and idx.isdigit()


def _methods(table: Any, where: Where) -> dict[str, Mapping[str, Any]]:
    if not isinstance(table, dict) or not table:
        raise ConfigError(
            f"{where('methods', '')}: expected at least one [methods.<name>] table, got none. "
            f"Registered methods: {', '.join(METHODS)}."
        )
    resolved: dict[str, Mapping[str, Any]] = {}
    for name, params in table.items():
        if name not in METHODS:
            hint = _did_you_mean(name, list(METHODS), "methods.")
            raise ConfigError(
                f"{where('methods', name)}: unknown method {name!r} in [methods.{name}]{hint} "
                f"Registered methods: {', '.join(METHODS)}."
            )
        if not isinstance(params, dict):
            raise ConfigError(f"{where('methods', name)}: [methods.{name}] expected a table, "
                              f"got {params!r}")
        for key in params:
            if key not in METHODS[name].params:
                hint = _did_you_mean(key, list(METHODS[name].params), f"methods.{name}.")
                allowed = ", ".join(METHODS[name].params) or "none"
                raise ConfigError(
                    f"{where(f'methods.{name}', key)}: unknown key `methods.{name}.{key}`"
                    f"{hint} (allowed: {allowed})."
                )
        try:
            resolved[name] = MappingProxyType(METHODS[name].resolve(params))
        except ValueError as exc:
            bad = next((k for k in params if f"{k} " in str(exc) or f"{k}>" in str(exc)), "")
            raise ConfigError(f"{where(f'methods.{name}', bad)}: {exc}") from None
    return resolved


def _sources(path: Path, text: str, overrides: Sequence[str]) -> Where:
    """Who set ``section.key``: the ``--set`` that did, else the file (and line, if found)."""
    by_key = {}
    for override in overrides:
        parts, _ = parse_override(override)
        by_key[(".".join(parts[:-1]), parts[-1])] = override
        by_key.setdefault((".".join(parts[:-1]), ""), override)

    def where(section: str, key: str) -> str:
        if (section, key) in by_key:
            return f"--set {by_key[(section, key)]}"
        line = _line_of(text, section, key) if key else None
        return f"{path}, line {line}" if line else str(path)

    return where


def _line_of(text: str, section: str, key: str) -> int | None:
    """The line of ``key =`` inside ``[section]`` in a TOML text, if it is written plainly."""
    current = ""
    for number, line in enumerate(text.splitlines(), start=1):
        header = re.match(r"\s*\[([^\[\]]+)\]\s*(#.*)?$", line)
        if header:
            current = header.group(1).strip()
        elif current == section and re.match(rf"\s*{re.escape(key)}\s*=", line):
            return number
    return None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``section.key=value`` -> (``["section", "key"]``, value read as TOML, else as a string)."""
    key, sep, raw = text.partition("=")
    parts = [p.strip() for p in key.strip().split(".")]
    if not sep or len(parts) < 2 or not all(parts):
        raise ConfigError(
            f"--set {text!r}: expected section.key=value (e.g. run.shard_size=16 or "
            "methods.integrated_gradients.n_steps=32)."
        )
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return parts, value


def _check_override_keys(overrides: Sequence[str]) -> None:
    """``--set`` keys must exist: name the override and suggest the nearest key."""
    sections = {"dataset": DatasetConfig, "model": ModelConfig, "run": RunConfig,
                "render": RenderConfig, "evaluate": EvaluateConfig, "report": ReportConfig}
    for text in overrides:
        parts, _ = parse_override(text)
        dotted = ".".join(parts)
        if parts[0] in sections and len(parts) == 2:
            fields = [f.name for f in dataclasses.fields(sections[parts[0]])]
            if parts[1] not in fields and (parts[0], parts[1]) not in _REMOVED:
                hint = _did_you_mean(parts[1], fields, f"{parts[0]}.")
                raise ConfigError(f"--set {text}: unknown key `{dotted}`{hint}")
        elif parts[0] == "methods" and len(parts) == 3:
            if parts[1] not in METHODS:
                hint = _did_you_mean(parts[1], list(METHODS), "methods.")
                raise ConfigError(f"--set {text}: unknown method `methods.{parts[1]}`{hint}")
            params = list(METHODS[parts[1]].params)
            if parts[2] not in params:
                hint = _did_you_mean(parts[2], params, f"methods.{parts[1]}.")
                raise ConfigError(f"--set {text}: unknown key `{dotted}`{hint}")
        elif parts[0] not in (*sections, "methods"):
            hint = _did_you_mean(parts[0], [*sections, "methods"])
            raise ConfigError(f"--set {text}: unknown section `{parts[0]}`{hint}")


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``--set`` overrides to the raw TOML tables (copy)."""
    out = json.loads(json.dumps(raw, default=str))
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: {part!r} is not a table.")
            node = child
        node[parts[-1]] = value
    return out


def resolve_config_path(dataset: str | None, config: Path | None) -> Path:
    """The config file for ``--dataset NAME`` or ``--config FILE``."""
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


def load_config(
    path: Path,
    overrides: Sequence[str] = (),
    *,
    data_dir: Path | None = None,
    out: Path | None = None,
    weights: str | None = None,
    device: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Read, override and validate a config file.

    Precedence: command-line options > ``--set`` overrides > environment (``XAI_DATA_DIR``)
    > the file.

    Raises
    ------
    ConfigError
        Naming the file and the key, for TOML syntax errors, unknown keys and bad values.
    """
    env = os.environ if env is None else env
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read the config: {exc.strerror}") from None
    base = path.resolve().parent
    known = {"dataset", "model", "run", "methods", "render", "evaluate", "report"}
    for key in raw:
        if key not in known:
            raise ConfigError(
                f"{where}: unknown section or key {key!r}. Allowed: {', '.join(sorted(known))}."
            )
    cwd = Path.cwd()
    source = _sources(path, text, overrides)
    _check_override_keys(overrides)
    raw = apply_overrides(raw, overrides)
    set_paths = {tuple(parse_override(o)[0]) for o in overrides}
    dataset_table = dict(raw.get("dataset", {}))
    run_table = dict(raw.get("run", {}))
    # Values given on the command line are relative to the working directory, not the file.
    for table, sec, key in ((dataset_table, "dataset", "root"), (run_table, "run", "out")):
        if (sec, key) in set_paths and isinstance(table.get(key), str):
            table[key] = str((cwd / Path(table[key]).expanduser()).resolve())
    if data_dir is not None:
        dataset_table["root"] = str((cwd / data_dir.expanduser()).resolve())
    elif env.get(DATA_DIR_ENV) and ("dataset", "root") not in set_paths:
        dataset_table["root"] = str((cwd / Path(env[DATA_DIR_ENV]).expanduser()).resolve())
    if out is not None:
        run_table["out"] = str((cwd / out.expanduser()).resolve())
    if device is not None:
        run_table["device"] = device
    model_table = dict(raw.get("model", {}))
    if weights is not None:
        model_table["weights"] = weights
    dataset_table.setdefault("name", path.stem)
    dataset = _section(DatasetConfig, dataset_table, "dataset", source, base)
    model = _section(ModelConfig, model_table, "model", source, base)
    if model.weights not in WEIGHT_KEYWORDS:
        wpath = Path(model.weights).expanduser()
        if not wpath.is_absolute():
            wpath = (cwd if weights is not None else base) / wpath
        model = dataclasses.replace(model, weights=str(wpath))
    run = _section(RunConfig, run_table, "run", source, base)
    if not _device_ok(run.device):
        raise _err(source("run", "device"), "run", "device",
                   f"expected auto, cpu, cuda or cuda:N, got {run.device!r}")
    render = _section(RenderConfig, raw.get("render", {}), "render", source, base)
    evaluate = _section(EvaluateConfig, raw.get("evaluate", {}), "evaluate", source, base)
    report = _section(ReportConfig, raw.get("report", {}), "report", source, base)
    _check_metrics(source, evaluate)
    _check_shortcut(source, dataset)
    _check_colormap(source("render", "colormap"), "colormap", render.colormap)
    _check_colormap(source("render", "signed_colormap"), "signed_colormap",
                    render.signed_colormap)
    methods = _methods(raw.get("methods"), source)
    if dataset.layout != "synthetic" and dataset.root is None:
        raise _err(where, "dataset", "root",
                   f"expected the image folder (or --data-dir / ${DATA_DIR_ENV}), got none")
    if dataset.crop > dataset.resize:
        raise _err(source("dataset", "crop"), "dataset", "crop",
                   f"expected crop <= resize ({dataset.resize}), got {dataset.crop}")
    return Config(dataset=dataset, model=model, run=run, methods=methods, render=render,
                  evaluate=evaluate, report=report, source=path.resolve())


def _check_shortcut(source: Where, dataset: DatasetConfig) -> None:
    from pipeline.evidence import SHAPES

    if not dataset.shortcut:
        return
    if dataset.layout != "evidence":
        raise _err(source("dataset", "shortcut"), "dataset", "shortcut",
                   f"expected layout = \"evidence\" for a planted shortcut, got layout = "
                   f"{dataset.layout!r}; remove the key or generate the evidence dataset")
    if dataset.shortcut not in SHAPES:
        raise _err(source("dataset", "shortcut"), "dataset", "shortcut",
                   f"expected a class of the evidence dataset ({', '.join(SHAPES)}), got "
                   f"{dataset.shortcut!r}")


def _check_metrics(source: Where, evaluate: EvaluateConfig) -> None:
    from pipeline.metrics import FLIP_BASELINES, METRICS

    for name in evaluate.metrics:
        if name not in METRICS:
            hint = _did_you_mean(name, list(METRICS), "")
            raise _err(source("evaluate", "metrics"), "evaluate", "metrics",
                       f"unknown metric {name!r}{hint}; valid: {', '.join(METRICS)}")
    if evaluate.baseline not in FLIP_BASELINES:
        raise _err(source("evaluate", "baseline"), "evaluate", "baseline",
                   f"expected one of {', '.join(FLIP_BASELINES)}, got {evaluate.baseline!r}")


def _check_colormap(where: str, key: str, name: str) -> None:
    import matplotlib

    if name not in matplotlib.colormaps:
        examples = "inferno, viridis, magma, turbo" if key == "colormap" else \
            "RdBu_r, coolwarm, bwr, seismic"
        raise _err(where, "render", key,
                   f"expected a matplotlib colormap name (e.g. {examples}), got {name!r}")
