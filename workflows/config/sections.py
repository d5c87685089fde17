"""The ``[section]`` tables of a config: each a frozen pydantic dataclass, one field a key.

Each key is declared with its type and a :class:`pipeline.validation.Rule` in ``Annotated``
metadata: its choices, bounds (``ge``/``gt``/``le``/``lt``, each end explicitly open or
closed), an extra check, and the help line that docs/configuration.md shows. Every key is
checked by :func:`pipeline.validation.value_problem`, the validator the method parameters use
too, before pydantic converts it (an integer to a float, a list to a tuple, a string to a
path). Keys that were removed are listed, with what to do instead, in the ``REMOVED`` class
variable of their section.

The sections are pydantic *dataclasses* rather than ``BaseModel`` s so that they stay
dataclasses: the runner derives configs with :func:`dataclasses.replace` (validated again by
pydantic) and they pickle and hash as frozen dataclasses do.
"""

import math
import types
import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import ConfigDict, ValidationInfo, field_validator
from pydantic.dataclasses import dataclass
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from pipeline.attribution.precision import PRECISIONS
from pipeline.models.checkpoints import HEADS
from pipeline.models.sources import arch_help, weights_help
from pipeline.models.torchvision_table import DEFAULT_ARCH
from pipeline.store.encoding import ATTRIBUTION_DTYPES, NORMALIZED_DTYPES, STORE_LAYOUTS
from pipeline.validation import Rule, rule, value_problem
from workflows.config import key_checks

#: What ``[run] target`` may be: explain the predicted class, or the ground-truth label.
TARGETS = ("predicted", "label")
#: Generated layouts: no image files (``evidence`` reads its background photos from root).
GENERATED_LAYOUTS = ("synthetic", "evidence")
LAYOUTS = ("auto", "class-folders", "flat-csv", "plain", *GENERATED_LAYOUTS)

#: The validation context key that holds the config file's folder: relative paths in the
#: file resolve against it.
BASE_FOLDER = "base"
#: The pydantic error type of a key that :func:`pipeline.validation.value_problem` refused.
KEY_ERROR = "config_key"

#: The rule of a key declared without one: its type is all that is checked (and a float's
#: finiteness).
NO_RULE = Rule()


def key_fields(section: type[Any]) -> dict[str, FieldInfo]:
    """A section's keys, in order, with their pydantic field info."""
    fields: dict[str, FieldInfo] = section.__pydantic_fields__
    return fields


def rule_of(field: FieldInfo) -> Rule:
    """The :class:`Rule` declared in a key's ``Annotated`` metadata (:data:`NO_RULE` if
    none)."""
    return next((m for m in field.metadata if isinstance(m, Rule)), NO_RULE)


def key_type(field: FieldInfo) -> tuple[Any, bool]:
    """A key's type without ``None``, and whether it may be None (``Path | None``)."""
    annotation = field.annotation
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = (a for a in args if a is not type(None))
        return inner, True
    return annotation, False


