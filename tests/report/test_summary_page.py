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
