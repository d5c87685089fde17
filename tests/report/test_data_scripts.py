"""The report's data scripts: JSON that no string can break out of."""

from __future__ import annotations

import json

import pytest

from pipeline.report.data_scripts import data_script, finite, script_json


def test_script_json_cannot_close_a_tag_and_stays_json() -> None:
    value = {"id": "</script><script>alert(1)</script>", "q": "\"'&é猫", "n": None}
    text = script_json(value)
    assert "<" not in text and ">" not in text and "&" not in text
    assert text.isascii()
    assert json.loads(text) == value


def test_script_json_refuses_nan() -> None:
    with pytest.raises(ValueError):
        script_json({"x": float("nan")})
    assert finite(float("nan")) is None
    assert finite(0.123456789) == 0.12346


def test_data_script_names_a_variable() -> None:
    assert data_script("XAI_X", [1]) == b"window.XAI_X = [1];\n"
    assert data_script("XAI_S", {"a": 1}, append=True).startswith(
        b"(window.XAI_S = window.XAI_S || []).push(")
    with pytest.raises(ValueError, match="identifier"):
        data_script("a; alert(1)", 1)
