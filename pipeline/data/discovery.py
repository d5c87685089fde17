"""Which files of a folder are images: torch-free, so that planning a run (and a rerun with
nothing to do) never imports torch."""

from __future__ import annotations

from pathlib import Path

#: File extensions (lower case) treated as images during discovery.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)


def is_image_file(path: Path) -> bool:
    """True for visible files whose extension is a known image type."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def discover_images(root: Path, exclude_hidden_dirs: bool = True) -> list[str]:
    """All image files below ``root``, as sorted POSIX paths relative to ``root``.

    Hidden files and folders (``.DS_Store``, ``.git``) are skipped; symlinked files are
    followed, and a broken link is still listed (so the run reports it instead of silently
    dropping it); the order is fixed so that shards never move between runs.
    """
    found: list[str] = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if exclude_hidden_dirs and any(part.startswith(".") for part in rel.parts):
            continue
        if is_image_file(path) and (path.is_file() or path.is_symlink()):
            found.append(rel.as_posix())
    return sorted(found)
