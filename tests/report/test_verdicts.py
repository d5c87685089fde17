"""The sanity check's verdicts and the signed-map caveat."""

from __future__ import annotations

from pipeline.report.verdicts import SANITY_THRESHOLD, sanity_verdict, sanity_verdicts
from tests.report.evaluation_data import EVALUATION, _curve, _stat


def test_the_sanity_verdict_uses_the_absolute_correlation_and_a_documented_line() -> None:
    assert SANITY_THRESHOLD == 0.5
    v = sanity_verdicts(EVALUATION)
    assert v["integrated_gradients"].kind == "depends"
    assert "-0.10 [-0.15, -0.05]" in v["integrated_gradients"].sentence
    assert "(fc)" in v["integrated_gradients"].sentence
    # A map that flips its sign (-0.8) keeps its structure: it falls below the line later.
    assert v["custom_gradient"].kind == "lower" and "layer3" in v["custom_gradient"].sentence
    assert v["gradient"].kind == "independent"
    stuck = sanity_verdict("guided_backprop", _curve(0.9, 0.9, 0.8, 0.7, 0.6))
    assert stuck.kind == "independent" and "do not depend on the model" in stuck.sentence
    assert "layer1, conv1, bn1" in stuck.sentence and "0.60 [0.55, 0.65]" in stuck.sentence
    assert sanity_verdict("x", {"fc": _stat(None)}).kind == "untested"
    assert sanity_verdict("x", _curve(0.64), threshold=0.7).kind == "depends"
    for m, verdict in v.items():
        assert verdict.sentence.startswith(f"{m}: ")
