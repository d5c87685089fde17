"""Publishing the report's folder: it is assembled in a private build folder (hard links to
the per-shard parts, and the pages) and put in the report's place in one step, so a reader,
and a build killed half-way, leaves the old report or the new one, never a mix.

Everything in the folder is a relative path, so it can be moved or zipped.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.report.sprites import CROP, OUTLINE, map_kind
from pipeline.report.templating import RESOURCES


def link_tree(src: Path, dst: Path) -> int:
    """Hard-link every file under ``src`` into ``dst`` (a copy where links fail, e.g. across
    file systems); return the number of files."""
    count = 0
    for root, _dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            if name.startswith("."):  # temporary files of an interrupted write
                continue
            s, d = Path(root) / name, dst / rel / name
            try:
                os.link(s, d)
            except OSError:
                shutil.copy2(s, d)
            count += 1
    return count


def link_tree_file(src: Path, dst: Path) -> None:
    """Hard-link one file (a copy where links fail)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_files(folder: Path, files: Mapping[str, bytes | str]) -> None:
    """Write ``files`` (relative path -> content) under ``folder`` (a private build folder:
    the folder as a whole is published atomically, so single files need no temp names)."""
    for rel, content in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)


def copy_assets(folder: Path) -> None:
    """The page's static script and stylesheet into ``folder/assets``."""
    (folder / "assets").mkdir(parents=True, exist_ok=True)
    for name in ("gallery.js", "report.css"):
        shutil.copyfile(RESOURCES / name, folder / "assets" / name)


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    ok = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0
    return bool(ok)


def old_path(target: Path) -> Path:
    """Where :func:`publish` moves the old report while the new one takes its place."""
    return target.with_name(f".{target.name}.old")


def recover(target: Path) -> None:
    """Undo what a publication killed half-way left: put the old folder back where the new
    one never arrived, and remove left-over build and old folders."""
    old = old_path(target)
    if old.exists() and not target.exists():
        os.rename(old, target)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)
    for build in target.parent.glob(f".{target.name}.build-*"):
        shutil.rmtree(build, ignore_errors=True)


def build_folder(target: Path) -> Path:
    """A fresh private folder next to ``target`` to build the new report in."""
    recover(target)
    build = target.parent / f".{target.name}.build-{os.getpid()}"
    if build.exists():
        shutil.rmtree(build)
    build.mkdir(parents=True)
    return build


def publish(build: Path, target: Path) -> None:
    """Put the finished folder ``build`` in ``target``'s place.

    Readers see the old report or the new one, never a mix: an atomic exchange of the two
    folders where the system has one (Linux), else two renames that :func:`recover` completes
    or undoes after a crash between them.
    """
    if target.exists():
        if _exchange(build, target):
            shutil.rmtree(build, ignore_errors=True)  # now holds the old report
            return
        old = old_path(target)
        if old.exists():
            shutil.rmtree(old)
        os.rename(target, old)
        os.rename(build, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(build, target)


def remove(path: Path) -> None:
    """Remove the folder ``path`` if it is there."""
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)


def assemble(parts: Path, target: Path, shards: Sequence[Mapping[str, Any]], n_methods: int,
             files: Mapping[str, bytes | str],
             before_publish: Callable[[], None] = lambda: None) -> None:
    """Assemble the report from the shards' parts and ``files`` in a private folder, then put
    it in ``target``'s place in one step (:func:`publish`).

    Parameters
    ----------
    parts
        The per-shard parts: ``data/shard-NNNNNN.js`` and the sprites under ``img/<kind>/``.
    shards
        The shards the report shows: ``index`` and ``file`` (the rows' path in ``parts``);
        their sprites are hard-linked, any other shard's are left out.
    n_methods
        The number of methods (map kinds ``m0`` ... ``m<n_methods - 1>``).
    files
        Relative path -> content: the pages, the data scripts, the plots.
    before_publish
        Called once the folder is complete, just before it is published.
    """
    build = build_folder(target)
    try:
        (build / "data").mkdir(parents=True, exist_ok=True)
        wanted = {int(shard["index"]) for shard in shards}
        for shard in shards:
            link_tree_file(parts / shard["file"], build / shard["file"])
        for kind in [CROP, OUTLINE, *(map_kind(j) for j in range(n_methods))]:
            folder = parts / "img" / kind
            # One listing a kind, not one a shard: the sprites of the shards shown.
            for name in sorted(os.listdir(folder)) if folder.is_dir() else []:
                if name[:6].isdigit() and int(name[:6]) in wanted and not name.startswith("."):
                    link_tree_file(folder / name, build / "img" / kind / name)
        write_files(build, files)
        copy_assets(build)
        before_publish()
        publish(build, target)
    except BaseException:
        remove(build)
        raise
