"""The store format page, ``docs/store-format.md``, generated from the store schema.

Every array family of :data:`pipeline.store.schema.SCHEMA` (dimensions, dtype, chunking,
meaning) with the stage that writes it, which comes from the stage registry: the library's
schema names arrays, never the stages. Then the store's root attributes
(:data:`pipeline.store.schema.STORE_ATTRIBUTES`). A test regenerates the page and fails when
the committed one differs; regenerate it with::

    .venv/bin/python -m workflows.commands.store_format > docs/store-format.md
"""

from __future__ import annotations

import textwrap

from pipeline.store.schema import (
    EXPLAINER,
    POOL_BYTES,
    POOL_EXPLAINERS,
    POOL_SHARDS,
    SCHEMA,
    SCHEMA_VERSION,
    STORE_ATTRIBUTES,
    ArrayFamily,
    Schema,
)
from workflows.runner.stage_registry import StageRegistry

#: The command that writes the page (the test's message names it).
COMMAND = ".venv/bin/python -m workflows.commands.store_format > docs/store-format.md"

#: The page's opening paragraphs (each filled to :data:`WIDTH` columns).
_INTRO = (
    f"`runs/<name>/store.zarr` is a Zarr v3 group (schema version {SCHEMA_VERSION}). Every "
    "array has dimension names, so `xarray.open_zarr(path, consolidated=False)` gives one "
    "Dataset in which every name holds what it promises: a uint16 `normalized` is decoded by "
    "xarray itself (CF `scale_factor` and `_FillValue`), and float16 or bfloat16 maps are "
    "named for what they hold (`raw_float16`, `aggregated_bfloat16`). "
    "`xarray.open_dataset(path, engine=\"xai\")` (the project's xarray backend, the same as "
    "`pipeline.store.access.open_dataset(path)`) checks the schema version, decodes every "
    "16-bit `[store]` choice to float32 under its plain name (`raw`, `aggregated`) and loads "
    "the small per-image arrays, so that they work as masks and groupby keys as they are. "
    "Select methods by "
    f"name along `{EXPLAINER}` (its order is the order methods were added to the store, not "
    "necessarily the config's). Rows whose `status` is not `ok` hold the fill value: NaN for "
    "floats, −1 for integers, never zeros that look real.",
    "The big arrays are chunked one shard (`shard_size` images) at a time, and those split "
    "by explainer one method at a time, so a task writes whole chunks. The pooled ones, of a "
    f"few values per image, keep as many whole shards as fit in {POOL_BYTES // 1024} KiB (at "
    f"most {POOL_SHARDS}) and {POOL_EXPLAINERS} explainers in one chunk, so the file count "
    "does not grow with the arrays times the methods; their writers lock the chunk they "
    "write. The arrays written by \"the store\" are its axes: `image` and `label` when it is "
    "made, `explainer` and `class_name` when the methods or the model's classes change.",
)
WIDTH = 92


def dims_text(fam: ArrayFamily) -> str:
    """``(image,)``, ``(explainer, image)``: a family's dimensions as a tuple."""
    return "(" + ", ".join(fam.dims) + ("," if len(fam.dims) == 1 else "") + ")"


def writer_text(fam: ArrayFamily, registry: StageRegistry) -> str:
    """Who writes ``fam``: the store itself, or the one stage that says it does."""
    if fam.with_store:
        return "the store"
    writer = registry.writer_of(fam.name)
    if writer is None:
        raise ValueError(f"Expected a stage that writes {fam.name!r}, got none in "
                         f"{registry.names()}; add it to that stage's writes.")
    return f"`{writer}`"


def array_rows(registry: StageRegistry, schema: Schema = SCHEMA) -> list[str]:
    """The arrays' table: one markdown row per family, in schema order."""
    out = ["| array | dims | dtype | chunks | written by | meaning |",
           "| --- | --- | --- | --- | --- | --- |"]
    for fam in schema:
        dtype = "string" if fam.dtype == "str" else fam.dtype
        out.append(f"| `{fam.shown}` | {dims_text(fam)} | {dtype} | {fam.chunking()} | "
                   f"{writer_text(fam, registry)} | {fam.meaning} |")
    return out


def attribute_rows() -> list[str]:
    """The root attributes' table."""
    return ["| attribute | meaning |", "| --- | --- |",
            *(f"| `{name}` | {meaning} |" for name, meaning in STORE_ATTRIBUTES.items())]


def store_format(registry: StageRegistry | None = None) -> str:
    """The whole page, for ``registry`` (the project's stages by default)."""
    if registry is None:
        from workflows.stages import REGISTRY

        registry = REGISTRY
    return "\n\n".join([
        "# The store format",
        "<!-- Generated from the store schema (pipeline/store/schema.py) and the stages' "
        f"writes:\n{COMMAND} -->",
        *(textwrap.fill(paragraph, WIDTH) for paragraph in _INTRO),
        "## Arrays", "\n".join(array_rows(registry, registry.schema)),
        "## Root attributes", "\n".join(attribute_rows()),
    ]) + "\n"


if __name__ == "__main__":
    print(store_format(), end="")
