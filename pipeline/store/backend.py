"""The store as an xarray backend: ``xarray.open_dataset(path, engine="xai")``.

Registered under ``xarray.backends`` (``pyproject.toml``), so that a notebook needs no import
of the project to read a store right: it gives :func:`pipeline.store.access.open_dataset`,
the maps decoded to float32 whatever the store's 16-bit encoding.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from xarray.backends import BackendEntrypoint


class XaiBackendEntrypoint(BackendEntrypoint):
    """``engine="xai"``: an xai-pipeline store, every array holding what its name says."""

    description = "xai-pipeline Zarr stores, maps decoded to float32 (16-bit stores too)"
    open_dataset_parameters = ("filename_or_obj", "drop_variables")

    def open_dataset(  # type: ignore[override]
        self, filename_or_obj: str | os.PathLike[Any], *,
        drop_variables: str | Iterable[str] | None = None,
    ) -> Any:
        from pipeline.store.access import open_dataset

        drop = [drop_variables] if isinstance(drop_variables, str) else list(drop_variables or ())
        return open_dataset(Path(os.fspath(filename_or_obj)), drop_variables=drop)

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        """True for a folder holding a Zarr v3 group with a ``schema_version`` attribute."""
        try:
            meta = Path(os.fspath(filename_or_obj)) / "zarr.json"
            return "schema_version" in json.loads(meta.read_text()).get("attributes", {})
        except (TypeError, OSError, ValueError, AttributeError):
            return False
