"""A user's own model through a whole run: a 10-class fine-tuned-style checkpoint with its
classes.txt, an ImageFolder dataset named by those classes, and the same model exported."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import zarr
from PIL import Image

from tests.workflow_helpers import cli, write_config
from workflows.config.loading import load_config

NAMES = ["zebra", "apple", "mango", "kiwi", "fig", "lime", "plum", "pear", "date", "yam"]
CROP = 32


@pytest.fixture(scope="module")
def own(tmp_path_factory) -> dict[str, Path]:
    """The checkpoint, its export, classes.txt (not in sorted order) and class folders."""
    root = tmp_path_factory.mktemp("own")
    torch.manual_seed(3)
    net = torchvision.models.resnet18(num_classes=10).eval()
    torch.save(net.state_dict(), root / "finetuned.pth")
    program = torch.export.export(net, (torch.randn(2, 3, CROP, CROP),),
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    torch.export.save(program, str(root / "finetuned.pt2"))
    (root / "classes.txt").write_text("\n".join(NAMES) + "\n")
    rng = np.random.default_rng(0)
    for name in NAMES[:6]:
        folder = root / "data" / name
        folder.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
            folder / "a.png")
    return {"root": root, "pth": root / "finetuned.pth", "pt2": root / "finetuned.pt2",
            "classes": root / "classes.txt", "data": root / "data", "net": net}


def _config(tmp: Path, own: dict, weights: Path, methods=("gradient", "integrated_gradients"),
            name: str = "c") -> Path:
    path = write_config(tmp / f"{name}.toml", own["data"], tmp / "out", methods=methods,
                        report=True)
    text = path.read_text().replace('layout = "plain"', 'layout = "class-folders"')
    text = text.replace('weights = "random"',
                        f'weights = "{weights}"\narch = "resnet18"\n'
                        f'classes = "{own["classes"]}"')
    path.write_text(text)
    return path


def _store(path: Path):
    cfg = load_config(path)
    return cfg, zarr.open_group(str(cfg.run_dir / "store.zarr"), mode="r")


def test_a_checkpoint_with_its_classes_labels_accuracy_and_report(tmp_path, own):
    path = _config(tmp_path, own, own["pth"])
    result = cli("run", "--config", str(path))
    assert result.exit_code == 0, result.output
    cfg, group = _store(path)
    images = [str(v) for v in group["image"][:]]
    labels = np.asarray(group["label"][:])
    assert [NAMES[k] for k in labels] == [i.split("/")[0] for i in images]
    assert list(group.attrs["classes"]) == NAMES
    assert [str(v) for v in group["class_name"][:]] == NAMES
    assert group["logits"].shape[1] == 10
    # The predictions, and so the accuracy, are the checkpoint's own on the stored crops.
    from workflows.runner.stage_api import to_input

    x = to_input(np.asarray(group["pixels"][:]), "cpu", cfg.normalization())
    with torch.no_grad():
        pred = own["net"](x).argmax(1).numpy()
    assert np.array_equal(np.asarray(group["pred"][:]), pred)
    correct = int((pred == labels).sum())
    summary = json.loads((cfg.run_dir / "summary.json").read_text())
    assert summary["accuracy"] == {"correct": correct, "labelled": 6,
                                   "accuracy": round(correct / 6, 6)}
    assert f"{correct} of 6 labelled images" in result.output
    page = (cfg.run_dir / "report" / "summary.html").read_text()
    assert f"{correct} of 6 labelled images" in page
    manifest = (cfg.run_dir / "report" / "data" / "manifest.js").read_text()
    data = json.loads(manifest.split("=", 1)[1].strip().rstrip(";"))
    assert data["classes"] == NAMES


def test_the_exported_program_gives_the_same_store_as_the_state_dict(tmp_path, own):
    stores, outputs, engines = [], [], []
    for name, weights in (("pth", own["pth"]), ("pt2", own["pt2"])):
        path = _config(tmp_path / name, own, weights)
        result = cli("run", "--config", str(path))
        assert result.exit_code == 0, result.output
        cfg, group = _store(path)
        stores.append(group)
        outputs.append(" ".join(result.output.split()))
        engines.append(json.loads((cfg.run_dir / "summary.json").read_text())["engine"])
    a, b = stores
    # the exported program is named as what it is, not as the [model] arch it ignores
    assert "c: resnet18, methods" in outputs[0]
    assert "c: exported program finetuned.pt2, methods" in outputs[1]
    assert [e["arch"] for e in engines] == ["resnet18", "exported program finetuned.pt2"]
    assert "engine (exported program finetuned.pt2)" in outputs[1]
    assert engines[1]["affine stem"].endswith(
        "(it goes to size (call method), conv2d.default (call function))"), engines[1]
    assert b.attrs["arch"] == "exported" and a.attrs["arch"] == "resnet18"
    for key in ("image", "label", "pred", "class_name"):
        assert np.array_equal(np.asarray(a[key][:]), np.asarray(b[key][:])), key
    for key in ("logits", "raw", "delta", "gap"):
        np.testing.assert_allclose(np.asarray(b[key][:]), np.asarray(a[key][:]),
                                   rtol=1e-4, atol=1e-6 * float(np.nanmax(np.abs(a[key][:]))))


def test_a_method_that_hooks_modules_is_refused_on_an_exported_program(tmp_path, own):
    path = _config(tmp_path, own, own["pt2"], methods=("gradient", "grad_cam"))
    result = cli("run", "--config", str(path))
    assert result.exit_code == 2
    assert "[methods.grad_cam]" in result.output and "state dict" in result.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("store.zarr"))


def test_a_folder_that_is_not_a_class_of_the_model_is_named(tmp_path, own):
    data = tmp_path / "data"
    for name in ("apple", "durian"):
        (data / name).mkdir(parents=True)
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(data / name / "a.png")
    path = _config(tmp_path, {**own, "data": data}, own["pth"])
    result = cli("run", "--config", str(path))
    assert result.exit_code == 2
    assert "durian" in result.output and "zebra" in result.output


def test_a_bad_grad_cam_layer_is_refused_before_any_work(tmp_path, own):
    path = _config(tmp_path, own, own["pth"], methods=("gradient", "grad_cam"))
    path.write_text(path.read_text().replace("[methods.grad_cam]",
                                             '[methods.grad_cam]\nlayer = "layer5"'))
    result = cli("run", "--config", str(path))
    assert result.exit_code == 2
    assert "'layer5'" in result.output and "layer3" in result.output
    assert not any((tmp_path / "out").rglob("store.zarr"))
