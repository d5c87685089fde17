"""The command line as a person meets it: help that reads whole, your own images in one
command, later commands on the run folder, and ``xai explain`` checking its arguments
before any model loads."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.workflow_helpers import ROOT, cli

COMMANDS = [[], ["run"], ["evaluate"], ["report"], ["status"], ["clean"], ["verify"],
            ["explain"], ["datasets"], ["weights"], ["weights", "import"],
            ["weights", "status"], ["bench"]]


def _help(args: list[str]) -> str:
    from workflows.cli.app import app

    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "80"},
                                terminal_width=80)
    assert result.exit_code == 0, result.output
    return result.output


def _words(text: str) -> str:
    return " ".join(text.split())


def _docstring(args: list[str]) -> str:
    import typer.main

    from workflows.cli.app import app

    command = typer.main.get_command(app)
    for name in args:
        command = command.commands[name]  # type: ignore[attr-defined]
    return command.help or ""


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a) or "xai")
def test_help_reads_whole_at_80_columns(args):
    text = _help(args)
    assert max(len(line) for line in text.splitlines()) <= 80
    flat = _words(text)
    for sentence in re.split(r"(?<=[.:;])\s+", _words(_docstring(args))):
        assert sentence in flat, sentence  # no sentence cut, no [markup] swallowed
    assert "``" not in text  # reST quotes
    assert not re.search(r"<(str|int|float|path|bool|list\[[^\]]*\])( range)?>", text,
                         re.I), text


def test_help_keeps_square_brackets_and_shows_readable_metavars():
    text = _help(["run"])
    assert "[evaluate] metrics" in text
    for metavar in ("--dataset NAME", "--config FILE", "--data-dir DIR", "--out DIR",
                    "--set SECTION.KEY=VALUE", "--force STAGE", "[RUN_DIR]"):
        assert metavar in text, metavar
    assert "--n-steps N" in _help(["explain"])


# ------------------------------------------------------------------ your own images


def _photos(folder: Path, names: list[str], size: int = 40) -> None:
    rng = np.random.default_rng(0)
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


SMALL = ["--weights", "random", "--set", "dataset.resize=32", "--set", "dataset.crop=32",
         "--set", "methods.integrated_gradients.n_steps=4",
         "--set", "methods.smoothgrad.nt_samples=2", "--set", "report.enabled=false",
         "--scheduler", "synchronous"]


def test_own_images_in_one_command_then_the_run_folder_for_the_rest(tmp_path):
    photos = tmp_path / "holiday"
    _photos(photos, ["a.jpg", "beach/b.png", "beach/c.png"])
    first = cli("run", "--data-dir", str(photos), "--out", str(tmp_path / "runs"), *SMALL)
    assert first.exit_code == 0, first.output
    run_dir = tmp_path / "runs" / "holiday"  # named after the folder
    assert "images: 3 (3 explained" in first.output
    assert (run_dir / "config.toml").is_file()
    status = cli("status", str(run_dir))
    assert status.exit_code == 0, status.output
    assert "attribute" in status.output and "done" in status.output
    assert f"run: {run_dir}" in status.output
    again = cli("run", str(run_dir), "--scheduler", "synchronous")
    assert again.exit_code == 0, again.output
    assert "nothing was recomputed" in again.output  # the saved config is the same run
    verify = cli("verify", str(run_dir))
    assert verify.exit_code == 0, verify.output
    named = cli("run", "--data-dir", str(photos), "--out", str(tmp_path / "runs"),
                "--name", "mine", *SMALL)
    assert named.exit_code == 0 and (tmp_path / "runs" / "mine" / "store.zarr").is_dir()


def test_a_moved_run_folder_is_still_its_run(tmp_path):
    photos = tmp_path / "pics"
    _photos(photos, ["a.png", "b.png"])
    assert cli("run", "--data-dir", str(photos), "--out", str(tmp_path / "runs"),
               *SMALL).exit_code == 0
    moved = tmp_path / "elsewhere" / "pics"
    moved.parent.mkdir()
    (tmp_path / "runs" / "pics").rename(moved)
    status = cli("status", str(moved))
    assert status.exit_code == 0 and f"run: {moved}" in status.output


def test_a_path_label_csv_with_class_names_labels_the_images(tmp_path):
    from pipeline.data.class_names import imagenet_classes

    photos = tmp_path / "labelled"
    _photos(photos, ["x/1.png", "x/2.png", "3.png"])
    names = imagenet_classes()
    with (photos / "labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        w.writerows([["x/1.png", names[1].upper()], ["x/2.png", names[207]]])
    result = cli("run", "--data-dir", str(photos), "--out", str(tmp_path / "runs"), *SMALL)
    assert result.exit_code == 0, result.output
    import xarray as xr

    ds = xr.open_zarr(tmp_path / "runs" / "labelled" / "store.zarr", consolidated=False)
    labels = dict(zip(ds.image.values.tolist(), ds.label.values.tolist(), strict=True))
    assert labels == {"3.png": -1, "x/1.png": 1, "x/2.png": 207}


def test_own_images_bad_input_says_what_to_do(tmp_path):
    photos = tmp_path / "pets"
    _photos(photos, ["1.png"])
    (photos / "labels.csv").write_text("path,label\n1.png,kitty cat\n")
    bad_label = cli("run", "--data-dir", str(photos), "--out", str(tmp_path / "r"), *SMALL)
    assert bad_label.exit_code == 2
    assert "'kitty cat'" in bad_label.output and "tiger cat" in _words(bad_label.output)
    as_file = cli("run", "--data-dir", str(photos / "labels.csv"), "--out",
                  str(tmp_path / "r"), *SMALL)
    assert as_file.exit_code == 2
    assert "got the file" in as_file.output and f"--data-dir {photos}" in as_file.output
    empty = tmp_path / "empty"
    empty.mkdir()
    none = cli("run", "--data-dir", str(empty), "--out", str(tmp_path / "r"), *SMALL)
    assert none.exit_code == 2 and "found none" in none.output


def test_an_empty_folder_is_refused_before_the_model_loads(tmp_path, no_model):
    """No weights warning and no model load for a run that has nothing to explain; a
    hidden folder's images do not count."""
    empty = tmp_path / "empty"
    (empty / ".thumbs").mkdir(parents=True)
    _photos(empty / ".thumbs", ["1.png"])
    none = cli("run", "--data-dir", str(empty), "--out", str(tmp_path / "r"), *SMALL)
    assert none.exit_code == 2, none.output
    assert f"Expected images in {empty}, found none." in none.output
    assert "RANDOM WEIGHTS" not in none.output and not (tmp_path / "r").exists()


