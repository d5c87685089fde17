"""Dataset layouts: turn a folder (or a recipe) into a fixed, sorted list of images and labels.

Layouts
-------
``class-folders``
    ``root/<class>/<file>``: the folder is the label, by the model's class name (a fine-tuned
    model's, as torchvision's ``ImageFolder`` numbers them) or by ImageNet WordNet id
    (``root/n01440764/...``: the prepared ImageNet val folder, Imagenette).
``flat-csv``
    Images below ``root`` with a CSV beside them, in one of two forms: ``path,label``
    (``path`` relative to the CSV's folder, ``label`` a class name of the model, matched
    without regard to case, or a WordNet id), or ImageNet's ``ImageId,PredictionString``
    (``root/<ImageId>.<ext>``; the first token is the label). Images the CSV does not name
    get label -1.
``plain``
    Every image below ``root``, recursively, no labels.
``synthetic``
    ``count`` generated images; no files.
``evidence``
    ``count`` generated images with known evidence (:mod:`pipeline.data.evidence_dataset`):
    a shape on a background cut from the photos in ``root``; the shape is the class, its
    pixels the mask.
``auto``
    ``flat-csv`` when the CSV exists (``labels_csv``, else the one ``*.csv`` in ``root``);
    ``class-folders`` when at least one sub-folder that holds images is named as a class
    (a class of the model, or anything spelled as a WordNet id); otherwise ``plain``. Once
    one folder names a class, the folders are taken as meant for labels, so a folder that
    is not a class (a typo, a WordNet id beside names) is an error rather than a run
    without labels; folders none of which is a class (``2024/``, ``misc/``) stay ``plain``.
"""

from __future__ import annotations

import csv
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.class_names import imagenet_classes, synset_to_index
from pipeline.data.discovery import discover_images, is_image_file
from pipeline.errors import DataError

WNID = re.compile(r"^n\d{8}$")

LAYOUT_HELP = (
    "Put the images there in one of these layouts:\n"
    "  class folders:  <root>/n01440764/ILSVRC2012_val_00000293.JPEG  (one folder per WordNet id,"
    " as in the prepared ImageNet val folder or Imagenette)\n"
    "  flat + CSV:     <root>/ILSVRC2012_val_00000001.JPEG ... and <root>/LOC_val_solution.csv"
    " (columns ImageId,PredictionString; the first token is the WordNet id)\n"
    "  path + label:   <root>/cats/1.jpg ... and <root>/labels.csv (columns path,label; a label"
    " is one of the model's class names)\n"
    "  plain:          any images below <root> (no labels)"
)
#: How to run labelled-looking images without labels on purpose, for the errors below.
PLAIN_HINT = ("To run these images without labels on purpose, use the plain layout: "
              "--set dataset.layout=\"plain\" (or layout = \"plain\" in the config's [dataset]).")
#: Unknown names listed one per line in an error, at most.
LISTED = 10
#: The columns of the free-form label CSV (the other form is ImageNet's).
PATH_LABEL = ("path", "label")
IMAGENET_CSV = ("ImageId", "PredictionString")


@dataclass(frozen=True)
class Manifest:
    """The fixed image list of a run.

    Attributes
    ----------
    ids
        Dataset-relative POSIX paths (or ``synthetic/NNNNNN``), sorted.
    labels
        Class index per image (of the model's classes), -1 when unknown.
    layout
        The layout actually used (``auto`` resolved).
    """

    ids: tuple[str, ...]
    labels: tuple[int, ...]
    layout: str

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def labelled(self) -> int:
        """How many images have a label."""
        return sum(1 for label in self.labels if label >= 0)

    def describe(self) -> str:
        """The layout and the labelled count in words: ``class-folders (3 of 3 images
        labelled)``."""
        return f"{self.layout} ({self.labelled} of {len(self)} images labelled)"


