"""workflows.runner.completion_records.Records: the append-only record logs."""

from __future__ import annotations

import json
import pickle

from workflows.runner.completion_records import Records


def test_a_record_is_read_back_by_another_reader(tmp_path):
    Records(tmp_path).mark_done("attribute/gradient/000003", "h1", checksum="c")
    rec = Records(tmp_path).get("attribute/gradient/000003")
    assert rec["hash"] == "h1" and rec["checksum"] == "c"
    assert Records(tmp_path).is_done("attribute/gradient/000003", "h1")
    assert not Records(tmp_path).is_done("attribute/gradient/000003", "other")
    assert (tmp_path / "state" / "attribute" / "gradient.jsonl").is_file()
    assert [p.name for p in (tmp_path / "state").rglob("*") if p.is_file()] == ["gradient.jsonl"]


def test_a_reader_sees_only_whole_lines_and_what_was_added_since(tmp_path):
    writer, reader = Records(tmp_path), Records(tmp_path)
    writer.mark_done("predict/000000", "h")
    assert reader.in_folder("predict") == ["predict/000000"]
    line = json.dumps({"unit": "predict/000001", "hash": "h"}).encode()
    with open(writer.path("predict/000001"), "ab") as log:  # an append under way
        log.write(line[:10])
    assert reader.get("predict/000001") is None
    with open(writer.path("predict/000001"), "ab") as log:
        log.write(line[10:] + b"\n")
    assert reader.get("predict/000001")["hash"] == "h"


def test_a_torn_last_line_is_no_record_and_the_next_starts_a_line_of_its_own(tmp_path):
    recs = Records(tmp_path)
    recs.mark_done("ingest/000000", "h")
    with open(recs.path("ingest/000000"), "ab") as log:  # a crash in the middle of a line
        log.write(b'{"unit": "ingest/000001", "ha')
    recs.mark_done("ingest/000002", "h")
    fresh = Records(tmp_path)
    assert fresh.in_folder("ingest") == ["ingest/000000", "ingest/000002"]
    assert fresh.get("ingest/000001") is None


def test_the_newest_line_wins_and_a_dropped_key_is_not_done(tmp_path):
    recs = Records(tmp_path)
    recs.mark_done("render/000000", "old")
    recs.mark_done("render/000000", "new")
    recs.mark_done("render/000001", "new")
    recs.drop("render/000001")
    fresh = Records(tmp_path)
    assert fresh.get("render/000000")["hash"] == "new"
    assert fresh.get("render/000001") is None
    assert fresh.in_folder("render") == ["render/000000"]


def test_a_log_of_mostly_old_lines_is_rewritten_with_the_live_ones(tmp_path):
    recs = Records(tmp_path)
    for round_ in range(20):
        for i in range(10):
            recs.mark_done(f"normalize/m/{i:06d}", f"h{round_}")
    lines = recs.path("normalize/m/000000").read_bytes().splitlines()
    assert len(lines) <= 2 * 10 + 64 + 1
    fresh = Records(tmp_path)
    assert {k: r["hash"] for k, r in fresh.entries("normalize/m").items()} == {
        f"normalize/m/{i:06d}": "h19" for i in range(10)}


def test_records_of_an_older_run_are_read_dropped_and_cleared(tmp_path):
    old = tmp_path / "state" / "aggregate" / "gradient"
    old.mkdir(parents=True)
    for i in range(3):
        (old / f"{i:06d}.json").write_text(json.dumps({"unit": f"aggregate/gradient/{i:06d}",
                                                       "hash": "h"}))
    recs = Records(tmp_path)
    assert recs.is_done("aggregate/gradient/000001", "h")
    recs.mark_done("aggregate/gradient/000003", "h")
    assert recs.in_folder("aggregate/gradient") == [f"aggregate/gradient/{i:06d}"
                                                    for i in range(4)]
    recs.drop("aggregate/gradient/000000")
    assert not (old / "000000.json").exists()
    assert Records(tmp_path).get("aggregate/gradient/000000") is None
    assert recs.clear("aggregate") == 3
    assert not recs.in_folder("aggregate/gradient") and not old.exists()


def test_clearing_a_stage_clears_its_methods_and_only_them(tmp_path):
    recs = Records(tmp_path)
    recs.put_all({"evaluate/000000": {"hash": "h"}, "evaluate/gradient/000000": {"hash": "h"},
                  "evaluate/smoothgrad/000001": {"hash": "h"}, "report/000000": {"hash": "h"}})
    assert recs.folders("evaluate") == ["evaluate", "evaluate/gradient", "evaluate/smoothgrad"]
    assert recs.clear("evaluate") == 3
    assert recs.in_folder("evaluate") == [] and recs.in_folder("report") == ["report/000000"]


def test_records_survive_pickling(tmp_path):
    recs = Records(tmp_path)
    recs.mark_done("predict/000000", "h")
    again = pickle.loads(pickle.dumps(recs))
    assert again.get("predict/000000")["hash"] == "h"