# ------------------------------------------------------------------ your own model


def _checkpoint(path: Path, classes: int) -> Path:
    """A seeded ``resnet18(num_classes=classes)`` state dict."""
    import torch
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=classes).state_dict(), path)
    return path


def test_own_model_with_classes_method_and_evaluate_then_the_run_folder(tmp_path):
    photos = tmp_path / "pets"
    _photos(photos, ["tabby/1.png", "espresso/2.png"])
    (tmp_path / "names.txt").write_text("espresso\ntabby\n")
    weights = _checkpoint(tmp_path / "model.pth", 2)
    first = cli("run", "--data-dir", str(photos), "--out", str(tmp_path / "runs"), *SMALL,
                "--arch", "resnet18", "--weights", str(weights), "--classes",
                str(tmp_path / "names.txt"), "--method", "grad_cam", "--method", "gradient",
                "--evaluate", "--set", "evaluate.steps=2", "--set",
                "evaluate.randomisation_images=0")
    assert first.exit_code == 0, first.output
    assert "methods gradient, integrated_gradients, smoothgrad, grad_cam;" in first.output
    import xarray as xr

    run_dir = tmp_path / "runs" / "pets"
    ds = xr.open_zarr(run_dir / "store.zarr", consolidated=False)
    assert ds.explainer.values.tolist() == ["gradient", "integrated_gradients", "smoothgrad",
                                            "grad_cam"]
    labels = dict(zip(ds.image.values.tolist(), ds.label.values.tolist(), strict=True))
    assert labels == {"espresso/2.png": 0, "tabby/1.png": 1}  # the file's order, not sorted
    assert sorted(v for v in ds.data_vars if v.startswith("metric_")) == [
        "metric_deletion", "metric_insertion", "metric_sparseness"]
    again = cli("run", str(run_dir), "--scheduler", "synchronous")
    assert again.exit_code == 0 and "nothing was recomputed" in again.output, again.output


def test_a_refused_run_leaves_no_lock_and_no_run_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    none = cli("run", "--data-dir", str(empty), "--out", str(tmp_path / "runs"), *SMALL)
    assert none.exit_code == 2 and "found none" in none.output
    assert not (tmp_path / "runs").exists()  # nor the output root it would have made
    photos = tmp_path / "pets"
    _photos(photos, ["tabby/1.png", "espresso/2.png"])
    (tmp_path / "names.txt").write_text("tabby\nespresso\n")
    (tmp_path / "runs").mkdir()
    wrong_count = cli("run", "--data-dir", str(photos), "--out", str(tmp_path / "runs"),
                      *SMALL, "--weights", str(_checkpoint(tmp_path / "m3.pth", 3)),
                      "--classes", str(tmp_path / "names.txt"))
    assert wrong_count.exit_code == 2
    assert "Expected 3 class names" in _words(wrong_count.output), wrong_count.output
    assert list((tmp_path / "runs").iterdir()) == []  # the root was there: it stays, empty


