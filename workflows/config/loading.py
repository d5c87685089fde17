"""Typed, frozen run configuration loaded from ``configs/<name>.toml``.

Every key is validated on load: unknown keys and bad values raise :class:`ConfigError` naming
the key and the file (or the ``--set`` override that wrote it). Relative paths in a file resolve
against that file's folder; paths given on the command line resolve against the working
directory.

Each key's rule (allowed choices, minimum, range, a check function) sits next to its field, in
``dataclasses.field(metadata={"rule": Rule(...)})`` (see :func:`key`); keys that were removed
are listed, with what to do instead, in the ``REMOVED`` class variable of their section. A
:class:`Config` and its sections are frozen and can be pickled (``Config.methods`` is a
:class:`FrozenMap`), so that worker processes can receive one.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from pipeline.attribution.precision import PRECISIONS
from pipeline.attribution.registry import METHODS
from pipeline.errors import ConfigError
from pipeline.models.checkpoints import HEADS, WEIGHT_KEYWORDS
from pipeline.store.encoding import ATTRIBUTION_DTYPES, NORMALIZED_DTYPES, STORE_LAYOUTS

#: What ``[run] target`` may be: explain the predicted class, or the ground-truth label.
TARGETS = ("predicted", "label")
#: Generated layouts: no image files (``evidence`` reads its background photos from root).
GENERATED_LAYOUTS = ("synthetic", "evidence")
LAYOUTS = ("auto", "class-folders", "flat-csv", "plain", *GENERATED_LAYOUTS)
CONFIG_DIR_ENV = "XAI_CONFIG_DIR"
DATA_DIR_ENV = "XAI_DATA_DIR"


def config_dir() -> Path:
    """Where ``DATASET=<name>`` configs live: ``$XAI_CONFIG_DIR`` or the repo's ``configs/``."""
    env = os.environ.get(CONFIG_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2] / "configs"


def available_datasets() -> list[str]:
    """Names of the shipped configs."""
    return sorted(p.stem for p in config_dir().glob("*.toml"))


# ------------------------------------------------------------------ rules of single keys

#: ``check(value) -> why the value is not allowed, or None``.
Check = Callable[[Any], str | None]


@dataclass(frozen=True)
class Rule:
    """What a config key accepts besides its type; kept in ``field.metadata["rule"]``.

    Attributes
    ----------
    choices : tuple of str, optional
        The allowed values.
    minimum : int, optional
        The smallest allowed integer.
    between : tuple of float, optional
        ``(low, high)``: a number must lie in the half-open interval ``(low, high]``.
    check : callable, optional
        ``check(value) -> problem or None``, run after the checks above. Checks that need a
        registry (metric names, colormaps) import it when they run, so that importing this
        module stays cheap.
    help : str
        One line on what the key is for.
    """

    choices: tuple[str, ...] | None = None
    minimum: int | None = None
    between: tuple[float, float] | None = None
    check: Check | None = None
    help: str = ""

    def problem(self, value: Any) -> str | None:
        """Why ``value`` (already of the field's type) breaks this rule, or None."""
        if self.choices is not None and value not in self.choices:
            return f"expected one of {', '.join(self.choices)}, got {value!r}"
        if self.minimum is not None and value < self.minimum:
            return f"expected an integer >= {self.minimum}, got {value}"
        # A float key without a range still refuses nan and -inf.
        if self.between is not None or isinstance(value, float):
            low, high = self.between or (-math.inf, math.inf)
            if not low < value <= high:
                return f"expected a number in ({low:g}, {high:g}], got {value!r}"
        return self.check(value) if self.check is not None else None


#: The rule of a field declared without one: its type is all that is checked.
NO_RULE = Rule()


def key(default: Any, *, choices: Sequence[str] | None = None, minimum: int | None = None,
        between: tuple[float, float] | None = None, check: Check | None = None,
        help: str = "") -> Any:
    """A section field with its :class:`Rule` in ``metadata["rule"]``.

    Parameters
    ----------
    default
        The value when the file does not set the key (immutable: sections are frozen).
    choices, minimum, between, check, help
        See :class:`Rule`.

    Returns
    -------
    dataclasses.Field
        Typed ``Any`` so that ``limit: int = key(0, minimum=0)`` type-checks.
    """
    rule = Rule(choices=tuple(choices) if choices is not None else None, minimum=minimum,
                between=between, check=check, help=help)
    return field(default=default, metadata={"rule": rule})


