"""The comparison benchmark's store-only runs are runs a comparison reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.bench_compare import CLASSES, store_run
from workflows.commands.compare_runs import CompareSettings, prepare


def test_store_only_runs_are_comparable(tmp_path: Path) -> None:
    a = store_run(tmp_path / "A", 70, 0)
    b = store_run(tmp_path / "B", 70, 1)
    cmp = prepare(a, b, tmp_path / "cmp", CompareSettings())
    assert len(cmp.match.ids) == 70 and cmp.explainers == ["gradient"]
    assert [p.index for p in cmp.plans] == [0, 1, 2]
    assert cmp.labelled and cmp.a.classes == CLASSES
    assert np.asarray(cmp.a.view.array("pred")[:]).tolist() == [i % 10 for i in range(70)]
