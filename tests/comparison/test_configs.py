"""What differs between two saved configs."""

from __future__ import annotations

from pipeline.comparison.configs import Difference, differences, flatten


def test_flatten_nests_keys_with_dots() -> None:
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": "x"}) == {"a.b": 1, "a.c": [1, 2],
                                                             "d": "x"}


def test_differences_lists_changed_added_and_removed_keys() -> None:
    a = {"run": {"seed": 0, "out": "/x"}, "model": {"weights": "w1"},
         "methods": {"gradient": {}}, "stage_hashes": {"ingest": "1"}}
    b = {"run": {"seed": 0, "out": "/y"}, "model": {"weights": "w2"},
         "methods": {"gradient": {}, "grad_cam": {}}, "stage_hashes": {"ingest": "2"}}
    assert differences(a, b) == [Difference("methods.grad_cam", "absent", "{}"),
                                 Difference("model.weights", "w1", "w2")]


def test_equal_configs_differ_in_nothing() -> None:
    cfg = {"run": {"seed": 0}, "methods": {"gradient": {"abs": True}}}
    assert differences(cfg, dict(cfg)) == []
