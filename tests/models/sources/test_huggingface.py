"""The Hugging Face source: folders and the local cache, the model's own preprocessing and
classes, the weights' identity, what is refused, and every method against Captum on the
wrapped model."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.errors import ConfigError, WeightsError
from pipeline.models.sources import preprocessing_for, source_for, weights_identity
from pipeline.models.sources.huggingface import processor_preprocessing
from tests.models.sources.hf_tiny import ARCHS, LABELS, save_tiny

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def vit(tmp_path_factory) -> Path:
    """The issue's example: ViTConfig(hidden_size=32, 2 layers, 2 heads, patch 16, 224 px)."""
    return save_tiny("vit", tmp_path_factory.mktemp("hf") / "vit")


def _load(folder: Path, head: str = "logits"):
    from pipeline.models.classifier import load_model

    return load_model(str(folder), head)


def test_a_folder_with_a_config_is_a_hugging_face_model(vit):
    assert source_for("resnet18", str(vit)).name == "huggingface"
    assert source_for("resnet18", "hf:google/vit-base-patch16-224").name == "huggingface"
    loaded = _load(vit)
    assert loaded.arch == "hf:ViTForImageClassification"
    assert loaded.classes == LABELS
    assert loaded.model.model.config._attn_implementation == "eager"
    assert loaded.preprocessing.resize_mode == "squash"  # as ViT's processor resizes
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = loaded.model.model(pixel_values=x).logits
        assert torch.equal(loaded.model(x), expected)


@pytest.mark.parametrize("arch", ["vit", "convnext"])
@pytest.mark.parametrize("shape", [(240, 240), (180, 180), (200, 260)])
def test_pixels_equal_the_image_processor_s_to_uint8_rounding(tmp_path, arch, shape):
    """The pipeline's own transforms on the processor's settings give the processor's pixels
    (its PIL backend, the same resampling), square or not: ViT's squashes the whole image
    to its size, ConvNeXt's resizes the short side and crops."""
    from pipeline.data.images import from_uint8_hwc, normalize, preprocess_transform, to_uint8_hwc

    folder = save_tiny(arch, tmp_path / arch)
    prep = processor_preprocessing(folder)
    assert preprocessing_for("resnet18", str(folder)) == prep
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (*shape, 3),
                                                              dtype=np.uint8))
    pixels = to_uint8_hwc(preprocess_transform(prep.resize, prep.crop, prep.interpolation,
                                               prep.resize_mode)(image))
    ours = normalize(from_uint8_hwc(pixels)[None], prep.normalization)
    processor = transformers.AutoImageProcessor.from_pretrained(str(folder), backend="pil")
    theirs = processor(image, return_tensors="pt")["pixel_values"]
    assert theirs.shape == ours.shape
    step = 1 / 255 / min(prep.std)
    assert float((theirs - ours).abs().max()) <= step + 1e-6


def test_preprocessing_from_the_processor_config(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "size": {"shortest_edge": 224}, "crop_pct": 0.875, "resample": 3,
        "image_mean": [0.1, 0.2, 0.3], "image_std": [0.4, 0.5, 0.6]}))
    prep = processor_preprocessing(folder)
    assert (prep.resize, prep.crop, prep.interpolation) == (256, 224, "bicubic")
    assert prep.mean == (0.1, 0.2, 0.3) and prep.std == (0.4, 0.5, 0.6)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "size": {"height": 256, "width": 256}, "do_center_crop": True,
        "crop_size": {"height": 224, "width": 224}, "resample": 2}))
    prep = processor_preprocessing(folder)
    assert (prep.resize, prep.crop, prep.interpolation) == (256, 224, "bilinear")
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "size": {"height": 224, "width": 300}}))
    with pytest.raises(ConfigError, match="square"):
        processor_preprocessing(folder)


def test_the_weights_identity_follows_the_weights_and_the_config(tmp_path):
    a = save_tiny("resnet", tmp_path / "m", seed=0)
    first = weights_identity(str(a), 0)
    assert first.startswith("hf:resnet:m:sha256=")
    assert weights_identity(str(a), 0) == first
    save_tiny("resnet", tmp_path / "m", seed=1)
    second = weights_identity(str(a), 0)
    assert second != first
    save_tiny("resnet", tmp_path / "m", seed=1, labels=("x", "y", "z"))
    assert weights_identity(str(a), 0) != second


def test_a_cached_hub_model_loads_offline_by_name_and_revision(tmp_path, monkeypatch, vit):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    commit = "a" * 40
    root = tmp_path / "hf" / "hub" / "models--org--tiny-vit"
    shutil.copytree(vit, root / "snapshots" / commit)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    assert weights_identity("hf:org/tiny-vit", 0) == f"hf:vit:org/tiny-vit@{commit}"
    assert weights_identity(f"hf:org/tiny-vit@{commit}", 0) == f"hf:vit:org/tiny-vit@{commit}"
    assert _load("hf:org/tiny-vit").classes == LABELS
    with pytest.raises(WeightsError) as err:
        _load("hf:org/other-model@v2")
    message = str(err.value)
    assert "huggingface-cli download org/other-model --revision v2" in message
    assert str(tmp_path / "hf" / "hub") in message and "HF_HOME" in message


def _copy_with_state(vit: Path, folder: Path) -> dict:
    """A copy of the tiny ViT folder at ``folder``, and its weights."""
    from safetensors.torch import load_file

    shutil.copytree(vit, folder)
    return load_file(str(folder / "model.safetensors"))


