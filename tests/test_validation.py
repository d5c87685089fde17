"""pipeline.validation: the one validator of single values, its types, its bounds and its
messages, checked with exact answers."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from pipeline.validation import Rule, rule, type_name, type_problem, value_problem

INF, NAN = math.inf, math.nan

# ------------------------------------------------------------------------------------ types


@pytest.mark.parametrize(("tp", "value"), [
    (bool, True), (bool, False),
    (int, 0), (int, -3),
    (float, 1.5), (float, 2),  # an integer is a fine float
    (float, INF),  # the type admits it; the rule decides (below)
    (str, ""), (str, "x"),
    (Path, "images"), (Path, Path("images")),
    (tuple[str, ...], ["a", "b"]), (tuple[str, ...], ("a",)), (tuple[str, ...], []),
    (tuple[float, ...], [1, 2.5]), (tuple[float, ...], (0.5,)),
    (dict, {}),  # any other type: isinstance
])
def test_type_problem_admits(tp: Any, value: Any) -> None:
    assert type_problem(tp, value) is None


@pytest.mark.parametrize(("tp", "value", "message"), [
    # bool is an int to Python, but not to a config
    (int, True, "expected an integer, got True"),
    (int, 2.0, "expected an integer, got 2.0"),
    (int, "2", "expected an integer, got '2'"),
    (float, False, "expected a number, got False"),
    (float, "1.5", "expected a number, got '1.5'"),
    (bool, 1, "expected true or false, got 1"),
    (bool, "true", "expected true or false, got 'true'"),
    (str, 3, "expected a string, got 3"),
    (Path, "", "expected a path string, got ''"),
    (Path, 3, "expected a path string, got 3"),
    # a string is no list of strings, however iterable
    (tuple[str, ...], "ab", "expected a list of strings, got 'ab'"),
    (tuple[str, ...], ["a", 1], "expected a list of strings, got ['a', 1]"),
    (tuple[float, ...], [1.0, True], "expected a list of numbers, got [1.0, True]"),
    (tuple[float, ...], ["1"], "expected a list of numbers, got ['1']"),
    (tuple[float, ...], 1.0, "expected a list of numbers, got 1.0"),
    (dict, [], "expected dict, got []"),
])
def test_type_problem_refuses_with_the_message(tp: Any, value: Any, message: str) -> None:
    assert type_problem(tp, value) == message


def test_type_name_reads_as_prose() -> None:
    assert [type_name(t) for t in (bool, int, float, str, Path, tuple[str, ...],
                                   tuple[float, ...], tuple[int, ...], dict)] == [
        "true or false", "an integer", "a number", "a string", "a path string",
        "a list of strings", "a list of numbers", "a list of numbers", "dict"]


# -------------------------------------------------------------------------------- choices


def test_choices_admit_only_their_values() -> None:
    modes = rule(choices=["left", "right"])
    assert modes.choices == ("left", "right")  # any sequence, kept as a tuple
    assert modes.problem("left") is None
    assert modes.problem("middle", "rule") == \
        "expected rule to be one of left, right, got 'middle'"


def test_choices_are_checked_before_the_bounds() -> None:
    r = rule(choices=[1, 2, 50], le=10)
    assert r.problem(2) is None
    assert r.problem(3, "n") == "expected n to be one of 1, 2, 50, got 3"
    assert r.problem(50, "n") == "expected n <= 10, got 50"


# --------------------------------------------------------------------------------- bounds


@pytest.mark.parametrize(("bounds", "at", "inside", "outside"), [
    # closed bounds admit the bound itself
    ({"ge": 2}, 2, 2.5, 1.999),
    ({"le": 1}, 1, 0.5, 1.001),
    # open bounds refuse it
    ({"gt": 0}, None, 1e-12, -1e-12),
    ({"lt": 1}, None, 0.999, 1.001),
])
def test_bounds_closed_or_open_at_the_exact_bound(bounds: dict[str, float], at: Any,
                                                  inside: float, outside: float) -> None:
    r = rule(**bounds)
    bound = next(iter(bounds.values()))
    assert r.problem(inside) is None
    assert r.problem(outside) is not None
    if at is None:
        assert r.problem(bound) is not None, f"open bound {bounds} admitted its bound"
    else:
        assert r.problem(at) is None, f"closed bound {bounds} refused its bound"


def test_a_bound_refusal_says_the_inequality() -> None:
    assert rule(ge=2).problem(1, "n_steps") == "expected n_steps >= 2, got 1"
    assert rule(gt=0).problem(0, "sigma") == "expected sigma > 0, got 0"
    assert rule(gt=0, le=1).problem(1.5, "fraction") == "expected 0 < fraction <= 1, got 1.5"
    assert rule(ge=0, lt=1).problem(1, "p") == "expected 0 <= p < 1, got 1"
    assert rule(lt=1).problem(1) == "expected value < 1, got 1"


@pytest.mark.parametrize("r", [
    rule(), rule(ge=0), rule(le=INF), rule(ge=-INF, le=INF), rule(gt=0, le=INF),
    rule(choices=[NAN]),
], ids=repr)
def test_nan_is_never_a_value(r: Rule) -> None:
    problem = r.problem(NAN, "x")
    assert problem is not None
    if r.choices is None:
        assert problem == "expected x to be a finite number, got nan"


def test_infinity_only_where_a_closed_bound_equals_it() -> None:
    refused = "expected x to be a finite number, got inf"
    assert rule().problem(INF, "x") == refused
    assert rule(gt=0).problem(INF, "x") == refused
    assert rule(lt=INF).problem(INF, "x") == refused  # an open bound at infinity
    assert rule(gt=0, le=INF).problem(INF) is None
    assert rule(ge=0, le=INF).problem(INF) is None
    assert rule(ge=-INF).problem(-INF) is None
    assert rule(ge=-INF).problem(INF, "x") == refused  # the other infinity
    assert rule(le=INF).problem(-INF, "x") == "expected x to be a finite number, got -inf"


def test_integers_are_bounded_too() -> None:
    assert rule(ge=1, le=3).problem(3) is None
    assert rule(ge=1, le=3).problem(4, "k") == "expected 1 <= k <= 3, got 4"


def test_bounds_leave_non_numbers_to_the_check() -> None:
    assert rule(ge=0).problem("text") is None
    assert rule(ge=0).problem(True) is None  # true is no number; its type was checked first


# ---------------------------------------------------------------------------------- check


def test_check_runs_after_the_bounds_and_only_when_they_pass() -> None:
    seen: list[Any] = []

    def odd(value: Any) -> str | None:
        seen.append(value)
        return None if value % 2 else f"expected an odd number, got {value}"

    r = rule(ge=0, check=odd)
    assert r.problem(-1, "n") == "expected n >= 0, got -1"
    assert seen == []
    assert r.problem(3) is None
    assert r.problem(4) == "expected an odd number, got 4"
    assert seen == [3, 4]


def test_check_does_not_run_after_a_refused_choice() -> None:
    def never(value: Any) -> str | None:
        raise AssertionError(f"check ran on {value!r}")

    assert rule(choices=["a"], check=never).problem("b") == \
        "expected value to be one of a, got 'b'"


# ---------------------------------------------------------------------------- bounds_text


@pytest.mark.parametrize(("r", "text"), [
    (rule(gt=0, le=1), "0 < x <= 1"),
    (rule(ge=0, lt=1), "0 <= x < 1"),
    (rule(ge=2), "x >= 2"),  # a lower bound only reads from the name
    (rule(gt=0), "x > 0"),
    (rule(gt=0, le=INF), "x > 0"),  # an upper bound of infinity says nothing
    (rule(ge=0.5, le=INF), "x >= 0.5"),
    (rule(le=1), "x <= 1"),
    (rule(lt=1e-5), "x < 1e-05"),
    (rule(), ""),
    (rule(choices=["a"]), ""),
])
def test_bounds_text(r: Rule, text: str) -> None:
    assert r.bounds_text("x") == text


def test_bounds_text_names_value_by_default() -> None:
    assert rule(ge=1, le=4).bounds_text() == "1 <= value <= 4"


# -------------------------------------------------------------------------- value_problem


def test_value_problem_the_type_wins_over_the_rule() -> None:
    def never(value: Any) -> str | None:
        raise AssertionError(f"check ran on {value!r}")

    # True would also break the rule's choices; the type's message comes first.
    assert value_problem(int, rule(choices=[2, 3], check=never), True, "n") == \
        "expected an integer, got True"
    assert value_problem(float, rule(ge=0), "1", "x") == "expected a number, got '1'"


def test_value_problem_then_the_rule() -> None:
    assert value_problem(int, rule(ge=2), 1, "n_steps") == "expected n_steps >= 2, got 1"
    assert value_problem(float, rule(gt=0, le=INF), INF) is None
    assert value_problem(float, rule(gt=0), NAN, "s") == \
        "expected s to be a finite number, got nan"
    assert value_problem(int, rule(ge=2), 2) is None


def test_value_problem_without_a_rule_checks_the_type_only() -> None:
    assert value_problem(float, None, -INF) is None
    assert value_problem(str, None, 1) == "expected a string, got 1"
