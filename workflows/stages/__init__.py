"""The stages, in run order: the one list the run, ``status``, ``verify``, ``clean``, the hashes
and the crash tests read.

Adding a stage is one module here (a :class:`workflows.runner.stage_api.Stage` subclass, whose
arrays
are declared in :data:`pipeline.store.zarr_store.SCHEMA`) and one entry in :data:`STAGES`.
Registration
checks it against the schema: a stage that reads an array no earlier stage writes is refused
here, at import.
"""

from __future__ import annotations

from workflows.runner.planning import Registry
from workflows.runner.stage_api import Stage
from workflows.stages.attribute import Attribute
from workflows.stages.evaluate import Evaluate
from workflows.stages.ingest import Ingest
from workflows.stages.maps import Aggregate, Normalize
from workflows.stages.predict import Predict
from workflows.stages.report import Report
from workflows.stages.sheets import Render

#: The stages in run order.
STAGES: tuple[Stage, ...] = (Ingest(), Predict(), Attribute(), Aggregate(), Normalize(),
                             Render(), Evaluate(), Report())
#: The registry every command uses.
REGISTRY = Registry(STAGES)
