"""Class names: ImageNet's (names and WordNet ids in class-index order), a class-names file,
and the names of a checkpoint with its own classes. Torch-free."""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path

from pipeline.errors import WeightsError


@cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet class names in class-index order (torchvision's categories)."""
    text = resources.files("pipeline.resources").joinpath("torchvision_models.json").read_text()
    names = tuple(json.loads(text)["imagenet_categories"])
    if len(names) != 1000:
        raise WeightsError(f"Expected 1000 ImageNet categories, got {len(names)}.")
    return names


@cache
def imagenet_synsets() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids in class-index order (``n01440764`` is class 0)."""
    text = resources.files("pipeline.resources").joinpath("imagenet_synsets.txt").read_text()
    ids = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(ids) != 1000:
        raise WeightsError(f"Expected 1000 WordNet ids in imagenet_synsets.txt, got {len(ids)}.")
    return ids


@cache
def synset_to_index() -> dict[str, int]:
    """Map a WordNet id to its ImageNet class index."""
    return {wnid: i for i, wnid in enumerate(imagenet_synsets())}


def read_classes_file(path: str | Path) -> tuple[str, ...]:
    """Class names, one a line (blank lines and surrounding spaces ignored).

    Raises
    ------
    WeightsError
        When the file cannot be read, holds no name, or names a class twice.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise WeightsError(f"Expected a class-names file at {p} (one name a line), but it "
                           f"cannot be read: {exc.strerror}. Fix [model] classes (or "
                           "--classes).") from None
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not names:
        raise WeightsError(f"Expected class names in {p}, one a line, got none.")
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})[:5]
        raise WeightsError(f"Expected each class once in {p}, got {', '.join(twice)} twice.")
    return names


def resolve_classes(count: int, classes: Sequence[str] | str | Path | None,
                    dataset_classes: Sequence[str] | None, where: str
                    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A checkpoint's class names, and the warnings to show.

    ``classes`` (names, or a ``classes.txt`` file, one a line) wins; else the dataset's
    class folders (sorted, as torchvision's ``ImageFolder`` numbers them) when there are
    ``count`` of them; else ``class_0...``, with a warning.

    Parameters
    ----------
    count
        The classifier's output width.
    classes
        Names in output order, or a file of them; None: not given.
    dataset_classes
        The dataset's class folders, sorted.
    where
        The model, in words, for messages (``"the model in w.pth"``).
    """
    if classes is not None and not isinstance(classes, Sequence | str | Path):
        classes = None
    if isinstance(classes, str | Path):
        names = read_classes_file(classes)
        source = str(classes)
    elif classes:
        names, source = tuple(classes), "[model] classes"
    else:
        names, source = (), ""
    if names:
        if len(names) != count:
            raise WeightsError(
                f"Expected {count} class names for {where} (its classifier has {count} "
                f"outputs), got {len(names)} in {source}. Fix [model] classes (or --classes), one "
                "name a line in output order.")
        return names, ()
    if dataset_classes and len(dataset_classes) == count:
        return tuple(dataset_classes), ()
    made = tuple(f"class_{i}" for i in range(count))
    return made, (f"{where}: no class names given ([model] classes = \"classes.txt\" or "
                  f"--classes FILE, one a line), so its {count} outputs are called class_0 "
                  f"... class_{count - 1}.",)
