"""The run's figures."""

from __future__ import annotations

from tests.report.evaluation_data import EVALUATION, _stat


def test_the_randomisation_figure_draws_every_method_or_nothing() -> None:
    from pipeline.render.figures import randomisation_figure

    fig = randomisation_figure(EVALUATION["randomisation"], 0.5)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert all(m in labels for m in EVALUATION["randomisation"])
    assert randomisation_figure({}, 0.5) is None
    assert randomisation_figure({"a": {"fc": _stat(None)}}, 0.5) is None

