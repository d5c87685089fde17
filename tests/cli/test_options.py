"""What ``--classes``, ``--method`` and ``--evaluate`` write into a run's config, and how an
option that is wrong is blamed on the option."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.evaluation.metrics import default_metrics
from workflows.cli.options import (
    check_methods,
    config_for_command,
    with_command_line_choices,
)


def _own(tmp_path: Path, *sets: str):
    """The config ``xai run --data-dir`` makes (configs/templates/own.toml)."""
    return config_for_command(None, None, list(sets), data_dir=tmp_path, out=tmp_path / "runs")


def test_the_default_metrics_are_those_that_need_no_mask():
    assert default_metrics() == ("sparseness", "deletion", "insertion")


def test_method_adds_each_method_with_its_defaults_after_the_configs_own(tmp_path):
    from pipeline.attribution.method_registry import METHODS

    cfg = with_command_line_choices(_own(tmp_path), methods=["grad_cam", "guided_backprop"])
    assert list(cfg.methods) == ["gradient", "integrated_gradients", "smoothgrad", "grad_cam",
                                 "guided_backprop"]
    assert dict(cfg.methods["grad_cam"]) == METHODS["grad_cam"].resolve({})
    assert dict(cfg.methods["guided_backprop"]) == METHODS["guided_backprop"].resolve({})


def test_method_keeps_the_parameters_the_config_gives(tmp_path):
    cfg = with_command_line_choices(
        _own(tmp_path, "methods.integrated_gradients.n_steps=7"),
        methods=["integrated_gradients", "integrated_gradients"])
    assert list(cfg.methods) == ["gradient", "integrated_gradients", "smoothgrad"]
    assert cfg.methods["integrated_gradients"]["n_steps"] == 7


def test_method_as_the_set_override_it_replaces(tmp_path):
    """``--method grad_cam`` is what ``--set 'methods.grad_cam={}'`` was: the same config."""
    by_option = with_command_line_choices(_own(tmp_path), methods=["grad_cam"])
    by_set = _own(tmp_path, "methods.grad_cam={}")
    assert by_option.to_dict() == by_set.to_dict()


@pytest.mark.parametrize(("name", "expected"), [
    ("gradcam", "--method: Expected a method in [gradient, integrated_gradients, smoothgrad, "
                "custom_gradient, custom_integrated_gradients, input_x_gradient, grad_cam, "
                "guided_grad_cam, guided_backprop, deeplift], got 'gradcam'; did you mean "
                "'grad_cam'? Pass a registered name"),
    ("zzz", "got 'zzz'. Pass a registered name"),
])
def test_an_unknown_method_is_the_registrys_error_blamed_on_the_option(name, expected):
    with pytest.raises(ConfigError) as info:
        check_methods(["gradient", name])
    assert expected in str(info.value)


def test_classes_is_the_model_classes_key_resolved_against_the_working_directory(
        tmp_path, monkeypatch):
    (tmp_path / "names.txt").write_text("cat\ndog\n")
    monkeypatch.chdir(tmp_path)
    cfg = with_command_line_choices(_own(tmp_path), classes=Path("names.txt"))
    assert cfg.model.classes == tmp_path.resolve() / "names.txt"
    by_set = _own(tmp_path, f"model.classes={str(tmp_path / 'names.txt')!r}")
    assert by_set.model.classes == cfg.model.classes


def test_a_missing_classes_file_is_blamed_on_the_option(tmp_path):
    with pytest.raises(ConfigError, match=r"^--classes: expected a file of class names \(one "
                                          r"a line\) at nothing.txt, but there is none"):
        with_command_line_choices(_own(tmp_path), classes=Path("nothing.txt"))


def test_evaluate_turns_on_the_default_metrics(tmp_path):
    cfg = _own(tmp_path)
    assert cfg.evaluate.metrics == ()  # off in the template: the option is what turns it on
    assert with_command_line_choices(cfg, evaluate=True).evaluate.metrics == default_metrics()
    assert with_command_line_choices(cfg, evaluate=False).evaluate.metrics == ()


def test_evaluate_keeps_the_metrics_a_config_names(tmp_path):
    cfg = with_command_line_choices(_own(tmp_path, "evaluate.metrics=['pointing_game']"),
                                    evaluate=True)
    assert cfg.evaluate.metrics == ("pointing_game",)


def test_no_option_leaves_the_config_as_it_is(tmp_path):
    cfg = _own(tmp_path)
    assert with_command_line_choices(cfg) is cfg
