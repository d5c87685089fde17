"""The Zarr store: its schema (:mod:`.schema`), finding arrays (:mod:`.arrays`), making and
opening it (:mod:`.access`), its run-dependent axes (:mod:`.axes`), a task's handle
(:mod:`.view`), map encodings (:mod:`.encoding`) and chunk locks (:mod:`.locks`)."""

from typing import Any

__all__ = ["open_dataset"]


def __getattr__(name: str) -> Any:
    # ``from pipeline.store import open_dataset``, the analysis entry point, without making
    # every import of a store module (the torch-free config reads the encodings) load Zarr.
    if name == "open_dataset":
        from pipeline.store.access import open_dataset

        return open_dataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