class Labels:
    """Turns a dataset's label names (folder names, CSV tokens) into class indices: by the
    model's class name, or by ImageNet WordNet id for an ImageNet-1k model."""

    def __init__(self, classes: Sequence[str] | None, where: Path) -> None:
        self.classes = tuple(classes) if classes is not None else imagenet_classes()
        self.by_name = {name: i for i, name in enumerate(self.classes)}
        # Free-form labels ("Cat" for a model's "cat") match without regard to case, where
        # that names one class only.
        folded: dict[str, list[int]] = defaultdict(list)
        for i, name in enumerate(self.classes):
            folded[name.casefold()].append(i)
        self.by_folded = {k: v[0] for k, v in folded.items() if len(v) == 1}
        self.imagenet = self.classes == imagenet_classes()
        self.where = where

    def knows(self, name: str) -> bool:
        return (name in self.by_name or name.casefold() in self.by_folded
                or (self.imagenet and name in synset_to_index()))

    def index(self, name: str) -> int:
        if name in self.by_name:
            return self.by_name[name]
        if name.casefold() in self.by_folded:
            return self.by_folded[name.casefold()]
        if self.imagenet and name in synset_to_index():
            return synset_to_index()[name]
        raise self.error([name])

    def suggestions(self, names: Sequence[str]) -> list[str]:
        """Classes close to ``names`` (by spelling, or containing the name), a few."""
        import difflib

        out: list[str] = []
        for name in names:
            low = name.casefold()
            out += [c for c in self.classes if low and low in c.casefold()][:3]
            out += difflib.get_close_matches(name, self.classes, n=3, cutoff=0.6)
            words = {w for w in re.split(r"[\W_]+", low) if len(w) >= 3}
            out += [c for c in self.classes
                    if words & set(re.split(r"[\W_]+", c.casefold()))][:5]
        return list(dict.fromkeys(out))[:5]

    def error(self, names: Sequence[str], what: str = "folder") -> DataError:
        """The error for label names that are not classes: each listed (at most
        :data:`LISTED`) with the classes close to it, and how to run unlabelled instead.
        ``what``: ``"folder"`` or ``"label"`` (a CSV's)."""
        unknown = sorted(set(names))
        shown = unknown[:LISTED]
        more = f"\n  ... and {len(unknown) - LISTED} more" if len(unknown) > LISTED else ""
        plural = "s" if len(unknown) > 1 else ""
        if self.imagenet and all(WNID.match(n) for n in unknown):
            listed = "".join(f"\n  {n!r}" for n in shown)
            return DataError(
                f"Expected ImageNet-1k WordNet ids as {what} names in {self.where}, got "
                f"{len(unknown)} {what}{plural} that {'are' if plural else 'is'} not among the "
                f"1000 classes:{listed}"
                f"{more}\n{PLAIN_HINT}")
        lines = []
        for name in shown:
            close = self.suggestions([name])[:3]
            lines.append(f"\n  {name!r} (close: {', '.join(repr(c) for c in close)})" if close
                         else f"\n  {name!r} (no class is close)")
        examples = ", ".join(repr(c) for c in self.classes[:4]) + \
            (" ..." if len(self.classes) > 4 else "")
        return DataError(
            f"Expected every {what} name in {self.where} to be a class of the model (one of "
            f"its {len(self.classes)} classes, such as {examples}), got {len(unknown)} "
            f"{what}{plural} that {'are' if plural else 'is'} not:{''.join(lines)}{more}\n"
            f"Rename {'them' if plural else 'it'} after the model's classes ([model] classes "
            "or --classes for a checkpoint's own names; WordNet ids for an ImageNet model), or "
            f"leave {'them' if plural else 'it'} out. {PLAIN_HINT}")


def class_folders(root: Path) -> tuple[str, ...]:
    """The sub-folders of ``root`` (hidden ones left out), sorted: the classes torchvision's
    ``ImageFolder`` would number 0, 1, ..."""
    if root is None or not root.is_dir():
        return ()
    return tuple(sorted(p.name for p in root.iterdir()
                        if p.is_dir() and not p.name.startswith(".")))


def _holds_images(folder: Path) -> bool:
    """Whether ``folder`` holds an image at any depth (hidden files and folders left out);
    stops at the first one found."""
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if not any(part.startswith(".") for part in rel.parts) and is_image_file(path):
            return True
    return False


def image_folders(root: Path) -> tuple[str, ...]:
    """The sub-folders of ``root`` that hold images (at any depth), sorted: the ones a
    class-folders layout labels."""
    return tuple(name for name in class_folders(root) if _holds_images(root / name))


def _class_folders(root: Path, labels_of: Labels) -> tuple[list[str], list[int]]:
    ids: list[str] = []
    labels: list[int] = []
    unknown: list[str] = []
    for rel in discover_images(root):
        if "/" not in rel:
            continue
        top = rel.split("/", 1)[0]
        if not labels_of.knows(top):
            unknown.append(top)
            continue
        ids.append(rel)
        labels.append(labels_of.index(top))
    if unknown:
        raise labels_of.error(unknown)
    return ids, labels


