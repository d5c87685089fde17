"""Chunk locks: concurrent writers of one pooled chunk lose nothing."""

from __future__ import annotations

import multiprocessing as mp
import threading

import numpy as np
import pytest

from pipeline.errors import StoreError
from pipeline.store import locks
from pipeline.store.access import create_store
from pipeline.store.axes import resize_explainers
from pipeline.store.schema import SCHEMA
from pipeline.store.view import StoreView

N_IMAGES, SHARD, ROUNDS = 8, 2, 25


def _store(tmp_path, methods=("a", "b", "c", "d"), name="delta", layout="method"):
    group = create_store(tmp_path / "s.zarr", [f"i{k}" for k in range(N_IMAGES)],
                         [0] * N_IMAGES, SHARD, {"layout": layout})
    resize_explainers(group, list(methods))
    SCHEMA.create(group, name, {"image": N_IMAGES, "explainer": len(methods), "y": 3, "x": 3},
                  SHARD)
    return tmp_path / "s.zarr"


def _writer(path: str, slot: int, name: str = "delta") -> None:
    """Every shard of explainer ``slot``, ``ROUNDS`` times over: the last round's values are
    ``slot * 100 + round``."""
    view = StoreView(path)
    shape = (SHARD, *view.array(name).shape[2:])
    for r in range(ROUNDS):
        for start in range(0, N_IMAGES, SHARD):
            view.write(name, slice(start, start + SHARD),
                       np.full(shape, slot * 100 + r, np.float32), slot)


def _assert_every_write_kept(path, slots, name="delta"):
    got = np.asarray(StoreView(path).array(name)[:])
    for slot in slots:
        assert (got[slot] == slot * 100 + ROUNDS - 1).all(), (slot, got[slot])


def test_the_delta_chunk_holds_every_slot_and_shard(tmp_path):
    path = _store(tmp_path)
    arr = StoreView(path).array("delta")
    assert arr.chunks[0] >= 4 and arr.chunks[1] >= N_IMAGES, "one chunk: the writers share it"


def test_threads_writing_one_chunk_lose_nothing(tmp_path):
    path = _store(tmp_path)
    threads = [threading.Thread(target=_writer, args=(str(path), s)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _assert_every_write_kept(path, range(4))


def test_threads_writing_the_methods_of_one_shard_file_lose_nothing(tmp_path):
    # [store] layout = "shard": every method's maps of a shard in one file, one task each.
    path = _store(tmp_path, name="aggregated", layout="shard")
    assert StoreView(path).array("aggregated").shards[:2] == (8, SHARD)
    threads = [threading.Thread(target=_writer, args=(str(path), s, "aggregated"))
               for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _assert_every_write_kept(path, range(4), "aggregated")


def test_processes_writing_one_chunk_lose_nothing(tmp_path):
    path = _store(tmp_path)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), s)) for s in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    _assert_every_write_kept(path, range(4))


@pytest.fixture()
def taken(monkeypatch):
    """The (array, chunks) of every lock the store takes, in order."""
    calls = []
    real = locks.chunk_lock

    def spy(*args, **kw):
        calls.append(args[1:])
        return real(*args, **kw)

    monkeypatch.setattr("pipeline.store.view.chunk_lock", spy)
    return calls


def test_a_write_of_whole_chunks_takes_no_lock(tmp_path, taken):
    path = _store(tmp_path)
    view = StoreView(path)
    view.write("delta", slice(0, N_IMAGES), np.zeros((4, N_IMAGES), np.float32))
    assert taken == [], "the whole array: no other writer can share its chunk"
    view.write("delta", slice(2, 4), np.ones(2, np.float32), 1)
    assert taken == [("delta", [(0, 0)])]


def test_a_method_s_write_to_a_shard_file_locks_the_file(tmp_path, taken):
    path = _store(tmp_path, name="raw", layout="shard")
    StoreView(path).write("raw", slice(2, 4), np.ones((2, 3, 3, 3), np.float32), 1)
    assert taken == [("raw", [(0, 1, 0, 0, 0)])], "shard 1's file, which holds 8 methods"


def test_the_lock_file_lies_beside_the_store(tmp_path):
    path = _store(tmp_path)
    _writer(str(path), 0)
    assert locks.lock_path(path) == tmp_path / ".s.zarr.lock"
    assert locks.lock_path(path).is_file()
    assert not list(path.rglob("*.lock")), "inside the store, Zarr would warn about it"


def test_a_file_system_without_record_locks_is_named(tmp_path, monkeypatch):
    import errno

    def refuse(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(locks.fcntl, "lockf", refuse)
    with pytest.raises(StoreError, match=r"record locks.*-o flock"), \
            locks.chunk_lock(tmp_path / "s.zarr", "delta", [(0, 0)]):
        pass
