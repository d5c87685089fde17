"""Re-exports of :mod:`workflows.runner.completion_records`, :mod:`workflows.runner.run_lock`
and :mod:`workflows.runner.disk_writes`."""

# re-exported until importers move
from workflows.runner.completion_records import Records  # noqa: F401
from workflows.runner.disk_writes import (  # noqa: F401
    atomic_write_bytes,
    atomic_write_json,
    disk_errors,
    read_json,
)
from workflows.runner.run_lock import RunLock  # noqa: F401
