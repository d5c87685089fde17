"""The summary page: the answer first, which method to trust."""

from __future__ import annotations

import re

from pipeline.report.summary_page import overview_table, summary_page
from pipeline.report.verdicts import sanity_verdicts, sign_caveat
from tests.report.evaluation_data import EVALUATION, SIGNS
from tests.report.html_tables import _tables


def test_the_overview_has_a_row_per_method_the_floor_and_the_best_per_column() -> None:
    verdicts = sanity_verdicts(EVALUATION)
    rows = _tables(overview_table(EVALUATION, SIGNS, verdicts))[0]
    header = [c[2] for c in rows[0][1]]
    assert header[:2] == ["method", "map"]
    assert header[2].startswith("deletion") and "↓ lower is better" in header[2]
    assert header[3].startswith("sparseness") and "↑ higher is better" in header[3]
    assert header[4].startswith("model randomisation")
    body = {r[0]["data-method"]: r[1] for r in rows[1:]}
    assert list(body) == ["gradient", "custom_gradient", "integrated_gradients", "random"]
    assert body["random"][0][2] == "random maps (floor)"
    best = {h: [m for m, cells in body.items() if "best" in cells[k][1].get("class", "")]
            for k, h in ((2, "deletion"), (3, "sparseness"))}
    assert best == {"deletion": ["custom_gradient"], "sparseness": ["custom_gradient"]}
    assert body["custom_gradient"][2][2].startswith("★ 0.2 [0.19, 0.21]")
    assert "chance" in body["gradient"][2][1]["class"], "0.30 lies in the floor's interval"
    assert body["integrated_gradients"][3][2] == "—"
    assert [body[m][1][2] for m in SIGNS] == ["absolute", "signed", "signed"]
    assert body["gradient"][4][2] == "does not depend on the model"
    assert body["custom_gradient"][4][2] == "lower layers only"
    assert body["integrated_gradients"][4][2] == "depends on the model"


def test_the_sign_caveat_appears_only_where_signed_and_unsigned_maps_are_mixed() -> None:
    caveat = sign_caveat(SIGNS)
    assert caveat is not None
    assert "custom_gradient, integrated_gradients" in caveat and "gradient: absolute" in caveat
    assert sign_caveat({"a": "signed", "b": "signed"}) is None
    assert sign_caveat({"a": "absolute", "b": "non-negative"}) is None
    page = summary_page("t", [], {}, None, EVALUATION, [], [], [], SIGNS)
    assert 'id=sign-caveat' in page
    alone = summary_page("t", [], {}, None, EVALUATION, [], [], [],
                            dict.fromkeys(SIGNS, "signed"))
    assert "sign-caveat" not in alone


def test_the_summary_page_puts_the_answer_before_the_run_facts() -> None:
    page = summary_page("t", [("dataset", "d")], {}, None, EVALUATION, [], [], [], SIGNS,
                           "plots/randomisation.png")
    order = [page.index(s) for s in ("Which method to trust", "Sanity check: model "
                                     "randomisation", "<h2>Run</h2>", "metric by metric")]
    assert order == sorted(order)
    assert '<img src="plots/randomisation.png"' in page
    sentences = re.findall(r'<li class="verdict (\w+)" data-method="(\w+)">', page)
    assert sorted(m for _k, m in sentences) == sorted(SIGNS)
    sanity = _tables(page)[1]
    assert [c[2] for c in sanity[0][1]][:3] == ["method", "trained", "fc"]
    assert [c[2] for c in sanity[0][1]][-1] == "+ layer1, conv1, bn1"
    bare = summary_page("t", [], {}, None, {}, [], [], [], SIGNS)
    assert "Not evaluated" in bare and "[evaluate]" in bare


def test_the_wall_time_is_never_a_figure_the_run_had_not_reached() -> None:
    from pipeline.report.summary_page import timings

    stage = {"stage": "predict", "units_run": 1, "units_total": 1, "images": 4}
    # inside a run: summary.json's seconds is not written yet (0), the time so far is known
    inside = timings({"stages": [stage], "seconds": 0.0, "seconds_when_built": 98.7})
    assert inside["wall"] == ("This command had run for 98.7 s of wall time when it built "
                              "this report (its total is in summary.json).")
    # a report built on its own: the last run's summary.json
    later = timings({"stages": [stage], "seconds": 98.7, "run_at": "2026-12-07T07:00:00"})
    assert later["wall"] == "The run of 2026-12-07T07:00:00 took 98.7 s of wall time."
    assert timings({"stages": [stage], "seconds": 0.0})["wall"] == (
        "The command's wall time is not known yet.")
    page = summary_page("t", [], {}, {"stages": [stage], "seconds": 0.0,
                                      "seconds_when_built": 98.7}, {}, [], [], [])
    assert "took 0 s" not in page and "had run for 98.7 s" in page


def test_an_undefined_completeness_counts_its_images_in_words() -> None:
    from pipeline.report.summary_page import completeness_rows

    rows = completeness_rows({"completeness": [
        {"method": "integrated_gradients", "median": None, "zero_gap": 1},
        {"method": "deeplift", "median": None, "zero_gap": 3}]})
    assert [r[2] for r in rows] == ["undefined: F(x) = F(baseline) for 1 image",
                                    "undefined: F(x) = F(baseline) for 3 images"]
