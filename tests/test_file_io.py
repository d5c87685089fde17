"""pipeline.file_io: an atomic write leaves the old file or the whole new one."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from pipeline.file_io import write_atomic


def test_write_atomic_replaces_and_shares(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "a.json"
    write_atomic(path, b"old")
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.json"]


def test_write_atomic_interrupted_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    write_atomic(path, b"old")
    seen: list[str] = []

    def die() -> None:
        seen.extend(p.name for p in tmp_path.iterdir() if p.name.endswith(".png.tmp"))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, b"new", before_rename=die)
    assert len(seen) == 1 and seen[0].startswith(".a.")  # the whole new file was there, hidden
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]
