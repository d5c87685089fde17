"""Planning: the stage registry, and the units, hashes and dependencies of a run.

A :class:`StageRegistry` holds stage plugins in run order and checks each against the store
schema as it is registered: every array family it reads must be written by an earlier stage
(or with the store), every family it writes must be declared in the schema and have no other
writer, and the stages it runs after are the writers of what it reads. Everything here is
pure planning, computed from a config; nothing runs or writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import ConfigError
from pipeline.store.schema import EXPLAINER, SCHEMA, ArrayFamily, Schema
from workflows.config.hashing import stable_hash
from workflows.config.run_config import Config
from workflows.runner.stage_api import CRASH_POINTS, STAGE_TYPES, UNIT_KINDS, Stage, Unit

Hashes = dict[tuple[str, str | None], str]


class RegistryError(ValueError):
    """A stage that cannot be registered; the message names the stage and what is wrong."""


class StageRegistry:
    """Stage plugins in run order, validated against ``schema``.

    Parameters
    ----------
    stages
        Registered in this order (:meth:`register`).
    schema
        The store's array families (:data:`pipeline.store.schema.SCHEMA`, or one extended
        with a plugin's own arrays).
    """

    def __init__(self, stages: Iterable[Stage] = (), schema: Schema = SCHEMA) -> None:
        self.schema = schema
        self._stages: dict[str, Stage] = {}
        #: Array family name -> the registered stage that writes it.
        self._writer_of: dict[str, str] = {}
        for stage in stages:
            self.register(stage)

    # ------------------------------------------------------------------ registration

    def register(self, stage: Stage) -> Stage:
        """Add ``stage`` after those registered so far; set its ``after``,
        ``written_families`` and ``schema``.

        Raises
        ------
        RegistryError
            A name used twice, an instance another registry holds, unknown crash points or
            unit, a read that no earlier stage writes (the message names the stage and the
            array), a write the schema does not declare or that another stage (or the store
            itself) writes already, a per-method stage whose arrays are not split by
            explainer (two tasks would write one chunk), or whose arrays without an
            explainer axis no :attr:`~workflows.runner.stage_api.Stage.shared` unit writes.
        """
        name = stage.name
        if stage.registered:
            raise RegistryError(f"Stage {name!r}: expected an instance no registry holds yet, "
                                f"got one that is registered already; register a new one, "
                                f"{type(stage).__name__}().")
        if not name or name in self._stages:
            raise RegistryError(f"Expected a new stage name, got {name!r} "
                                f"({'empty' if not name else 'registered already'}).")
        bad = set(stage.crash_points) - set(CRASH_POINTS)
        if bad:
            raise RegistryError(f"Stage {name!r}: expected crash points among "
                                f"{CRASH_POINTS}, got {sorted(bad)}.")
        if stage.unit not in UNIT_KINDS:
            raise RegistryError(f"Stage {name!r}: expected unit in {UNIT_KINDS}, got "
                                f"{stage.unit!r}.")
        after = self._writers(stage)
        writes = self._written_families(stage)
        if stage.per_method:
            shared = [f.name for f in writes if f.dims[:1] == (EXPLAINER,)
                      and not f.split_explainer]
            if shared:
                raise RegistryError(
                    f"Stage {name!r} runs per method, but the schema chunks {shared} across "
                    "every explainer, so two of its tasks would write one chunk. Declare "
                    "them with split_explainer=True.")
            per_shard = [f.name for f in writes if f.dims[:1] != (EXPLAINER,)]
            if per_shard and not stage.shared:
                raise RegistryError(
                    f"Stage {name!r} runs per method, but the schema says it writes "
                    f"{per_shard}, which have no explainer axis, so every method's task would "
                    "write them. Set shared = True on the stage (one unit per shard writes "
                    "them), or give them an explainer axis.")
        elif stage.shared:
            raise RegistryError(f"Stage {name!r}: expected shared = True only with "
                                "per_method = True (a per-shard stage's units are shared "
                                "already), got per_method = False.")
        stage.after = after
        stage.written_families = writes
        stage.schema = self.schema
        stage.registered = True
        self._stages[name] = stage
        self._writer_of.update((f.name, name) for f in writes)
        return stage

    def _written_families(self, stage: Stage) -> tuple[ArrayFamily, ...]:
        """The schema's families that ``stage`` writes, in schema order; each must be
        declared and have no writer yet."""
        for written in stage.writes:
            fam = self.schema.families.get(written)
            if fam is None:
                raise RegistryError(
                    f"Stage {stage.name!r} writes {written!r}, which the store schema "
                    f"(pipeline/store/schema.py) does not declare; declared: "
                    f"{', '.join(self.schema.families)}. Declare its array family there (a "
                    "plugin: SCHEMA.extended(...)), or fix the name in the stage's writes.")
            if fam.with_store:
                raise RegistryError(
                    f"Stage {stage.name!r} writes {written!r}, which the store itself "
                    "writes (with_store=True: create_store, resize_explainers, "
                    "write_classes); expected exactly one writer of each array. Remove "
                    f"{written!r} from the stage's writes.")
            other = self._writer_of.get(written)
            if other is not None:
                raise RegistryError(
                    f"Stage {stage.name!r} writes {written!r}, which stage {other!r} writes "
                    "already; expected exactly one writer of each array. Remove it from one "
                    "stage's writes, or give the new stage an array of its own.")
        return self.schema.in_order(stage.writes)

    def _writers(self, stage: Stage) -> tuple[str, ...]:
        """The registered stages that write what ``stage`` reads, in run order."""
        found: set[str] = set()
        for read in stage.reads:
            fam = self.schema.families.get(read)
            if fam is None:
                raise RegistryError(
                    f"Stage {stage.name!r} reads {read!r}, which the store schema "
                    "(pipeline/store/schema.py) does not declare. Declare its array family "
                    "there, and name it in the writes of the stage that writes it.")
            if fam.with_store:  # image, label, class_name, explainer
                continue
            writer = self._writer_of.get(read)
            if writer is None:
                raise RegistryError(
                    f"Stage {stage.name!r} reads {read!r}, but no earlier stage writes it: "
                    f"{self._missing_writer(read, stage.name)}, or read something an earlier "
                    "stage writes.")
            found.add(writer)
        return tuple(s for s in self._stages if s in found)

    def _missing_writer(self, read: str, reader: str) -> str:
        """What to do about ``read``, which no registered stage writes: register the
        project's stage that declares it (if one does) before ``reader``."""
        known = [t.name for t in STAGE_TYPES.values() if read in t.writes]
        if known:
            return (f"stage {known[0]!r} writes it, and {known[0]!r} is not registered "
                    f"before {reader!r}. Put {known[0]!r} before it in the run order")
        return (f"no registered stage names it in its writes. Register a stage that writes "
                f"it before {reader!r}")

    def writer_of(self, family: str) -> str | None:
        """The registered stage that writes array family ``family``; None when none does
        (the arrays written with the store, or one whose stage is not registered)."""
        return self._writer_of.get(family)

    # ------------------------------------------------------------------ lookup

    def __getitem__(self, name: str) -> Stage:
        return self._stages[name]

    def __contains__(self, name: object) -> bool:
        return name in self._stages

    def __iter__(self) -> Iterator[Stage]:
        return iter(self._stages.values())

    def __len__(self) -> int:
        return len(self._stages)

    def names(self) -> tuple[str, ...]:
        return tuple(self._stages)

    def index(self, name: str) -> int:
        return list(self._stages).index(name)

    def downstream(self, name: str) -> tuple[str, ...]:
        """``name`` and every stage that (transitively) reads its output, in run order."""
        out = [name]
        for stage in self:
            if any(up in out for up in stage.after) and stage.name not in out:
                out.append(stage.name)
        return tuple(out)

    def through(self, name: str, what: str) -> tuple[str, ...]:
        """:meth:`downstream` of a stage a user named (``what``: where, e.g. ``--force``);
        a :class:`ConfigError` listing the stages when there is no such stage."""
        if name not in self:
            raise ConfigError(f"Expected {what} to name a stage ({', '.join(self.names())}), "
                              f"got {name!r}.")
        return self.downstream(name)

    def upstream(self, name: str) -> set[str]:
        """Every stage whose output ``name`` reads (transitively)."""
        out: set[str] = set()
        todo = list(self[name].after)
        while todo:
            up = todo.pop()
            if up not in out:
                out.add(up)
                todo += list(self[up].after)
        return out

    # ------------------------------------------------------------------ units and hashes

    def units(self, stage: Stage, n: int, cfg: Config) -> list[Unit]:
        """The units of ``stage`` over ``n`` images: fixed, contiguous runs (the last may be
        short), per method for a per-method stage; none when it is off."""
        size = stage.unit_size(cfg)
        return [Unit(stage.name, m, i, s, min(s + size, n))
                for m in stage.methods(cfg) for i, s in enumerate(range(0, n, size))]

    def all_units(self, n: int, cfg: Config) -> list[Unit]:
        return [u for stage in self for u in self.units(stage, n, cfg)]

    def hashes(self, cfg: Config, weights_id: str) -> Hashes:
        """Per (stage, method): the hash of its own config values chained with its inputs'.

        Changing one method's ``n_steps`` changes that method's ``attribute`` hash and those
        that read it (its ``aggregate``, ``normalize`` and ``evaluate``, and ``render`` and
        ``report``), and nothing else: not evaluate's random floor (see
        :meth:`upstream_methods`).
        """
        out: Hashes = {}
        for stage in self:
            for method in stage.methods(cfg):
                upstream = []
                for up in stage.after:
                    up_stage = self[up]
                    if not up_stage.methods(cfg):
                        continue  # turned off under this config: nothing to read
                    upstream += [out[(up, m)]
                                 for m in self.upstream_methods(stage, method, up_stage, cfg)]
                own = stage.depends(cfg, method, weights_id)
                out[(stage.name, method)] = stable_hash([stage.name, method, own, upstream])
        return out

    def dependencies(self, unit: Unit, cfg: Config, n: int, streaming: bool = True
                     ) -> list[Unit]:
        """The units whose output ``unit`` reads.

        Streaming: the units of each upstream stage that overlap ``unit``'s images (of the
        same method, where both are per method). Not streaming: every unit of every earlier
        stage, so each stage starts only when the previous ones are complete.
        """
        stage = self[unit.stage]
        if not streaming:
            earlier = list(self)[:self.index(stage.name)]
            return [u for s in earlier for u in self.units(s, n, cfg)]
        out = []
        for up in stage.after:
            up_stage = self[up]
            if not up_stage.methods(cfg):
                continue
            size = up_stage.unit_size(cfg)
            first, last = unit.start // size, (unit.stop - 1) // size
            for m in self.upstream_methods(stage, unit.method, up_stage, cfg):
                for i in range(first, last + 1):
                    out.append(Unit(up, m, i, i * size, min((i + 1) * size, n)))
        return out

    @staticmethod
    def upstream_methods(stage: Stage, method: str | None, up: Stage, cfg: Config
                         ) -> tuple[str | None, ...]:
        """Which of ``up``'s units (by method) a unit of ``stage`` for ``method`` reads.

        A per-shard upstream: its one unit. A per-method upstream: the same method's; for a
        per-shard stage, every unit of it (the shared one too); for the :attr:`shared
        <workflows.runner.stage_api.Stage.shared>` unit of a per-method stage, only the
        upstream's own shared unit, if any: what every method shares never waits for (or is
        made stale by) one method.
        """
        if not up.per_method:
            return (None,)
        if method is not None:
            return (method,)
        if stage.per_method:
            return (None,) if up.shared else ()
        return up.methods(cfg)

    def priority(self, unit: Unit, method_order: tuple[str, ...]) -> int:
        """Lower runs first: shard by shard, earlier stages first within a shard."""
        method_index = method_order.index(unit.method) if unit.method in method_order else 0
        return (unit.start * 16 + self.index(unit.stage)) * 64 + method_index