def rule_of(f: dataclasses.Field[Any]) -> Rule:
    """The rule declared next to a section field (:data:`NO_RULE` if none)."""
    return f.metadata.get("rule", NO_RULE)


def _did_you_mean(name: str, allowed: Iterable[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(name, list(allowed), n=1, cutoff=0.6)
    return f"; did you mean `{prefix}{close[0]}`?" if close else ""


def _device_problem(device: str) -> str | None:
    head, _, index = device.partition(":")
    if device in ("auto", "cpu", "cuda", "mps") or (head == "cuda" and index.isdigit()):
        return None
    return f"expected auto, cpu, cuda or cuda:N, got {device!r}"


#: Colormaps matplotlib has had for years (each with its ``_r``): accepted without it.
_COMMON_COLORMAPS = frozenset(
    n + r for n in ("viridis", "magma", "inferno", "plasma", "cividis", "turbo", "gray",
                    "Greys", "hot", "jet", "bwr", "seismic", "coolwarm", "RdBu", "PiYG")
    for r in ("", "_r"))


def _colormap(examples: str) -> Check:
    """A check that a name is a matplotlib colormap; ``examples`` go in the message."""

    def check(name: str) -> str | None:
        if name in _COMMON_COLORMAPS:  # `xai status` loads configs too: skip the import
            return None
        import matplotlib  # only for other names: it takes 0.2 s to import

        if name in matplotlib.colormaps:
            return None
        return f"expected a matplotlib colormap name (e.g. {examples}), got {name!r}"

    return check


def _metrics_problem(names: Sequence[str]) -> str | None:
    from pipeline.evaluation.metrics import METRICS

    for name in names:
        if name not in METRICS:
            hint = _did_you_mean(name, METRICS)
            return f"unknown metric {name!r}{hint}; valid: {', '.join(METRICS)}"
    return None


def _flip_baseline_problem(name: str) -> str | None:
    from pipeline.evaluation.metrics import FLIP_BASELINES

    if name in FLIP_BASELINES:
        return None
    return f"expected one of {', '.join(FLIP_BASELINES)}, got {name!r}"


def _shortcut_class_problem(name: str) -> str | None:
    from pipeline.data.evidence_dataset import SHAPES

    if not name or name in SHAPES:
        return None
    return f"expected a class of the evidence dataset ({', '.join(SHAPES)}), got {name!r}"


# ------------------------------------------------------------------ the sections

@dataclass(frozen=True)
class DatasetConfig:
    """``[dataset]``: where the images are and which of them to use."""

    name: str
    layout: str = key("auto", choices=LAYOUTS)
    root: Path | None = None
    labels_csv: str = "LOC_val_solution.csv"
    limit: int = key(0, minimum=0)
    per_class: int = key(0, minimum=0)
    count: int = key(64, minimum=1)
    resize: int = key(256, minimum=8)
    crop: int = key(224, minimum=8)
    max_pixels: int = key(89_478_485, minimum=1)
    #: ``layout = "evidence"`` only: plant a shortcut in this class (a shape name, e.g.
    #: "circle"): in ``shortcut_fraction`` of its images, train and test, a corner watermark
    #: replaces the object (see pipeline.data.evidence_dataset.Shortcut). Empty: none.
    shortcut: str = key("", check=_shortcut_class_problem)
    shortcut_fraction: float = key(0.5, between=(0.0, 1.0))


def _arch_problem(arch: str) -> str | None:
    from pipeline.models.architectures import (
        check_arch,  # torch-free: torchvision's names are a table
    )

    return check_arch(arch)


def _interpolation_problem(name: str) -> str | None:
    from pipeline.models.architectures import INTERPOLATIONS

    if name and name not in INTERPOLATIONS:
        return f"expected one of {', '.join(INTERPOLATIONS)} (or nothing: the model's), " \
               f"got {name!r}"
    return None


def _channels_problem(values: tuple[float, ...]) -> str | None:
    if values and (len(values) != 3 or not all(math.isfinite(v) for v in values)):
        return f"expected 3 numbers (one per RGB channel), got {list(values)}"
    return None


@dataclass(frozen=True)
class ModelConfig:
    """``[model]``: the architecture (``arch``), its ``weights`` (imagenet | auto | random |
    evidence | a state-dict file | a ``.pt2`` exported program), the output ``head``, the
    class names of a checkpoint, and its preprocessing where the architecture's own does
    not apply (empty: the architecture's; resolved when the config loads)."""

    arch: str = key("resnet18", check=_arch_problem)
    weights: str = "imagenet"
    head: str = key("softmax", choices=HEADS)
    #: A checkpoint's class names, one a line (else the dataset's class folders, else
    #: class_0 ...).
    classes: Path | None = None
    mean: tuple[float, ...] = key((), check=_channels_problem)
    std: tuple[float, ...] = key((), check=_channels_problem)
    interpolation: str = key("", check=_interpolation_problem)
    #: ``weights = "evidence"`` only: images the model trains on, and held-out images its
    #: accuracy is measured on (see pipeline.models.evidence_model).
    train_images: int = key(3072, minimum=1)
    val_images: int = key(600, minimum=1)


@dataclass(frozen=True)
class RunConfig:
    """``[run]``: output folder, device, precision, shard size, seed, samples per pass."""

    #: Keys that were removed, with what to do instead.
    REMOVED: ClassVar[dict[str, str]] = {
        "prefetch": "device tasks now overlap reads and writes by themselves; remove the key "
                    "(see [run] streaming)",
    }

    out: Path = Path("runs")
    device: str = key("auto", check=_device_problem)
    precision: str = key("fp32", choices=PRECISIONS)
    shard_size: int = key(32, minimum=1)
    seed: int = key(0, minimum=0)
    max_batch: int = key(0, minimum=0)
    streaming: bool = True
    channels_last: bool = True
    fuse_bn: bool = False
    compile: bool = False
    #: The class each map explains: the model's prediction, or the image's label.
    target: str = key("predicted", choices=TARGETS)
    #: Relative completeness error |delta| / |F(x) - F(baseline)| above which status flags
    #: an image's IG map.
    completeness_warning: float = key(0.05, between=(0.0, math.inf))


@dataclass(frozen=True)
class RenderConfig:
    """``[render]``: contact-sheet layout."""

    #: Keys that were removed, with what to do instead.
    REMOVED: ClassVar[dict[str, str]] = {
        "dpi": "sheets are now drawn at the crop's pixel size; remove the key",
    }

    images_per_sheet: int = key(8, minimum=1)
    colormap: str = key("inferno", check=_colormap("inferno, viridis, magma, turbo"))
    clip_percentile: float = key(99.0, between=(0.0, 100.0))
    signed: bool = False
    signed_colormap: str = key("RdBu_r", check=_colormap("RdBu_r, coolwarm, bwr, seismic"))
    overlay: bool = False
    tiles: bool = False


@dataclass(frozen=True)
class EvaluateConfig:
    """``[evaluate]``: which metrics the ``evaluate`` stage computes (none: the stage is off)."""

    metrics: tuple[str, ...] = key((), check=_metrics_problem)
    #: Deletion/insertion: perturbation steps, and what removed pixels become.
    steps: int = key(20, minimum=1)
    baseline: str = key("black", check=_flip_baseline_problem)
    baseline_sigma: float = key(10.0, between=(0.0, math.inf))
    #: Model-parameter randomisation on the first N images (0: off).
    randomisation_images: int = key(32, minimum=0)
    #: Bootstrap resamples for the 95% intervals of the summary table.
    bootstrap: int = key(1000, minimum=0)


@dataclass(frozen=True)
class ReportConfig:
    """``[report]``: the static HTML report (``report/index.html``) and its explanation
    strategies (SpRAy: spectral clustering of each predicted class's normalized maps)."""

    enabled: bool = True
    #: Cluster a predicted class's maps only when it has at least this many images.
    min_images: int = key(20, minimum=3)
    #: Side of the downsampled maps the clustering compares.
    downsample: int = key(28, minimum=2)
    #: Nearest neighbours per map in the affinity graph.
    neighbors: int = key(10, minimum=1)
    #: The most clusters the eigengap may choose.
    max_clusters: int = key(8, minimum=1)
    #: Members shown per cluster on the strategies page.
    members: int = key(8, minimum=0)


@dataclass(frozen=True)
class StoreConfig:
    """``[store]``: how the store keeps the attributions (``raw`` and ``aggregated``) and the
    ``normalized`` maps.

    ``float16`` keeps a power-of-two scale per map, so no value underflows: 2.1e-4 relative
    L2 against float32 and 2.3x smaller (docs/benchmarks.md, "Storing attributions");
    ``bfloat16`` 1.7e-3 and 2.8x. Reading (``pipeline.store.zarr_store.open_dataset``) gives
    float32.
    ``normalized``: ``uint16`` keeps the [0, 1] maps as fixed point (``round(v * 65534)``):
    0 and 1 exact, every value within 7.6e-6, half the bytes of float32 before compression.
    ``layout``: ``"method"`` keeps a file per shard and method for each map array, written
    whole once; ``"shard"`` one file per shard for every method (fewer files, for file
    systems that count them; each method's write rewrites the shard's file).
    All are dataset-level settings: changing one on an existing store needs ``--replace``.
    """

    attributions: str = key("float32", choices=ATTRIBUTION_DTYPES)
    normalized: str = key("float32", choices=NORMALIZED_DTYPES)
    layout: str = key("method", choices=STORE_LAYOUTS)


#: The ``[section]`` tables besides ``[methods]``, in :class:`Config`'s order.
SECTIONS: dict[str, type[Any]] = {
    "dataset": DatasetConfig, "model": ModelConfig, "run": RunConfig,
    "render": RenderConfig, "evaluate": EvaluateConfig, "report": ReportConfig,
    "store": StoreConfig,
}


class FrozenMap(Mapping[str, Any]):
    """A read-only, hashable, picklable mapping (``MappingProxyType`` cannot be pickled).

    Parameters
    ----------
    items
        A mapping or ``(key, value)`` pairs; copied, so later changes to it do not show.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()) -> None:
        self._items: dict[str, Any] = dict(items)

    def __getitem__(self, name: str) -> Any:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"FrozenMap({self._items!r})"

    def __hash__(self) -> int:
        # Equal maps have equal items whatever their order; an unhashable value raises
        # TypeError, as a dict would.
        return hash(tuple(sorted(self._items.items())))

    def __reduce__(self) -> tuple[type[FrozenMap], tuple[dict[str, Any]]]:
        return (FrozenMap, (self._items,))


def _frozen_methods(methods: Mapping[str, Mapping[str, Any]]) -> FrozenMap:
    return FrozenMap((name, FrozenMap(params)) for name, params in methods.items())


@dataclass(frozen=True)
class Config:
    """A resolved, validated configuration."""

    dataset: DatasetConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    run: RunConfig = field(default_factory=RunConfig)
    #: Method name -> its resolved parameters (a :class:`FrozenMap` of FrozenMaps).
    methods: Mapping[str, Mapping[str, Any]] = field(default_factory=FrozenMap)
    render: RenderConfig = field(default_factory=RenderConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    source: Path | None = None

    def __post_init__(self) -> None:
        # Whoever builds a Config, its methods end up read-only and picklable.
        object.__setattr__(self, "methods", _frozen_methods(self.methods))

    def preprocessing(self) -> Any:
        """What the images go through, resolved
        (:class:`pipeline.models.architectures.Preprocessing`)."""
        from pipeline.models.architectures import Preprocessing

        d, m = self.dataset, self.model
        return Preprocessing(d.resize, d.crop, m.mean, m.std, m.interpolation)  # type: ignore[arg-type]

    def store_choices(self) -> dict[str, str]:
        """The ``[store]`` choices, by setting (``attributions``, ``normalized``,
        ``layout``): the store keeps them in its attributes, and the arrays they shape read
        them from there."""
        return {f.name: str(getattr(self.store, f.name)) for f in fields(self.store)}

    def normalization(self) -> Any:
        """The model's input normalization (:class:`pipeline.data.images.Normalization`)."""
        from pipeline.data.images import Normalization

        return Normalization(self.model.mean, self.model.std)  # type: ignore[arg-type]

    def model_classes(self) -> int:
        """6 for the evidence model, else 1000: part of the ingest hash since stores were
        made with a ``logits`` of that width (it keeps their hashes). The width itself now
        follows the loaded model: ``logits`` is remade when it changes."""
        if self.model.weights == "evidence":
            from pipeline.data.evidence_dataset import SHAPES

            return len(SHAPES)
        return 1000

    def evidence_settings(self) -> Any:
        """The evidence model's :class:`~pipeline.data.evidence_dataset.TrainSettings` under this
        config
        (its images are the dataset's crop, its backgrounds the dataset's root)."""
        from pipeline.data.evidence_dataset import TrainSettings

        root = self.dataset.root
        shortcut = self.shortcut()
        return TrainSettings(images=self.model.train_images, val_images=self.model.val_images,
                             size=self.dataset.crop, seed=self.run.seed,
                             backgrounds=str(root) if root else "data/sample",
                             shortcut_label=shortcut.label,
                             shortcut_fraction=shortcut.fraction)

    def shortcut(self) -> Any:
        """The planted :class:`~pipeline.data.evidence_dataset.Shortcut` (off unless ``[dataset]
        shortcut`` names a class of the evidence layout)."""
        from pipeline.data.evidence_dataset import SHAPES, Shortcut

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
        """Plain JSON-able form (paths as strings, tuples as lists), as saved next to the
        results (the store's ``config`` and ``config_hash``). Stages hash only the parts they
        depend on (:meth:`workflows.runner.stage_api.Stage.depends`)."""
        return {
            "dataset": _plain(dataclasses.asdict(self.dataset)),
            "model": _plain(dataclasses.asdict(self.model)),
            "run": _plain(dataclasses.asdict(self.run)),
            "methods": {k: dict(v) for k, v in self.methods.items()},
            "render": _plain(dataclasses.asdict(self.render)),
            "evaluate": {k: list(v) if isinstance(v, tuple) else v
                         for k, v in dataclasses.asdict(self.evaluate).items()},
            "report": dataclasses.asdict(self.report),
            "store": dataclasses.asdict(self.store),
            "source": str(self.source) if self.source else None,
        }


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string: JSON's escapes are TOML's


def config_toml(cfg: Config) -> str:
    """The resolved config as TOML that :func:`load_config` reads back to an equal Config
    (what a run saves as ``config.toml``; unset keys, None, are left out)."""
    plain = cfg.to_dict()
    lines = [f"# The resolved config of this run, from {plain.pop('source')}: what every "
             "later command (xai status/report/clean RUN_DIR) reads.", ""]
    methods = plain.pop("methods")
    for section, table in plain.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None]
        lines.append("")
    for name, params in methods.items():
        lines.append(f"[methods.{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in params.items() if v is not None]
        lines.append("")
    return "\n".join(lines)


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
            for k, v in d.items()}


def stable_hash(obj: Any) -> str:
    """A short, stable hash of a JSON-able value."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ------------------------------------------------------------------ where an entry came from

class Origins:
    """Who wrote each entry of the merged tables: a ``--set`` override, else the file.

    An entry is a path of names: ``("run",)``, ``("run", "seed")``,
    ``("methods", "gradient", "abs")``.

    Parameters
    ----------
    path
        The config file.
    text
        Its text (to find the line of an entry).
    written
        Its tables as read, before any override.
    overrides
        The ``--set section.key=value`` texts, in the order given.
    """

    def __init__(self, path: Path, text: str, written: Mapping[str, Any],
                 overrides: Sequence[str]) -> None:
        self.path, self.text, self.written = path, text, written
        self.sets = [(o, tuple(parse_override(o)[0])) for o in overrides]

    def override(self, *entry: str) -> str | None:
        """The last ``--set`` that wrote ``entry`` (or a table holding it, or created it)."""
        for text, parts in reversed(self.sets):
            common = min(len(parts), len(entry))
            if parts[:common] != entry[:common]:
                continue
            # A longer override wrote inside the entry: it made the entry only if the file
            # does not have it.
            if len(parts) <= len(entry) or not _has(self.written, entry):
                return text
        return None

    def __call__(self, *entry: str) -> str:
        """``--set OVERRIDE``, else ``FILE, line N`` (``FILE`` when the line is not found)."""
        text = self.override(*entry)
        if text is not None:
            return f"--set {text}"
        line = _line_of(self.text, entry) if entry else None
        return f"{self.path}, line {line}" if line else str(self.path)


def _has(tables: Mapping[str, Any], entry: Sequence[str]) -> bool:
    node: Any = tables
    for name in entry:
        if not isinstance(node, Mapping) or name not in node:
            return False
        node = node[name]
    return True


def _line_of(text: str, entry: Sequence[str]) -> int | None:
    """The line of ``entry`` in a TOML text: its ``[a.b]`` header, or its ``key =`` inside its
    table, if it is written plainly."""
    table, name, whole = ".".join(entry[:-1]), entry[-1], ".".join(entry)
    current = ""
    for number, line in enumerate(text.splitlines(), start=1):
        header = re.match(r"\s*\[([^\[\]]+)\]\s*(#.*)?$", line)
        if header:
            current = header.group(1).strip()
            if current == whole:
                return number
        elif current == table and re.match(rf"\s*{re.escape(name)}\s*=", line):
            return number
    return None


# ------------------------------------------------------------------ names: checked once

def _err(where: str, section: str, name: str, problem: str) -> ConfigError:
    return ConfigError(f"{where}: [{section}] {name}: {problem}")


def _unknown(where: Origins, entry: tuple[str, ...], allowed: Sequence[str]) -> ConfigError:
    """``unknown <what>; did you mean ...? (<what is allowed>).``

    A ``--set`` is quoted as typed (a dotted path); a file's entry by its name and table.
    """
    name, dotted = entry[-1], ".".join(entry)
    typed = where.override(*entry) is not None
    if len(entry) == 1:
        what = f"section `{name}`" if typed else f"section or key {name!r}"
        hint = _did_you_mean(name, allowed)
        context = f"allowed: {', '.join(sorted(allowed))}"
    elif entry[0] == "methods" and len(entry) == 2:
        what = f"method `{dotted}`" if typed else f"method {name!r} in [{dotted}]"
        hint = _did_you_mean(name, allowed, "methods.")
        context = f"registered methods: {', '.join(allowed)}"
    else:
        table = ".".join(entry[:-1])
        what = f"key `{dotted}`"
        hint = _did_you_mean(name, allowed, f"{table}.")
        context = f"in [{table}]; allowed keys: {', '.join(allowed) or 'none'}"
    return ConfigError(f"{where(*entry)}: unknown {what}{hint} ({context}).")


def _no_methods(where: str) -> ConfigError:
    return ConfigError(f"{where}: expected at least one [methods.<name>] table, got none. "
                       f"Registered methods: {', '.join(METHODS)}.")


def _table(value: Any, where: Origins, *entry: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where(*entry)}: [{'.'.join(entry)}] expected a table, "
                          f"got {value!r}")
    return value


def check_names(tables: Mapping[str, Any], where: Origins) -> None:
    """The one check that every name exists: sections, their keys, methods and their keys.

    ``tables`` are the file's tables with the ``--set`` overrides applied, so an unknown name
    is reported once, wherever it was written (``where`` says which).

    Raises
    ------
    ConfigError
        For an unknown or removed name, or a section or method that is not a table.
    """
    for section, table in tables.items():
        if section == "methods":
            _check_method_names(table, where)
        elif section in SECTIONS:
            _check_section_keys(SECTIONS[section], section, _table(table, where, section), where)
        else:
            raise _unknown(where, (section,), [*SECTIONS, "methods"])


def _check_section_keys(cls: type[Any], section: str, table: Mapping[str, Any],
                        where: Origins) -> None:
    fields = [f.name for f in dataclasses.fields(cls)]
    removed: Mapping[str, str] = getattr(cls, "REMOVED", {})
    for name in table:
        if name in removed:
            raise ConfigError(f"{where(section, name)}: [{section}] {name}: no longer used: "
                              f"{removed[name]}.")
        if name not in fields:
            raise _unknown(where, (section, name), fields)


def _check_method_names(table: Any, where: Origins) -> None:
    if not isinstance(table, Mapping):
        raise _no_methods(where("methods"))
    for name, params in table.items():
        if name not in METHODS:
            raise _unknown(where, ("methods", name), list(METHODS))
        allowed = list(METHODS[name].params)
        for param in _table(params, where, "methods", name):
            if param not in allowed:
                raise _unknown(where, ("methods", name, param), allowed)


# ------------------------------------------------------------------ values

def _type_problem(annotation: str, value: Any) -> str | None:
    """Why ``value`` does not have a field's type (its annotation as written), or None."""
    if "Path" in annotation:
        ok, expected = isinstance(value, str) and bool(value), "a path string"
    elif annotation.startswith("tuple[float"):
        ok = isinstance(value, list) and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        expected = "a list of numbers"
    elif annotation.startswith("tuple"):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        expected = "a list of strings"
    elif annotation == "bool":
        ok, expected = isinstance(value, bool), "true or false"
    elif annotation == "float":
        # bool is an int to Python, but true is no number; an int is a fine float
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        expected = "a number"
    elif annotation == "int":
        ok, expected = isinstance(value, int) and not isinstance(value, bool), "an integer"
    else:
        ok, expected = isinstance(value, str), "a string"
    return None if ok else f"expected {expected}, got {value!r}"


def _convert(annotation: str, value: Any, base: Path) -> Any:
    if "Path" in annotation:
        path = Path(value).expanduser()
        return path if path.is_absolute() else (base / path).resolve()
    if annotation.startswith("tuple[float"):
        return tuple(float(v) for v in value)
    if annotation.startswith("tuple"):
        return tuple(value)
    if annotation == "float":
        return float(value)
    return value


def _check_value(where: str, section: str, f: dataclasses.Field[Any], value: Any,
                 base: Path) -> Any:
    """``value`` for field ``f``, checked against its type and rule and converted."""
    annotation = str(f.type)
    problem = _type_problem(annotation, value) or rule_of(f).problem(value)
    if problem:
        raise _err(where, section, f.name, problem)
    return _convert(annotation, value, base)


def _section(cls: type[Any], table: Mapping[str, Any], section: str, where: Origins,
             base: Path) -> Any:
    """Build a section from its table (whose names :func:`check_names` has checked)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {name: _check_value(where(section, name), section, fields[name], value, base)
              for name, value in table.items()}
    return cls(**values)


def _methods(table: Mapping[str, Any] | None, where: Origins) -> dict[str, Mapping[str, Any]]:
    """Each ``[methods.<name>]`` table resolved by its registry entry, defaults filled in."""
    if not table:
        raise _no_methods(where("methods"))
    resolved: dict[str, Mapping[str, Any]] = {}
    for name, params in table.items():
        spec = METHODS[name]
        # Each key on its own first, so that a bad value is reported at its line.
        for param, value in params.items():
            problem = spec.params[param].check(param, value)
            if problem:
                raise ConfigError(f"{where('methods', name, param)}: [methods.{name}] {problem}")
        try:
            resolved[name] = spec.resolve(params)
        except ValueError as exc:  # the method's check of its keys together
            bad = next((k for k in params if f"{k} " in str(exc) or f"{k}>" in str(exc)), None)
            entry = ("methods", name, bad) if bad else ("methods", name)
            raise ConfigError(f"{where(*entry)}: {exc}") from None
    return resolved


# ------------------------------------------------------------------ keys checked together

def _check_dataset(dataset: DatasetConfig, where: Origins) -> None:
    """The ``[dataset]`` rules that involve more than one key."""
    if dataset.shortcut and dataset.layout != "evidence":
        raise _err(where("dataset", "shortcut"), "dataset", "shortcut",
                   f"expected layout = \"evidence\" for a planted shortcut, got layout = "
                   f"{dataset.layout!r}; remove the key or generate the evidence dataset")
    if dataset.layout != "synthetic" and dataset.root is None:
        raise _err(str(where.path), "dataset", "root",
                   f"expected the image folder (or --data-dir / ${DATA_DIR_ENV}), got none")
    if dataset.crop > dataset.resize:
        raise _err(where("dataset", "crop"), "dataset", "crop",
                   f"expected crop <= resize ({dataset.resize}), got {dataset.crop}")


# ------------------------------------------------------------------ overrides and loading

def parse_override(text: str) -> tuple[list[str], Any]:
    """``section.key=value`` -> (``["section", "key"]``, value read as TOML, else as a string)."""
    name, sep, raw = text.partition("=")
    parts = [p.strip() for p in name.strip().split(".")]
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


#: The resolved config a run saves in its folder; later commands read it back.
RUN_CONFIG = "config.toml"
#: The config for ``xai run --data-dir DIR`` without ``--dataset`` or ``--config`` (not a
#: dataset of its own: it has no folder until ``--data-dir`` gives one).
OWN_IMAGES = "own"


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


def _read(path: Path) -> tuple[str, dict[str, Any]]:
    """A config file's text and tables."""
    try:
        text = path.read_text(encoding="utf-8")
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc.strerror}") from None


