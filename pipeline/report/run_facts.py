"""What the pages say about the run as a whole: the banner notes every page shows (random
weights, stages missing, nothing explained) and the summary page's run table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.report.templating import counted


def banner_notes(attrs: Mapping[str, Any], missing: Sequence[str], ok: int, n: int,
                 degenerate: Sequence[str] = ()) -> list[str]:
    """The warnings every page shows in a banner.

    Parameters
    ----------
    attrs
        The store's attributes (``random_weights``, ``warning``).
    missing
        The report's input stages with units not complete, in words.
    ok, n
        The images explained, of ``n``.
    degenerate
        Degenerate output found in the store, one message each
        (:mod:`pipeline.evaluation.degeneracy`).
    """
    notes = []
    if attrs.get("random_weights"):
        notes.append(str(attrs.get("warning") or "RANDOM WEIGHTS: the maps say nothing about "
                                                 "a real model."))
    notes.extend(str(d) for d in degenerate)
    if missing:
        notes.append("Stages missing, so some maps or scores are absent: " + "; ".join(missing)
                     + ". Run `xai run` with the same options to complete them.")
    if n and ok == 0 and not any(m.startswith("ingest") for m in missing):
        notes.append(f"All {n} images were skipped: there is nothing to explain. Each card "
                     "says why.")
    return notes


def run_facts(*, dataset: str, layout: str, methods: Sequence[str], config_file: str,
              attrs: Mapping[str, Any], images: int, ok: int, skipped: int,
              accuracy: Mapping[str, Any] | None = None, labelled: int | None = None
              ) -> list[tuple[str, Any]]:
    """The summary page's run table: ``(name, value)`` rows.

    Parameters
    ----------
    dataset, layout, methods, config_file
        The run's dataset name and layout, its methods in order, and its config file.
    attrs
        The store's attributes (weights, model, preprocessing, map spaces, ...).
    images, ok, skipped
        The images in all, explained and skipped.
    accuracy
        ``accuracy``, ``correct`` and ``labelled`` (None: no labels).
    labelled
        The images with a label, shown beside the layout (None: not known, as for a run
        whose summary predates the count).
    """
    report = attrs.get("model_report") or {}
    prep = attrs.get("preprocessing") or {}
    spaces = attrs.get("map_space") or {}
    acc = (f"{accuracy['accuracy']:.1%} ({accuracy['correct']} of {accuracy['labelled']} "
           "labelled images)") if accuracy else "— (no labels)"
    return [
        ("dataset", dataset),
        ("layout", layout if labelled is None
         else f"{layout} ({labelled} of {counted(images, 'image')} labelled)"),
        ("images", f"{images} ({ok} explained, {skipped} skipped)"),
        ("weights", attrs.get("weights_id", "")),
        ("random weights", "YES: the maps are meaningless" if attrs.get("random_weights")
         else "no"),
        ("model", "; ".join(f"{k}: {v}" for k, v in report.items()
                            if k in ("accuracy", "seconds", "key", "note")) or "—"),
        ("architecture", attrs.get("arch", "")),
        ("classes", f"{len(attrs.get('classes') or [])}"),
        ("top-1 accuracy", acc),
        ("preprocessing", ", ".join(f"{k} {v}" for k, v in prep.items()) or "—"),
        ("head", attrs.get("head", "")), ("precision", attrs.get("precision", "")),
        ("device", attrs.get("device", "")), ("target", attrs.get("target", "")),
        ("methods", ", ".join(methods)),
        ("maps", "; ".join(f"{m}: {spaces.get(m, 'input')}" for m in methods)),
        ("config hash", attrs.get("config_hash", "")),
        ("config file", config_file),
    ]