def hash_key(stage: str, method: str | None) -> str:
    """The key of a (stage, method) hash in store attributes and ``config.resolved.json``."""
    return f"{stage}/{method}" if method else stage


def flat_hashes(hashes: Mapping[tuple[str, str | None], str]) -> dict[str, str]:
    return {hash_key(s, m): h for (s, m), h in hashes.items()}


@dataclass
class Plan:
    """Every stage's units under a config, and those without a current record.

    ``planned[name]`` and ``pending[name]`` list a stage's units; a stage that is off has
    none. :meth:`only` narrows both to one stage (``xai evaluate``, ``xai report``).
    """

    planned: dict[str, list[Unit]]
    pending: dict[str, list[Unit]]
    hashes: Hashes = field(default_factory=dict)

    @classmethod
    def make(cls, registry: StageRegistry, cfg: Config, n: int, records: Any, hashes: Hashes
             ) -> Plan:
        planned = {stage.name: registry.units(stage, n, cfg) for stage in registry}
        pending = {name: [u for u in units
                          if not records.is_done(u.key, hashes[(u.stage, u.method)])]
                   for name, units in planned.items()}
        return cls(planned, pending, hashes)

    def only(self, name: str) -> Plan:
        keep = {k: (v if k == name else []) for k, v in self.planned.items()}
        todo = {k: (v if k == name else []) for k, v in self.pending.items()}
        return Plan(keep, todo, self.hashes)

    def queue(self) -> list[Unit]:
        """Every pending unit, in run order."""
        return [u for units in self.pending.values() for u in units]