def _command_line(tables: dict[str, Any], overrides: Sequence[str], env: Mapping[str, str], *,
                  data_dir: Path | None, out: Path | None, weights: str | None,
                  device: str | None, arch: str | None = None, name: str | None = None
                  ) -> None:
    """Write the command-line options and ``$XAI_DATA_DIR`` into the merged tables."""
    cwd = Path.cwd()
    dataset, run, model = (tables.setdefault(s, {}) for s in ("dataset", "run", "model"))
    set_paths = {tuple(parse_override(o)[0]) for o in overrides}
    # Paths given on the command line are relative to the working directory, not the file.
    for table, entry in ((dataset, ("dataset", "root")), (run, ("run", "out"))):
        if entry in set_paths and isinstance(table.get(entry[1]), str):
            table[entry[1]] = str((cwd / Path(table[entry[1]]).expanduser()).resolve())
    if data_dir is not None:
        dataset["root"] = str((cwd / data_dir.expanduser()).resolve())
    elif env.get(DATA_DIR_ENV) and ("dataset", "root") not in set_paths:
        dataset["root"] = str((cwd / Path(env[DATA_DIR_ENV]).expanduser()).resolve())
    if out is not None:
        run["out"] = str((cwd / out.expanduser()).resolve())
    if device is not None:
        run["device"] = device
    if weights is not None:
        model["weights"] = weights
    if arch is not None:
        model["arch"] = arch
    if name is not None:
        dataset["name"] = name


