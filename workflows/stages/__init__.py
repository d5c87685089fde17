"""The stages, in run order: the one list the run, ``status``, ``verify``, ``clean``, the hashes
and the crash tests read.

Each stage is one module here: a :class:`workflows.runner.stage_api.Stage` subclass that
says which store arrays it ``reads`` and ``writes`` (the arrays are declared in
:data:`pipeline.store.schema.SCHEMA`), registered beside its class with
``@register_stage``. Adding a stage is that module, its import below, and its name in
:data:`RUN_ORDER`. Registration checks every stage against the schema at import: a stage
that reads an array no earlier stage writes, or writes one the schema does not declare or
another stage writes, is refused here.
"""

from __future__ import annotations

from workflows.runner.stage_api import STAGE_TYPES, Stage
from workflows.runner.stage_registry import StageRegistry

# Each module registers its stages beside their classes, in STAGE_TYPES.
from workflows.stages import (  # noqa: F401
    attribute,
    evaluate,
    ingest,
    maps,
    predict,
    render,
    report,
)

#: The run order, explicit: a stage runs after every stage whose arrays it reads.
RUN_ORDER: tuple[str, ...] = ("ingest", "predict", "attribute", "aggregate", "normalize",
                              "render", "evaluate", "report")


def _in_run_order() -> tuple[Stage, ...]:
    """One instance of each registered stage class, in :data:`RUN_ORDER`."""
    unordered = set(STAGE_TYPES) ^ set(RUN_ORDER)
    if unordered:
        raise RuntimeError(
            f"Expected every registered stage in RUN_ORDER and every name there registered, "
            f"got {sorted(unordered)} in only one of them (registered: "
            f"{', '.join(STAGE_TYPES)}). Add the stage's name to RUN_ORDER in "
            "workflows/stages/__init__.py, or import its module there.")
    return tuple(STAGE_TYPES[name]() for name in RUN_ORDER)


#: The stages in run order.
STAGES: tuple[Stage, ...] = _in_run_order()
#: The registry every command uses.
REGISTRY = StageRegistry(STAGES)
