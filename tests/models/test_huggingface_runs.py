"""Hugging Face models through whole runs: a tiny ViT (and, in the slow suite, ConvNeXt, Swin
and ResNet) on class folders named by its id2label, ingest -> report, each stored map
checked against the method on the plain wrapped model and the gradient against Captum."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from PIL import Image

from tests.models.sources.hf_tiny import LABELS, save_tiny
from tests.models.test_architecture_runs import _reference
from tests.workflow_helpers import cli, write_config
from workflows.config.loading import load_config

pytest.importorskip("transformers")

RUN_METHODS = ("gradient", "integrated_gradients", "grad_cam", "guided_grad_cam",
               "guided_backprop", "deeplift")
SIZE = 32


def _dataset(root: Path, names=LABELS) -> Path:
    rng = np.random.default_rng(0)
    for name in names:
        folder = root / name
        folder.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / "a.png")
    return root


def _config(tmp: Path, weights: Path, data: Path) -> Path:
    path = write_config(tmp / "c.toml", data, tmp / "out", methods=RUN_METHODS, report=True)
    text = path.read_text().replace('layout = "plain"', 'layout = "class-folders"')
    # The model's own processor says the resize and crop.
    text = text.replace("resize = 40\n", "").replace("crop = 32\n", "")
    text = text.replace('head = "softmax"', 'head = "logits"')
    path.write_text(text.replace('weights = "random"', f'weights = "{weights}"'))
    return path


@pytest.mark.parametrize("arch", ["vit", "convnext", "swin", "resnet"])
def test_a_whole_run_names_the_classes_and_matches_the_plain_model(tmp_path, arch):
    from captum.attr import Saliency

    from pipeline.data.images import black_baseline
    from pipeline.models.classifier import load_model
    from pipeline.models.sources.huggingface import processor_preprocessing
    from workflows.runner.stage_api import to_input

    folder = save_tiny(arch, tmp_path / "model", size=SIZE)
    path = _config(tmp_path, folder, _dataset(tmp_path / "data"))
    result = cli("run", "--config", str(path))
    assert result.exit_code == 0, result.output
    cfg = load_config(path)
    group = zarr.open_group(str(cfg.run_dir / "store.zarr"), mode="r")
    assert group.attrs["arch"].startswith("hf:") and arch in group.attrs["arch"].lower()
    assert group.attrs["weights_id"].startswith(f"hf:{arch}:model:sha256=")
    assert group.attrs["preprocessing"] == processor_preprocessing(folder).to_dict()
    assert [str(v) for v in group["class_name"][:]] == list(LABELS)
    images = [str(v) for v in group["image"][:]]
    labels = np.asarray(group["label"][:])
    assert [LABELS[k] for k in labels] == [i.split("/")[0] for i in images]
    manifest = (cfg.run_dir / "report" / "data" / "manifest.js").read_text()
    shown = json.loads(manifest.split("=", 1)[1].strip().rstrip(";"))
    assert shown["classes"] == list(LABELS)
    summary = json.loads((cfg.run_dir / "summary.json").read_text())
    assert "affine stem" in summary["engine"]
    spaces = group.attrs["map_space"]
    assert spaces["grad_cam"].startswith("layer:model.")

    loaded = load_model(str(folder), cfg.model.head, preprocessing=cfg.preprocessing())
    x = to_input(np.asarray(group["pixels"][:]), "cpu", cfg.normalization())
    t = torch.as_tensor(np.asarray(group["pred"][:]).astype(np.int64))
    with torch.no_grad():
        assert torch.equal(loaded.model(x).argmax(1), t)
    names = [str(v) for v in group["explainer"][:]]
    gradient = torch.as_tensor(np.asarray(group["raw"][names.index("gradient")]))
    saliency = Saliency(loaded.model).attribute(x, target=t, abs=True).detach()
    assert torch.allclose(gradient, saliency, rtol=1e-5, atol=1e-8)
    for name in RUN_METHODS:
        stored = torch.as_tensor(np.asarray(group["raw"][names.index(name)]))
        ref = _reference(name, loaded.model, x, t, cfg.methods[name], cfg.normalization())
        rel = float((stored - ref.detach()).norm() / ref.detach().norm().clamp_min(1e-30))
        assert torch.isfinite(stored).all() and stored.abs().sum() > 0, name
        assert rel < 1e-3, (name, rel)
    # IG's completeness error, as stored, is sum(A) - (F(x) - F(black)) on the model (on the
    # tiny ViT, well under 1% of the gap; the random ConvNeXt's and Swin's paths are rougher
    # than 50 steps follow, and the stored delta says so).
    ig = names.index("integrated_gradients")
    with torch.no_grad():
        out = loaded.model(x).gather(1, t.view(-1, 1)).view(-1).double()
        black = loaded.model(black_baseline(x, cfg.normalization()))
        gap = out - black.gather(1, t.view(-1, 1)).view(-1).double()
    total = torch.as_tensor(np.asarray(group["raw"][ig])).double().sum(dim=(1, 2, 3))
    delta = torch.as_tensor(np.asarray(group["delta"][ig])).double()
    assert torch.allclose(delta, total - gap, atol=1e-4 * float(gap.abs().max()))
    if arch == "vit":
        assert (delta.abs() < 0.01 * gap.abs()).all(), (delta, gap)


def test_a_class_folder_that_is_no_label_of_the_model_is_refused_before_loading(tmp_path):
    folder = save_tiny("vit", tmp_path / "model", labels=("cat", "dog"), size=SIZE)
    path = _config(tmp_path, folder, _dataset(tmp_path / "data"))
    result = cli("run", "--config", str(path))
    assert result.exit_code != 0
    assert "owl" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("store.zarr"))


def test_a_run_gives_the_model_the_processors_pixels_for_a_non_square_image(tmp_path):
    """ViT's processor squashes a 40x64 photo to its square size: the run's ingest does the
    same (the store says ``resize_mode: squash``), so the model sees the processor's input."""
    import transformers

    from pipeline.data.images import from_uint8_hwc, normalize
    from pipeline.models.sources.huggingface import processor_preprocessing

    folder = save_tiny("vit", tmp_path / "model", size=SIZE)
    data = tmp_path / "data" / LABELS[0]
    data.mkdir(parents=True)
    photo = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 64, 3),
                                                               dtype=np.uint8))
    photo.save(data / "wide.png")
    path = _config(tmp_path, folder, tmp_path / "data")
    path.write_text(path.read_text().replace('"class-folders"', '"plain"'))
    result = cli("run", "--config", str(path), "--method", "gradient")
    assert result.exit_code == 0, result.output
    group = zarr.open_group(str(tmp_path / "out" / "c" / "store.zarr"), mode="r")
    assert group.attrs["preprocessing"]["resize_mode"] == "squash"
    prep = processor_preprocessing(folder)
    ours = normalize(from_uint8_hwc(np.asarray(group["pixels"][0]))[None], prep.normalization)
    processor = transformers.AutoImageProcessor.from_pretrained(str(folder), backend="pil")
    theirs = processor(photo, return_tensors="pt")["pixel_values"]
    assert theirs.shape == ours.shape
    assert float((theirs - ours).abs().max()) <= 1 / 255 / min(prep.std) + 1e-6
