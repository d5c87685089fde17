"""Error hierarchy.

Every error a user can trigger is a subclass of :class:`XaiError`, and its message says what was
expected, what was found, and what to do about it. The CLI prints these without a traceback.
"""

from __future__ import annotations


class XaiError(Exception):
    """Base class of every error this project raises on purpose."""


class ConfigError(XaiError, ValueError):
    """A configuration file or override is invalid."""


class DataError(XaiError):
    """A dataset cannot be found or read."""


class WeightsError(XaiError):
    """Model weights cannot be obtained or loaded."""


class StoreError(XaiError):
    """The Zarr store is missing, incompatible or damaged."""


class LockError(XaiError):
    """Another run holds the output directory."""


class DiskFullError(XaiError, OSError):
    """The disk ran out of space while writing results."""


class SchedulerError(XaiError):
    """The scheduler or its workers cannot run this run; the message says what to do."""


class TaskFailed(XaiError):
    """A shard task raised; the message names the unit and the worker's error."""
