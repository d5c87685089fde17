"""The scale benchmark's 5,000-image variant (slow suite): ``xai run`` end to end on 5,000
synthetic images with the report on and one file per shard, then ``status`` and ``verify``
as a user types them. It checks what must hold at any size, not how fast: every image is
done, the records and the store's files are bounded by the stages and the shards, the page
embeds no rows. Timings are the benchmark's (docs/performance.md, "ImageNet scale")."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pytest

from benchmarks.bench_scale import measure

#: XAI_SCALE_IMAGES: a smaller run, to try the checks quickly.
IMAGES, SHARD = int(os.environ.get("XAI_SCALE_IMAGES", "5000")), 32

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def row(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("scale")
    return {**measure(IMAGES, out, shard=SHARD, browser=False, layout="shard"), "out": out}


def test_every_image_is_done_and_status_and_verify_agree(row: dict) -> None:
    for key in ("status_s", "verify_s", "verify_sample_s"):
        assert isinstance(row[key], float), (key, row[key])  # the command exited 0
    status = row["outputs"]["status_s"]
    lines = [[c.strip() for c in line.split("│")[1:-1]] for line in status.splitlines()
             if line.startswith("│")]
    assert [c[0] for c in lines if c[0]] == ["ingest", "predict", "attribute", "aggregate",
                                            "normalize", "render", "report"], status
    for cells in lines:
        assert cells[2:] == [str(IMAGES), str(IMAGES), "0", "done"], (cells, status)
    assert f"images: {IMAGES}, skipped: 0" in status
    verify = row["outputs"]["verify_s"]
    done = re.search(r"finished, (\d+)/(\d+) shards", verify)
    assert done and done[1] == done[2] and int(done[1]) >= math.ceil(IMAGES / SHARD) * 5, \
        verify
    assert "all data matches its records" in verify
    sample = row["outputs"]["verify_sample_s"]
    assert "finished, 20/20 shards" in sample and "drawn at random" in sample, sample
    assert "all data matches its records" in sample


def test_records_and_store_files_are_bounded_by_stages_and_shards(row: dict) -> None:
    shards = math.ceil(IMAGES / SHARD)
    assert row["record_files"] <= 12, "one log per stage (and method), not one per unit"
    # layout "shard": pixels, mask, logits, raw, aggregated, normalized a shard; the small
    # arrays pooled (a file per 256 shards each) and the metadata.
    assert row["store_files"] <= 6 * shards + 100, row["store_files"]


def test_the_gallery_page_embeds_no_rows(row: dict) -> None:
    index = Path(row["out"]) / f"scale{IMAGES}" / "report" / "index.html"
    assert index.is_file()
    assert index.stat().st_size < 64 * 1024, "the rows load per shard, never inline"