def test_a_refusal_keeps_a_run_folder_that_was_there(tmp_path):
    """Only what the refused run made goes: an earlier run's folder and lock file stay."""
    photos = tmp_path / "pets"
    _photos(photos, ["a.png"])
    run_dir = tmp_path / "runs" / "pets"
    run_dir.mkdir(parents=True)
    (run_dir / "notes.txt").write_text("mine")
    refused = cli("run", "--data-dir", str(photos), "--out", str(tmp_path / "runs"), *SMALL,
                  "--arch", "resnet181")
    assert refused.exit_code == 2
    bad_weights = cli("run", "--data-dir", str(photos), "--out", str(tmp_path / "runs"),
                      *SMALL, "--weights", str(_checkpoint(tmp_path / "m.pth", 3)),
                      "--arch", "resnet34")
    assert bad_weights.exit_code == 2, bad_weights.output
    assert sorted(p.name for p in run_dir.iterdir()) == ["notes.txt"]
    (run_dir / "run.lock").write_text("")
    again = cli("run", "--data-dir", str(photos), "--out", str(tmp_path / "runs"), *SMALL,
                "--weights", str(tmp_path / "m.pth"), "--arch", "resnet34")
    assert again.exit_code == 2
    assert sorted(p.name for p in run_dir.iterdir()) == ["notes.txt", "run.lock"]


# ------------------------------------------------------------------ xai explain


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: explain must have stopped before."""
    import pipeline.models.classifier

    def refuse(*_a, **_k):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(pipeline.models.classifier, "load_model", refuse)


@pytest.mark.parametrize("args,expected", [
    (["--method", "gradcam"], "--method: Expected a method in [gradient, integrated_gradients, "
                              "smoothgrad, custom_gradient, custom_integrated_gradients, "
                              "input_x_gradient, grad_cam, guided_grad_cam, guided_backprop, "
                              "deeplift], got 'gradcam'; did you mean 'grad_cam'?"),
    (["--weights", "nothing.pth"], "which is no file"),
    (["--arch", "resnet181"], "did you mean resnet18"),
    (["--n-steps", "0"], "--n-steps: expected n_steps >= 2, got 0"),
    # The method's own rule, not a looser one: 1 step passed this check and then failed.
    (["--n-steps", "1"], "--n-steps: expected n_steps >= 2, got 1"),
    (["--nt-samples", "0"], "--nt-samples: expected nt_samples >= 1, got 0"),
    (["--out", "x.jpg"], "expected a .png file"),
    (["--device", "gpu"], "--device: expected auto, cpu"),
])
def test_explain_checks_arguments_before_loading_a_model(tmp_path, no_model, args, expected):
    _photos(tmp_path, ["junco.jpg"])
    result = cli("explain", str(tmp_path / "junco.jpg"), *args)
    assert result.exit_code == 2
    assert expected in _words(result.output), result.output


def test_explain_refuses_a_folder_and_a_missing_file_before_loading(tmp_path, no_model):
    folder = cli("explain", str(tmp_path))
    assert folder.exit_code == 2 and "got the folder" in folder.output
    missing = cli("explain", str(tmp_path / "none.jpg"))
    assert missing.exit_code == 2 and "there is none" in missing.output


def test_explain_draws_with_the_sheets_renderer(tmp_path):
    _photos(tmp_path, ["a.png"], size=48)
    out = tmp_path / "fig.png"
    result = cli("explain", str(tmp_path / "a.png"), "--weights", "random", "--method",
                 "gradient", "--method", "integrated_gradients", "--n-steps", "4",
                 "--out", str(out))
    assert result.exit_code == 0, result.output
    figure = np.asarray(Image.open(out).convert("RGB"))
    assert figure.shape[0] > 224 and figure.shape[1] > 3 * 224  # the image and two maps
    # The colour bar of the sheets is there: rows holding the whole colormap, end to end.
    from pipeline.render.heatmaps import SheetStyle, colormap_lut

    bar = colour_bar_rows(figure, colormap_lut(SheetStyle().colormap))
    assert bar and bar == list(range(bar[0], bar[0] + len(bar)))
    assert "explain: finished, 1/1 images" in result.output


def test_explain_evaluate_scores_each_map_beside_a_random_maps(tmp_path):
    """``--evaluate``: a row per method and the random map's, a column per mask-free metric
    with its direction; the random row is the evaluate stage's floor for that image."""
    from pipeline.attribution.method_registry import image_seed
    from pipeline.evaluation.metrics import default_metrics, random_attribution, sparseness

    _photos(tmp_path, ["a.png"], size=48)
    result = cli("explain", str(tmp_path / "a.png"), "--weights", "random", "--method",
                 "gradient", "--evaluate", "--out", str(tmp_path / "fig.png"))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(line for line in lines if "sparseness" in line)
    assert [w for w in header.replace("┃", " ").split() if w not in "↑↓"] == \
        ["image", "method", *default_metrics()]
    assert "sparseness ↑" in header and "deletion ↓" in header and "insertion ↑" in header
    rows = {cells[1]: cells[2:] for line in lines if line.startswith("│")
            for cells in [[c.strip() for c in line.strip()[1:-1].split("│")]]}
    assert set(rows) == {"gradient", "random map"}
    floor = sparseness(random_attribution((1, 224, 224), image_seed(7919, 0)))[0]
    assert rows["random map"][0] == f"{floor:.3f}"
    assert all(0.0 <= float(v) <= 1.0 for r in rows.values() for v in r)


