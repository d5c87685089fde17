"""`xai bench --quick`: every section runs and the report is written (numbers not asserted)."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.attribution.quadrature import QUADRATURE_RULES
from tests.workflow_helpers import cli


@pytest.mark.slow
def test_quick_bench_writes_markdown_and_json(tmp_path):
    result = cli("bench", "--quick", "--size", "32", "--images", "2", "--n-steps", "4",
                 "--nt-samples", "2", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    md = (tmp_path / "bench-cpu.md").read_text()
    for section in ("**gradient**", "**ig**", "**smoothgrad**", "**precision**", "**memory**",
                    "**quadrature**", "**stage**", "**render**", "**evaluate**", "**report**",
                    "**user-setup**", "**measured for the targets**"):
        assert section in md
    data = json.loads((tmp_path / "bench-cpu.json").read_text())
    names = {r["name"] for r in data["rows"]}
    keys = {(r["section"], r["method"], r["variant"]) for r in data["rows"]}
    for key in (("ig", "captum", "defaults-batch"), ("ig", "ours", "linspace-mean"),
                ("ig", "custom-explainers", "default"), ("stage", "ours", "attribute"),
                ("render", "pillow", "sheet"), ("precision", "ours-ig", "fp32-fwd"),
                ("evaluate", "quantus", "pixel-flipping"), ("evaluate", "ours", "pixel-flipping"),
                ("evaluate", "ours-engine", "pixel-flipping"), ("report", "report", "build"),
                ("user-setup", "captum", "defaults-1"), ("user-setup", "custom-explainers",
                                                           "defaults-2")):
        assert key in keys, key
    measured = {name: value for name, value, _unit in data["checks"]}
    for name in ("ig_vs_captum_defaults_batch", "custom_explainers_vs_captum_defaults_batch",
                 "render_per_image_vs_matplotlib", "whole_run_over_attribute_streaming",
                 "smoothgrad_vs_noise_tunnel", "fp32_fwd_speed_over_fp32",
                 "peak_memory_over_planned_budget", "attribute_stage_vs_naive_loop",
                 "pixel_flipping_vs_quantus", "pixel_flipping_engine_vs_quantus",
                 "report_build_64_images_s", "custom_explainers_vs_captum_defaults_user_setup_1img",
                 "custom_explainers_vs_captum_defaults_user_setup_2img"):
        assert name in measured and measured[name] > 0, name
    assert "captum IG, defaults (per image)" in names
    assert "captum IG, defaults (one call on the batch)" in names
    assert "ours, linspace_mean rule, stem not factored" in names
    for rule in QUADRATURE_RULES:
        assert f"{rule}: steps to 1%" in names
    # Each rule's sweep stops at the first m within 1%: no row after it is below 1%.
    for rule in QUADRATURE_RULES:
        errs = [r["rel_err"] for r in data["rows"]
                if r["section"] == "quadrature" and r["name"].startswith(f"{rule} m=")]
        assert errs and all(e > 0.01 for e in errs[:-1])
    assert "ours, linspace_mean rule (planned batch, channels_last)" in names
    assert "ours, get_custom_integrated_gradients' default call on the plain model" in names
    assert "naive Captum loop + .npy" in names
    assert {"matplotlib sheet (baseline)", "Pillow sheet (lookup tables)"} <= names
    assert {"ours: whole run, streaming", "ours: whole run, stages one after another"} <= names
    assert all(r["images_per_s"] is None or r["images_per_s"] > 0 for r in data["rows"])
    errors = [r["rel_err"] for r in data["rows"] if r["section"] == "precision"]
    assert errors and all(e is not None and e >= 0 for e in errors)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_bench_on_a_missing_gpu_says_so_before_any_work(tmp_path):
    result = cli("bench", "--device", "cuda", "--out", str(tmp_path))
    assert result.exit_code == 2
    assert "Expected a CUDA device" in result.output
    assert "Traceback" not in result.output
    assert not list(tmp_path.iterdir())


def test_bench_rejects_an_unknown_device(tmp_path):
    result = cli("bench", "--device", "gpu", "--out", str(tmp_path))
    assert result.exit_code == 2
    assert "Expected --device auto, cpu, cuda or cuda:N, got 'gpu'" in result.output


@pytest.mark.parametrize("option,value", [("--images", "0"), ("--n-steps", "1"),
                                          ("--nt-samples", "0"), ("--size", "4")])
def test_bench_rejects_values_it_cannot_measure(tmp_path, option, value):
    result = cli("bench", "--quick", option, value, "--out", str(tmp_path))
    assert result.exit_code == 2
    assert option in result.output
    assert "Traceback" not in result.output


def test_bench_is_a_command_from_outside_the_package():
    """`xai bench` comes from the ``xai.commands`` entry point (the package never imports
    the benchmarks); where its module is missing (an installed wheel) the command says so."""
    import importlib.metadata

    import typer
    from typer.testing import CliRunner

    from workflows.cli.app import COMMANDS_GROUP, missing_command

    entries = {e.name: e.value for e in importlib.metadata.entry_points(group=COMMANDS_GROUP)}
    assert entries == {"bench": "benchmarks.command:register"}
    assert "bench" in cli("--help").output
    app = typer.Typer()
    missing_command(app, "nobench", "benchmarks.gone:register",
                    ImportError("No module named 'benchmarks.gone'"))
    app.command("other")(lambda: None)  # two commands: typer names them on the command line
    result = CliRunner().invoke(app, ["nobench"])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "Expected benchmarks.gone:register for `xai nobench`" in text
    assert "source checkout" in text and "Traceback" not in text


def test_bench_arch_measures_ig_against_captum_and_grad_cam(tmp_path):
    result = cli("bench", "--arch", "mobilenet_v3_small", "--quick", "--size", "32",
                 "--images", "2", "--n-steps", "4", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    (entry,) = json.loads((tmp_path / "bench-arch-cpu.json").read_text())
    assert entry["arch"] == "mobilenet_v3_small" and entry["ratio linspace_mean vs best captum"] > 0
    names = [r["name"] for r in entry["rows"]]
    assert any(n.startswith("captum IG") for n in names)
    assert any(n.startswith("grad_cam at features") for n in names)
    errors = [r["rel_err"] for r in entry["rows"] if r["section"] == "ig"]
    assert all(e is not None and e < 1e-4 for e in errors), errors
    assert "| mobilenet_v3_small |" in (tmp_path / "bench-arch-cpu.md").read_text()


def test_bench_arch_refuses_an_unknown_name_before_measuring(tmp_path):
    result = cli("bench", "--arch", "resnet18", "--arch", "resnt50", "--out", str(tmp_path))
    assert result.exit_code == 2 and "did you mean resnet50" in result.output
    assert not (tmp_path / "bench-arch-cpu.json").exists()


@pytest.mark.slow
def test_bench_arch_takes_a_hugging_face_folder(tmp_path):
    pytest.importorskip("transformers")
    from tests.models.sources.hf_tiny import save_tiny

    folder = save_tiny("vit", tmp_path / "tiny-vit", size=32)
    result = cli("bench", "--arch", f"hf:{folder}", "--quick", "--images", "1",
                 "--n-steps", "4", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    (entry,) = json.loads((tmp_path / "bench-arch-cpu.json").read_text())
    assert entry["arch"] == f"hf:{folder}" and entry["size"] == 32
    assert entry["ratio linspace_mean vs best captum"] > 0
    names = [r["name"] for r in entry["rows"]]
    assert any(n.startswith("grad_cam at model.vit.layers.1.layernorm_before") for n in names)
    errors = [r["rel_err"] for r in entry["rows"] if r["section"] == "ig"]
    assert all(e is not None and e < 1e-4 for e in errors), errors