def _resolve(value: str | Path, base: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Section:
    """A ``[section]`` table: every key checked by the one validator of single values."""

    @field_validator("*", mode="before")
    @classmethod
    def _check_key(cls, value: Any, info: ValidationInfo) -> Any:
        """Refuse a value with a house-style message (pydantic's would name no rule), and
        resolve a relative path from a file against the file's folder."""
        name = info.field_name or ""
        field = key_fields(cls)[name]
        tp, optional = key_type(field)
        if value is None and optional:
            return None
        problem = value_problem(tp, rule_of(field), value, name)
        if problem:
            raise PydanticCustomError(KEY_ERROR, "{problem}", {"problem": problem})
        base = (info.context or {}).get(BASE_FOLDER)
        return _resolve(value, base) if tp is Path and base is not None else value


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class DatasetConfig(Section):
    """``[dataset]``: where the images are and which of them to use."""

    #: What a key left out becomes when the config loads, where that is not its default.
    RESOLVED_ON_LOAD: ClassVar[dict[str, str]] = {
        "name": "the config file's name",
        "resize": "the model's preprocessing",
        "crop": "the model's preprocessing",
    }

    name: Annotated[str, rule(help="The run's name: the run folder is `<out>/<name>/`.")]
    layout: Annotated[str, rule(
        choices=LAYOUTS, help="How the images are laid out; auto finds class folders, a CSV "
        "beside the images (path,label) or plain files; synthetic and evidence are generated "
        "(no image files).")] = "auto"
    root: Annotated[Path | None, rule(
        help="The image folder (relative: to the config file's folder). Needed unless layout "
        "= \"synthetic\"; --data-dir or $XAI_DATA_DIR give it on the command line.")] = None
    labels_csv: Annotated[str, rule(
        help="The labels file of the flat-csv layout, in root.")] = "LOC_val_solution.csv"
    limit: Annotated[int, rule(
        ge=0, help="Use the first N images after sorting (0: all).")] = 0
    per_class: Annotated[int, rule(
        ge=0, help="Use the first N images of each class (0: all); needs labels.")] = 0
    count: Annotated[int, rule(
        ge=1, help="How many images the synthetic layout generates.")] = 64
    resize: Annotated[int, rule(
        ge=8, help="Preprocessing: resize the short side to this many pixels, then crop.")] = 256
    crop: Annotated[int, rule(
        ge=8, help="Preprocessing: the side of the centre crop (at most resize).")] = 224
    max_pixels: Annotated[int, rule(
        ge=1, help="Refuse images larger than this many pixels (a decompression-bomb "
        "guard).")] = 89_478_485
    shortcut: Annotated[str, rule(
        check=key_checks.shortcut_class_problem,
        help="layout = \"evidence\" only: plant a corner-watermark shortcut in this class (a "
        "shape name, e.g. \"circle\"), in train and test images alike (empty: none).")] = ""
    shortcut_fraction: Annotated[float, rule(
        gt=0, le=1, help="The fraction of the shortcut class's images that get the "
        "watermark.")] = 0.5


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class ModelConfig(Section):
    """``[model]``: the architecture, its weights, the output head, the class names of a
    checkpoint, and its preprocessing where the architecture's own does not apply."""

    RESOLVED_ON_LOAD: ClassVar[dict[str, str]] = {
        "mean": "the model's preprocessing",
        "std": "the model's preprocessing",
        "interpolation": "the model's preprocessing",
    }

    arch: Annotated[str, rule(
        check=key_checks.arch_problem,
        help=f"The architecture: {arch_help()}.")] = DEFAULT_ARCH
    weights: Annotated[str, rule(
        help=f"{weights_help()} (auto: ImageNet weights when available, else seeded random; a "
        "path is relative to the config file's folder).")] = "imagenet"
    head: Annotated[str, rule(
        choices=HEADS, help="What the maps explain: the softmax probability or the "
        "logit.")] = "softmax"
    classes: Annotated[Path | None, rule(
        help="A checkpoint's class names, one a line (else the dataset's class folders, else "
        "class_0 ...).")] = None
    mean: Annotated[tuple[float, ...], rule(
        check=key_checks.channels_problem,
        help="Input normalization: the mean per RGB channel (empty: the model's).")] = ()
    std: Annotated[tuple[float, ...], rule(
        check=key_checks.channels_problem,
        help="Input normalization: the standard deviation per RGB channel (empty: the "
        "model's).")] = ()
    interpolation: Annotated[str, rule(
        check=key_checks.interpolation_problem,
        help="How images are resized: bilinear, bicubic or nearest (empty: the "
        "model's).")] = ""
    train_images: Annotated[int, rule(
        ge=1, help="weights = \"evidence\" only: the images the model trains on.")] = 3072
    val_images: Annotated[int, rule(
        ge=1, help="weights = \"evidence\" only: the held-out images its accuracy is measured "
        "on.")] = 600


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class RunConfig(Section):
    """``[run]``: output folder, device, precision, shard size, seed, samples per pass."""

    #: Keys that were removed, with what to do instead.
    REMOVED: ClassVar[dict[str, str]] = {
        "prefetch": "device tasks now overlap reads and writes by themselves; remove the key "
                    "(see [run] streaming)",
    }

    out: Annotated[Path, rule(
        help="Where runs go: the run folder is `<out>/<dataset name>/` (relative: to the config "
        "file's folder).")] = Path("runs")
    device: Annotated[str, rule(
        check=key_checks.device_problem,
        help="auto (CUDA when available), cpu, cuda, cuda:N or mps.")] = "auto"
    precision: Annotated[str, rule(
        choices=PRECISIONS, help="fp32 (strict: TF32 off), fp32-fwd (TF32 in the backward "
        "pass only), tf32, or bf16 (autocast).")] = "fp32"
    shard_size: Annotated[int, rule(
        ge=1, help="Images per shard: the unit that stages compute and store.")] = 32
    seed: Annotated[int, rule(
        ge=0, help="The seed of the stochastic methods (each shard draws from it).")] = 0
    max_batch: Annotated[int, rule(
        ge=0, help="Samples per forward/backward pass (0: planned from the device's "
        "memory).")] = 0
    streaming: Annotated[bool, rule(
        help="Later stages of finished shards overlap the device's work.")] = True
    channels_last: Annotated[bool, rule(
        help="NHWC convolutions (faster on CPUs and tensor cores).")] = True
    fuse_bn: Annotated[bool, rule(
        help="Fold BatchNorm into the convolutions (changes rounding).")] = False
    compile: Annotated[bool, rule(
        help="torch.compile the model, falling back to eager (meant for GPUs).")] = False
    target: Annotated[str, rule(
        choices=TARGETS, help="The class each map explains: the model's prediction, or the "
        "image's label (images without one are skipped).")] = "predicted"
    completeness_warning: Annotated[float, rule(
        gt=0, le=math.inf, help="`xai status` flags an IG map whose relative completeness "
        "error |delta| / |F(x) - F(baseline)| is above this.")] = 0.05


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class RenderConfig(Section):
    """``[render]``: how the contact sheets show the maps (the stored arrays never change)."""

    #: Keys that were removed, with what to do instead.
    REMOVED: ClassVar[dict[str, str]] = {
        "dpi": "sheets are now drawn at the crop's pixel size; remove the key",
    }

    images_per_sheet: Annotated[int, rule(
        ge=1, help="Images (rows) per contact sheet.")] = 8
    colormap: Annotated[str, rule(
        check=key_checks.colormap("inferno, viridis, magma, turbo"),
        help="The matplotlib colormap of the normalized maps.")] = "inferno"
    clip_percentile: Annotated[float, rule(
        gt=0, le=100, help="Per map, values at or above this percentile take the top colour "
        "(100: none).")] = 99.0
    signed: Annotated[bool, rule(
        help="Show the signed aggregated maps, zero at the centre of signed_colormap.")] = False
    signed_colormap: Annotated[str, rule(
        check=key_checks.colormap("RdBu_r, coolwarm, bwr, seismic"),
        help="The diverging matplotlib colormap of signed maps.")] = "RdBu_r"
    overlay: Annotated[bool, rule(help="Blend each map on the photo.")] = False
    tiles: Annotated[bool, rule(
        help="Also write one tile per image and method (`tiles/<method>/<index>.png`).")] = False


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class EvaluateConfig(Section):
    """``[evaluate]``: which metrics the ``evaluate`` stage computes (none: the stage is off)."""

    metrics: Annotated[tuple[str, ...], rule(
        check=key_checks.metrics_problem,
        help="The metrics to compute, e.g. [\"deletion\", \"insertion\", \"pointing_game\"] "
        "(empty: the evaluate stage is off).")] = ()
    steps: Annotated[int, rule(
        ge=1, help="Deletion and insertion: perturbation steps.")] = 20
    baseline: Annotated[str, rule(
        check=key_checks.flip_baseline_problem,
        help="Deletion and insertion: what removed pixels become (black, blur or "
        "mean).")] = "black"
    baseline_sigma: Annotated[float, rule(
        gt=0, le=math.inf, help="baseline = \"blur\" only: the Gaussian sigma in pixels.")] = 10.0
    randomisation_images: Annotated[int, rule(
        ge=0, help="Model-parameter randomisation on the first N images (0: off).")] = 32
    bootstrap: Annotated[int, rule(
        ge=0, help="Bootstrap resamples for the 95% intervals of the summary table.")] = 1000

    def flip_params(self, max_batch: int, norm: Any) -> dict[str, Any]:
        """The model-based metrics' keywords (deletion, insertion): these settings, the
        model's ``norm`` for the baseline, and perturbation batches of 4 attribution
        batches (``max_batch``: forward passes only, so four times the samples fit)."""
        return {"steps": self.steps, "baseline": self.baseline,
                "baseline_params": {"baseline_sigma": self.baseline_sigma},
                "max_batch": max(1, max_batch * 4), "norm": norm}


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class ReportConfig(Section):
    """``[report]``: the static HTML report (``report/index.html``) and its explanation
    strategies (SpRAy: spectral clustering of each predicted class's normalized maps)."""

    enabled: Annotated[bool, rule(help="Build the report.")] = True
    min_images: Annotated[int, rule(
        ge=3, help="Cluster a predicted class's maps only when it has at least this many "
        "images.")] = 20
    downsample: Annotated[int, rule(
        ge=2, help="The side of the downsampled maps the clustering compares.")] = 28
    neighbors: Annotated[int, rule(
        ge=1, help="Nearest neighbours per map in the affinity graph.")] = 10
    max_clusters: Annotated[int, rule(
        ge=1, help="The most clusters the eigengap may choose.")] = 8
    members: Annotated[int, rule(
        ge=0, help="Members shown per cluster on the strategies page.")] = 8


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class StoreConfig(Section):
    """``[store]``: how the store keeps the attributions (``raw`` and ``aggregated``) and the
    ``normalized`` maps. All are dataset-level settings: changing one on an existing store
    needs ``--replace``.

    ``float16`` keeps a power-of-two scale per map, so no value underflows: 2.1e-4 relative
    L2 against float32 and 2.3x smaller; ``bfloat16`` 1.7e-3 and 2.8x. Reading
    (``pipeline.store.access.open_dataset``) gives float32. ``uint16`` keeps the [0, 1]
    maps as fixed point (``round(v * 65534)``): 0 and 1 exact, every value within 7.6e-6,
    half the bytes of float32 before compression.
    """

    attributions: Annotated[str, rule(
        choices=ATTRIBUTION_DTYPES, help="How raw and aggregated maps are stored: float32, "
        "float16 (with a scale per map) or bfloat16.")] = "float32"
    normalized: Annotated[str, rule(
        choices=NORMALIZED_DTYPES, help="How normalized maps are stored: float32, or uint16 "
        "fixed point (within 7.6e-6).")] = "float32"
    layout: Annotated[str, rule(
        choices=STORE_LAYOUTS, help="method: a file per shard and method for each map array, "
        "written once; shard: one file per shard for every method (fewer files; each "
        "method's write rewrites it).")] = "method"


#: The ``[section]`` tables besides ``[methods]``, in :class:`Config`'s order.
SECTIONS: dict[str, type[Any]] = {
    "dataset": DatasetConfig, "model": ModelConfig, "run": RunConfig,
    "render": RenderConfig, "evaluate": EvaluateConfig, "report": ReportConfig,
    "store": StoreConfig,
}