def colour_bar_rows(figure: np.ndarray, lut: np.ndarray) -> list[int]:
    """The rows of ``figure`` (H, W, 3) that hold a colour bar of ``lut`` (256, 3): a run of at
    least 64 pixels from ``lut[0]`` to ``lut[255]`` sampling the table evenly, as the sheets
    draw it."""
    rows = []
    for y, row in enumerate(figure):
        ends = np.flatnonzero((row == lut[255]).all(1))
        for x0 in np.flatnonzero((row == lut[0]).all(1)):
            x1 = ends[-1] if len(ends) else -1
            width = x1 - x0 + 1
            if width >= 64 and np.array_equal(
                    row[x0:x1 + 1], lut[np.linspace(0, 255, width).round().astype(int)]):
                rows.append(y)
                break
    return rows


def test_colour_bar_rows_finds_a_bar_and_nothing_else():
    lut = np.stack([np.arange(256), 255 - np.arange(256), np.full(256, 7)], 1).astype(np.uint8)
    figure = np.full((6, 300, 3), 255, np.uint8)
    figure[2:4, 20:220] = lut[np.linspace(0, 255, 200).round().astype(int)]
    figure[5, 20:220] = lut[np.linspace(0, 255, 200).round().astype(int)][::-1]  # reversed
    assert colour_bar_rows(figure, lut) == [2, 3]


def test_the_command_list_never_cuts_a_sentence():
    for args in ([], ["weights"]):
        listing = _help(args).split("Commands:")[1]
        cut = [line for line in listing.splitlines() if line.rstrip().endswith("...")]
        assert not cut, cut


_EXIT_PROBE = """
import atexit, sys, threading, time
from pathlib import Path
from workflows.cli.app import main
out = Path(sys.argv.pop(1))
def late():
    time.sleep(0.3)
    out.with_suffix('.thread').write_text('joined')
threading.Thread(target=late).start()  # non-daemon: the normal exit would wait for it
atexit.register(lambda: out.write_text('atexit ran'))
print('before the command', end='')  # unflushed: the exit must flush it
main()
print('never printed: main() ends the process')
"""


@pytest.mark.parametrize(("args", "code"), [(["--help"], 0), (["run", "--config", "nope.toml"], 2)])
def test_main_ends_the_process_with_the_commands_status_after_the_normal_exit_steps(
        tmp_path, args, code):
    """``main`` skips only the interpreter's teardown: the status is the command's, the
    non-daemon threads are joined, the atexit handlers run and the output is flushed."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _EXIT_PROBE, str(tmp_path / "probe"), *args],
                          capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert done.returncode == code, done.stdout + done.stderr
    assert done.stdout.startswith("before the command")
    assert "never printed" not in done.stdout
    assert (tmp_path / "probe").read_text() == "atexit ran"
    assert (tmp_path / "probe.thread").read_text() == "joined"


def test_exit_code_of_each_kind_of_system_exit(capsys):
    from workflows.cli.app import exit_code

    assert [exit_code(SystemExit(c)) for c in (None, 0, 3)] == [0, 0, 3]
    assert exit_code(SystemExit("went wrong")) == 1
    assert "went wrong" in capsys.readouterr().err