def test_a_model_that_needs_remote_code_is_refused(tmp_path, vit):
    folder = tmp_path / "remote"
    shutil.copytree(vit, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForImageClassification": "modeling_x.XModel"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="trust_remote_code, which would run the Python"):
        _load(folder)


def test_pickle_only_weights_are_refused_tensor_only_ones_load(tmp_path, vit):
    folder = tmp_path / "bin"
    state = _copy_with_state(vit, folder)
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    loaded = _load(folder)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), _load(vit).model(x))
    torch.save({"state": state, "code": Path("x")}, folder / "pytorch_model.bin")
    with pytest.raises(WeightsError, match="could not be read as tensors"):
        _load(folder)


def test_weights_the_file_lacks_are_refused_not_drawn_at_random(tmp_path, vit):
    from safetensors.torch import save_file

    folder = tmp_path / "headless"
    state = _copy_with_state(vit, folder)
    save_file({k: v for k, v in state.items() if not k.startswith("classifier.")},
              str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(WeightsError, match=r"missing or of another shape .*classifier"):
        _load(folder)


def test_without_transformers_the_message_says_how_to_install(monkeypatch, vit):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ConfigError, match="make setup EXTRAS=hf"):
        _load(vit)


# ------------------------------------------------------------------ every method vs Captum


def _token_grad_cam(model, module, x, t) -> torch.Tensor:
    """Grad-CAM on a token layer, computed here: the prefix tokens dropped, the patches on
    their square grid, bilinear up to the input."""
    kept = {}
    handle = module.register_forward_hook(lambda _m, _i, out: kept.setdefault("out", out))
    try:
        scores = model(x.requires_grad_(True))
        (grad,) = torch.autograd.grad(scores.gather(1, t.view(-1, 1)).sum(), kept["out"])
    finally:
        handle.remove()
    out = kept["out"].detach()
    side = int(out.shape[1] ** 0.5)  # the prefix tokens are fewer than a row of patches

    def grid(v: torch.Tensor) -> torch.Tensor:
        return v[:, -side * side:].transpose(1, 2).reshape(v.shape[0], v.shape[2], side, side)
    cam = torch.relu((grid(grad).mean(dim=(2, 3), keepdim=True) * grid(out)).sum(1, True))
    return torch.nn.functional.interpolate(cam, size=x.shape[2:], mode="bilinear",
                                           align_corners=False)


def _captum(name: str, model, x, t, base, module) -> torch.Tensor:
    from captum.attr import (
        DeepLift,
        GuidedBackprop,
        InputXGradient,
        IntegratedGradients,
        LayerAttribution,
        LayerGradCam,
        Saliency,
    )

    if name == "gradient":
        return Saliency(model).attribute(x, target=t, abs=True)
    if name == "integrated_gradients":
        return IntegratedGradients(model).attribute(x, baselines=base, target=t, n_steps=50,
                                                    method="gausslegendre")
    if name == "input_x_gradient":
        return InputXGradient(model).attribute(x, target=t)
    if name == "guided_backprop":
        return GuidedBackprop(model).attribute(x, target=t)
    if name == "deeplift":
        return DeepLift(model).attribute(x, baselines=base, target=t)
    if name == "grad_cam":
        probe = {}
        handle = module.register_forward_hook(lambda _m, _i, out: probe.setdefault("o", out))
        with torch.no_grad():
            model(x[:1])
        handle.remove()
        if probe["o"].ndim == 3:
            return _token_grad_cam(model, module, x.clone(), t).expand(-1, 3, -1, -1) / 3
        cam = LayerGradCam(model, module).attribute(x, target=t, relu_attributions=True)
        return (LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode="bilinear")
                / 3).expand(-1, 3, -1, -1)
    raise AssertionError(name)


CAPTUM_METHODS = ("gradient", "integrated_gradients", "input_x_gradient", "guided_backprop",
                  "deeplift", "grad_cam")
#: The automatic Grad-CAM layer of each architecture, found on the model.
LAYERS = {"vit": "model.vit.layers.1.layernorm_before",
          "deit": "model.deit.layers.1.layernorm_before", "beit": "model.beit.layernorm",
          "convnext": "model.convnext.encoder.stages.3", "swin": "model.swin.layernorm",
          "resnet": "model.resnet.encoder.stages.3",
          "efficientnet": "model.efficientnet.encoder.top_activation"}


@pytest.mark.parametrize("arch", ARCHS)
def test_every_method_equals_captum_on_the_wrapped_model(tmp_path, arch):
    from pipeline.attribution.cam import find_layer, named_layers
    from pipeline.attribution.method_registry import METHODS

    size = 64
    folder = save_tiny(arch, tmp_path / arch, size=size)
    model = _load(folder).model
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0, 2])
    base = torch.zeros_like(x)
    layer, _grid = find_layer(model, x)
    assert layer == LAYERS[arch]
    for name in CAPTUM_METHODS:
        spec = METHODS[name]
        kwargs = {"baselines": base} if "baseline" in spec.params else {}
        ours = spec.fn(model, x, t, spec.canonical({}), 8, None, **kwargs).detach()
        ref = _captum(name, model, x.clone(), t, base, named_layers(model)[layer]).detach()
        rel = float((ours - ref).norm() / ref.norm().clamp_min(1e-30))
        assert ref.abs().sum() > 0, name
        assert rel < 1e-5, (arch, name, rel)


def test_deit_grad_cam_drops_the_class_and_distillation_tokens(tmp_path):
    from pipeline.attribution.cam import as_map, find_layer

    model = _load(save_tiny("deit", tmp_path / "deit", size=64)).model
    _layer, grid = find_layer(model, torch.randn(1, 3, 64, 64))
    assert grid == (4, 4)
    tokens = torch.arange(2 * 18 * 5, dtype=torch.float32).reshape(2, 18, 5)
    assert torch.equal(as_map(tokens)[:, :, 0, 0], tokens[:, 2])