def _weights_path(model: ModelConfig, base: Path, from_command_line: bool) -> ModelConfig:
    """A weights file made absolute: against the working directory if given as an option,
    else against the config's folder."""
    if model.weights in WEIGHT_KEYWORDS:
        return model
    path = Path(model.weights).expanduser()
    if not path.is_absolute():
        path = (Path.cwd() if from_command_line else base) / path
    return dataclasses.replace(model, weights=str(path))


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
    where = Origins(path, text, written, overrides)
    tables = apply_overrides(written, overrides)
    check_names(tables, where)
    _command_line(tables, overrides, env, data_dir=data_dir, out=out, weights=weights,
                  device=device, arch=arch, name=name)
    tables["dataset"].setdefault("name", path.stem)
    base = path.resolve().parent
    sections = {name: _section(cls, tables.get(name, {}), name, where, base)
                for name, cls in SECTIONS.items()}
    sections["model"] = _weights_path(sections["model"], base, weights is not None)
    _preprocessing(sections, tables, where)
    methods = _methods(tables.get("methods"), where)
    _check_dataset(sections["dataset"], where)
    return Config(methods=methods, source=path.resolve(), **sections)


def _preprocessing(sections: dict[str, Any], tables: Mapping[str, Any], where: Origins
                   ) -> None:
    """Fill what the config leaves unsaid of the preprocessing from the model's own:
    ``[dataset] resize``/``crop`` and ``[model] mean``/``std``/``interpolation`` (torchvision's
    ``transforms()`` of the architecture's published weights; ImageNet's for an exported
    program and the evidence model), so that the resolved config says what was done."""
    from pipeline.models.architectures import IMAGENET, default_preprocessing

    dataset, model = sections["dataset"], sections["model"]
    own = model.weights == "evidence" or model.weights.endswith(".pt2")
    try:
        prep = IMAGENET if own else default_preprocessing(model.arch)
    except ConfigError as exc:
        raise ConfigError(f"{where('model', 'arch')}: {exc}") from None
    given = tables.get("dataset", {})
    sections["dataset"] = dataclasses.replace(
        dataset, resize=dataset.resize if "resize" in given else prep.resize,
        crop=dataset.crop if "crop" in given else prep.crop)
    sections["model"] = dataclasses.replace(
        model, mean=model.mean or prep.mean, std=model.std or prep.std,
        interpolation=model.interpolation or prep.interpolation)
