"""The whole configuration: its sections, the methods with their resolved parameters, and the
file it came from; and its plain JSON form (what runs save and stage hashes are made of).

A :class:`Config` is a frozen pydantic dataclass and can be pickled (its ``methods`` is a
:class:`FrozenMap` of FrozenMaps), so that worker processes can receive one.
"""

from collections.abc import Mapping
from dataclasses import field, fields
from pathlib import Path
from typing import Annotated, Any

from pydantic import ConfigDict, PlainValidator
from pydantic.dataclasses import dataclass

from workflows.config.frozen_map import FrozenMap, frozen_methods
from workflows.config.sections import (
    DatasetConfig,
    EvaluateConfig,
    ModelConfig,
    RenderConfig,
    ReportConfig,
    RunConfig,
    StoreConfig,
)


def _plain_value(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else list(value) if isinstance(
        value, tuple) else value


def plain_section(section: Any) -> dict[str, Any]:
    """A section as JSON-able values, keys in their declared order (paths as strings, tuples
    as lists)."""
    return {f.name: _plain_value(getattr(section, f.name)) for f in fields(section)}


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Config:
    """A resolved, validated configuration."""

    dataset: DatasetConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    run: RunConfig = field(default_factory=RunConfig)
    #: Method name -> its resolved parameters. Whoever builds a Config (the loader, a test,
    #: :func:`dataclasses.replace`), they end up read-only and picklable.
    methods: Annotated[Mapping[str, Mapping[str, Any]], PlainValidator(frozen_methods)] = \
        field(default_factory=FrozenMap)
    render: RenderConfig = field(default_factory=RenderConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    source: Path | None = None

    def preprocessing(self) -> Any:
        """What the images go through, resolved
        (:class:`pipeline.models.architectures.Preprocessing`)."""
        from pipeline.models.preprocessing import Preprocessing

        d, m = self.dataset, self.model
        return Preprocessing(d.resize, d.crop, m.mean, m.std, m.interpolation,  # type: ignore[arg-type]
                             self.resize_mode())

    def resize_mode(self) -> str:
        """How the model's own preprocessing resizes (``short-side``, or ``squash`` for a
        Hugging Face processor that squashes): the model's to say, as it is for no other
        setting, so it is read from its source, not from a key."""
        from pipeline.models.sources import preprocessing_for

        if self.dataset.layout in ("synthetic", "evidence"):
            return "short-side"
        return str(preprocessing_for(self.model.arch, str(self.model.weights)).resize_mode)

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
        """The model source's class count for the ingest hash (1000, or the evidence model's
        6): stores were made with a ``logits`` of that width, and it keeps their hashes. The
        width itself follows the loaded model: ``logits`` is remade when it changes."""
        from pipeline.models.sources import hashed_class_count

        return hashed_class_count(self.model.arch, self.model.weights)

    def training_settings(self) -> Any:
        """What a model trained from the run's dataset is trained with (the evidence model's
        :meth:`evidence_settings`), or None for a model that is not."""
        from pipeline.models.sources import source_for

        source = source_for(self.model.arch, self.model.weights)
        return self.evidence_settings() if source.trained_on_dataset else None

    def evidence_settings(self) -> Any:
        """The evidence model's :class:`~pipeline.data.evidence_dataset.TrainSettings` under
        this config (its images are the dataset's crop, its backgrounds the dataset's
        root)."""
        from pipeline.data.evidence_dataset import TrainSettings

        root = self.dataset.root
        shortcut = self.shortcut()
        return TrainSettings(images=self.model.train_images, val_images=self.model.val_images,
                             size=self.dataset.crop, seed=self.run.seed,
                             backgrounds=str(root) if root else "data/sample",
                             shortcut_label=shortcut.label,
                             shortcut_fraction=shortcut.fraction)

    def shortcut(self) -> Any:
        """The planted :class:`~pipeline.data.evidence_dataset.Shortcut` (off unless
        ``[dataset] shortcut`` names a class of the evidence layout)."""
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
        """The configured methods, in the config's order."""
        return tuple(self.methods)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (paths as strings, tuples as lists), as saved next to the
        results (the store's ``config`` and ``config_hash``). Stages hash only the parts they
        depend on (:meth:`workflows.runner.stage_api.Stage.depends`)."""
        return {
            "dataset": plain_section(self.dataset),
            "model": plain_section(self.model),
            "run": plain_section(self.run),
            "methods": {k: dict(v) for k, v in self.methods.items()},
            "render": plain_section(self.render),
            "evaluate": plain_section(self.evaluate),
            "report": plain_section(self.report),
            "store": plain_section(self.store),
            "source": str(self.source) if self.source else None,
        }