def _read_label_csv(path: Path) -> tuple[str, dict[str, str]]:
    """The CSV's form (``"path"`` or ``"imagenet"``) and its table: image path (relative to
    the CSV's folder, POSIX) or ImageId (a file stem) -> label name."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip() for f in reader.fieldnames or []]
            reader.fieldnames = fields
            if set(PATH_LABEL) <= set(fields):
                return "path", {Path(row["path"].strip()).as_posix(): (row["label"] or "").strip()
                                for row in reader if row.get("path")}
            if set(IMAGENET_CSV) <= set(fields):
                return "imagenet", {row["ImageId"]: (row["PredictionString"] or "").split(" ")[0]
                                    for row in reader}
            raise DataError(
                f"Expected the columns path,label (or ImageNet's ImageId,PredictionString) in "
                f"{path}, got {fields}. Put a header line `path,label` first; path is relative "
                "to the CSV's folder.")
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"Cannot read the label CSV {path}: {exc}") from exc


def _flat_csv(root: Path, csv_path: Path, labels_of: Labels) -> tuple[list[str], list[int]]:
    form, table = _read_label_csv(csv_path)
    if form == "path":
        base = csv_path.parent
        ids = discover_images(root)
        prefix = root.relative_to(base).as_posix() + "/" if root != base else ""
        missing = [p for p in table if not (base / p).is_file()]
        if missing:
            raise DataError(
                f"Expected the images {csv_path} names, but {len(missing)} are missing (e.g. "
                f"{missing[0]!r}). Paths are relative to the CSV's folder {base}.")

        def name_of(rel: str) -> str:
            return table.get(prefix + rel, "")
    else:
        ids = [p.name for p in sorted(root.iterdir()) if is_image_file(p) and p.is_file()]

        def name_of(rel: str) -> str:
            return table.get(Path(rel).stem, "")
    labels: list[int] = []
    unknown: list[str] = []
    for rel in ids:
        name = name_of(rel)
        if name and not labels_of.knows(name):
            if form == "imagenet" and labels_of.imagenet and WNID.match(name):
                raise DataError(f"Expected an ImageNet-1k WordNet id for {rel} in {csv_path}, "
                                f"got {name!r}.")
            unknown.append(name)
            continue
        labels.append(labels_of.index(name) if name else -1)
    if unknown:
        labels_of.where = csv_path
        raise labels_of.error(unknown, "label")
    return ids, labels


def _label_csv_path(root: Path, labels_csv: str) -> Path | None:
    """``labels_csv`` in ``root`` or its parent; else the one ``*.csv`` in ``root`` (None
    when there is none; an error when there are several and none is named)."""
    for folder in (root, root.parent):
        candidate = folder / labels_csv
        if candidate.is_file():
            return candidate
    found = sorted(p for p in root.glob("*.csv") if p.is_file())
    if len(found) > 1:
        raise DataError(
            f"Expected one label CSV in {root}, found {len(found)} "
            f"({', '.join(p.name for p in found[:4])}). Name the one to use with "
            "--set dataset.labels_csv=NAME.")
    return found[0] if found else None


def detect_layout(root: Path, labels_csv: str, classes: Sequence[str] | None = None) -> str:
    """Resolve ``auto`` for an existing folder (``classes``: the model's class names; None:
    ImageNet's): ``flat-csv`` when there is a label CSV, ``class-folders`` when at least one
    sub-folder that holds images is named as a class (a class of the model, by name without
    regard to case, or anything spelled as a WordNet id), else ``plain``."""
    if _label_csv_path(root, labels_csv) is not None:
        return "flat-csv"
    labels_of = Labels(classes, root)
    if any(WNID.match(name) or labels_of.knows(name) for name in image_folders(root)):
        return "class-folders"
    return "plain"


def check_labels(layout: str, root: Path, *, labels_csv: str = "LOC_val_solution.csv",
                 classes: Sequence[str] | None = None) -> str:
    """Resolve ``layout`` and check the dataset's label names against ``classes`` without
    listing every image: each class folder, or each label of the CSV, must be a class.
    What :func:`build_manifest` would refuse, refused before any work (the model's loading
    included, when its classes are known without it).

    Returns
    -------
    str
        The layout ``auto`` resolves to (``layout`` itself otherwise).

    Raises
    ------
    DataError
        A folder or CSV label that is not a class, listed with the classes close to it and
        how to run the images unlabelled on purpose; a CSV that cannot be read.
    """
    resolved = detect_layout(root, labels_csv, classes) if layout == "auto" else layout
    labels_of = Labels(classes, root)
    if resolved == "class-folders":
        unknown = [name for name in image_folders(root) if not labels_of.knows(name)]
        if unknown:
            raise labels_of.error(unknown)
    elif resolved == "flat-csv":
        csv_path = _label_csv_path(root, labels_csv)
        if csv_path is not None:
            _flat_csv(root, csv_path, labels_of)
    return resolved


def _subset(ids: list[str], labels: list[int], limit: int, per_class: int, layout: str
            ) -> tuple[list[str], list[int]]:
    if per_class:
        if layout == "plain":
            raise DataError(
                "Expected labels for per_class, but the 'plain' layout has none. Use a labelled "
                "layout (class-folders, flat-csv) or limit instead."
            )
        taken: dict[int, int] = defaultdict(int)
        keep = []
        for i, lab in enumerate(labels):
            if taken[lab] < per_class:
                taken[lab] += 1
                keep.append(i)
        ids, labels = [ids[i] for i in keep], [labels[i] for i in keep]
    if limit:
        ids, labels = ids[:limit], labels[:limit]
    return ids, labels


def build_manifest(
    layout: str,
    root: Path | None,
    *,
    labels_csv: str = "LOC_val_solution.csv",
    limit: int = 0,
    per_class: int = 0,
    count: int = 0,
    dataset_name: str = "dataset",
    classes: Sequence[str] | None = None,
) -> Manifest:
    """Discover the images of a dataset; the result is sorted and deterministic.

    ``classes`` are the model's class names (default: ImageNet's 1000): labels are their
    indices, found by name, or by WordNet id for an ImageNet-1k model.

    Raises
    ------
    DataError
        When the folder is missing or empty, with the layouts to put there.
    """
    if layout in ("synthetic", "evidence"):
        n = min(count, limit) if limit else count
        if layout == "evidence":
            from pipeline.data.evidence_dataset import label_of

            return Manifest(tuple(f"evidence/{i:06d}" for i in range(n)),
                            tuple(label_of(i) for i in range(n)), "evidence")
        return Manifest(tuple(f"synthetic/{i:06d}" for i in range(n)), (-1,) * n, "synthetic")
    check_root(root, dataset_name)
    assert root is not None
    resolved = detect_layout(root, labels_csv, classes) if layout == "auto" else layout
    labels_of = Labels(classes, root)
    if resolved == "class-folders":
        ids, labels = _class_folders(root, labels_of)
    elif resolved == "flat-csv":
        csv_path = _label_csv_path(root, labels_csv)
        if csv_path is None:
            raise DataError(
                f"Expected the label CSV {labels_csv} in {root} or its parent, but it is "
                f"missing.\n{LAYOUT_HELP}"
            )
        ids, labels = _flat_csv(root, csv_path, labels_of)
    else:
        ids = discover_images(root)
        labels = [-1] * len(ids)
    ids, labels = _subset(ids, labels, limit, per_class, resolved)
    if not ids:
        raise DataError(
            f"Expected images in {root} ({resolved} layout), found none.\n{LAYOUT_HELP}"
        )
    return Manifest(tuple(ids), tuple(labels), resolved)


def check_root(root: Path | None, dataset_name: str = "dataset") -> None:
    """The dataset's folder exists; else a :class:`DataError` saying which layouts to put
    there (checked before anything else of a run)."""
    if root is not None and root.is_file():
        csv_hint = (" A label CSV is found by itself beside the images (columns path,label or "
                    "ImageId,PredictionString); to pick one of several, add --set "
                    f"dataset.labels_csv={root.name}." if root.suffix.lower() == ".csv" else "")
        raise DataError(
            f"Expected a folder of images for dataset '{dataset_name}', got the file {root}. "
            f"Pass the folder that holds the images: --data-dir {root.parent}.{csv_hint}")
    if root is None or not root.is_dir():
        raise DataError(
            f"Expected the images of dataset '{dataset_name}' in {root}, but that folder does "
            f"not exist.\n{LAYOUT_HELP}\nOr point elsewhere with --data-dir DIR or XAI_DATA_DIR."
        )


def check_has_images(root: Path, layout: str) -> None:
    """``root`` holds at least one image file (hidden folders left out), found by walking it
    only until the first: an empty dataset is refused before the model loads.

    Raises
    ------
    DataError
        When there is none, with the layouts to put there.
    """
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if any(is_image_file(Path(folder) / name) for name in files):
            return
    which = "" if layout == "auto" else f" ({layout} layout)"
    raise DataError(f"Expected images in {root}{which}, found none.\n{LAYOUT_HELP}")


def synthetic_image(index: int, size: int, seed: int = 0) -> np.ndarray:
    """A deterministic smooth colour image ``(size, size, 3)`` uint8 for benchmarks and tests."""
    rng = np.random.default_rng([seed, index])
    coarse = rng.random((4, 4, 3))
    reps = -(-size // 4)
    up = np.kron(coarse, np.ones((reps, reps, 1)))[:size, :size]
    noise = rng.normal(0.0, 0.05, (size, size, 3))
    return (np.clip(up + noise, 0.0, 1.0) * 255).round().astype(np.uint8)
