"""Model families: any torchvision architecture, checkpoints with their own classes, exported
programs (``pipeline.models.architectures`` and the loading in ``pipeline.models.loading``)."""

from __future__ import annotations

import zipfile

import pytest
import torch
import torchvision

from pipeline.errors import ConfigError, WeightsError
from pipeline.models.architectures import (
    check_arch,
    classifier_entries,
    default_preprocessing,
    fitting_archs,
    num_classes_of,
    torchvision_archs,
)
from pipeline.models.loading import load_model

NAMES = tuple(f"kind{i}" for i in range(10))


def test_every_torchvision_classifier_is_known():
    listed = set(torchvision.models.list_models(module=torchvision.models))
    assert set(torchvision_archs()) == listed
    assert len(listed) >= 80


def test_unknown_arch_has_a_did_you_mean():
    why = check_arch("resnet181")
    assert why is not None and "resnet18" in why
    assert check_arch("resnet50") is None


@pytest.mark.parametrize(("arch", "resize", "crop", "interpolation"), [
    ("resnet18", 256, 224, "bilinear"),
    ("inception_v3", 342, 299, "bilinear"),
    ("vit_b_16", 256, 224, "bilinear"),
    ("efficientnet_b3", 320, 300, "bicubic"),
])
def test_preprocessing_is_the_weights_own(arch, resize, crop, interpolation):
    """The published weights' transforms(): torchvision's own numbers, read off the enum."""
    prep = default_preprocessing(arch)
    ref = torchvision.models.get_model_weights(arch).DEFAULT.transforms()
    assert (prep.resize, prep.crop, prep.interpolation) == (resize, crop, interpolation)
    assert (prep.resize, prep.crop) == (ref.resize_size[0], ref.crop_size[0])
    assert prep.mean == pytest.approx(tuple(ref.mean)) and prep.std == pytest.approx(
        tuple(ref.std))


@pytest.mark.parametrize(("arch", "entry"), [
    ("resnet18", "fc.weight"), ("mobilenet_v3_small", "classifier.3.weight"),
    ("vit_b_16", "heads.head.weight"), ("convnext_tiny", "classifier.2.weight"),
])
def test_class_count_is_read_off_the_classifier(arch, entry):
    assert entry in classifier_entries(arch)
    state = {entry: torch.zeros(7, 3)}
    assert num_classes_of(arch, state) == 7


def _checkpoint(tmp_path, arch="resnet18", classes=10):
    torch.manual_seed(0)
    net = torchvision.models.get_model(arch, num_classes=classes).eval()
    path = tmp_path / f"{arch}-{classes}.pth"
    torch.save(net.state_dict(), path)
    return net, path


def test_fine_tuned_checkpoint_loads_with_its_classes(tmp_path):
    net, path = _checkpoint(tmp_path)
    names = tmp_path / "classes.txt"
    names.write_text("\n".join(NAMES) + "\n")
    loaded = load_model(path, "logits", classes=names)
    assert loaded.classes == NAMES and not loaded.warnings
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.backbone(x), net(x))
        assert loaded.model(x).shape == (2, 10)


def test_checkpoint_class_names_from_the_dataset_folders_then_made_up(tmp_path):
    _net, path = _checkpoint(tmp_path)
    assert load_model(path, dataset_classes=NAMES).classes == NAMES
    made = load_model(path)
    assert made.classes == tuple(f"class_{i}" for i in range(10))
    assert any("class_0 ... class_9" in w for w in made.warnings)


def test_class_count_mismatch_names_both_counts(tmp_path):
    _net, path = _checkpoint(tmp_path)
    names = tmp_path / "classes.txt"
    names.write_text("a\nb\nc\n")
    with pytest.raises(WeightsError, match=r"Expected 10 class names .* got 3 in"):
        load_model(path, classes=names)


def test_state_dict_of_another_architecture_names_the_one_it_fits(tmp_path):
    _net, path = _checkpoint(tmp_path, "mobilenet_v3_small", 10)
    with pytest.raises(WeightsError, match=r"does not fit.*mobilenet_v3_small") as info:
        load_model(path, arch="resnet18")
    assert 'arch = "mobilenet_v3_small"' in str(info.value)
    state = torch.load(path, weights_only=True)
    assert "mobilenet_v3_small" in fitting_archs({k: list(v.shape) for k, v in state.items()})


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "efficientnet_b0", "convnext_tiny"])
def test_other_architectures_load_random_and_from_a_checkpoint(tmp_path, arch):
    net, path = _checkpoint(tmp_path, arch, 5)
    loaded = load_model(path, "logits", arch=arch)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.backbone(x), net(x))
    rand = load_model("random", arch=arch)
    assert len(rand.classes) == 1000 and rand.is_random


def _export(net, path, crop=64, dynamic=True):
    example = (torch.randn(2, 3, crop, crop),)
    shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic else None
    program = torch.export.export(net.eval(), example, dynamic_shapes=shapes)
    torch.export.save(program, str(path))
    return path


def test_exported_program_matches_the_eager_model_and_its_gradient(tmp_path):
    """Gradients flow through ExportedProgram.module(): the input gradient of ResNet18 is
    the eager one, exactly."""
    net, _ = _checkpoint(tmp_path)
    pt2 = _export(net, tmp_path / "model.pt2")
    names = tmp_path / "classes.txt"
    names.write_text("\n".join(NAMES))
    loaded = load_model(pt2, "logits", classes=names,
                        preprocessing=default_preprocessing("resnet18").__class__(crop=64))
    assert loaded.arch == "exported" and loaded.classes == NAMES
    x = torch.randn(3, 3, 64, 64)
    xe, xp = x.clone().requires_grad_(), x.clone().requires_grad_()
    net(xe)[:, 4].sum().backward()
    loaded.backbone(xp)[:, 4].sum().backward()
    assert torch.equal(xe.grad, xp.grad)


def test_exported_program_without_a_dynamic_batch_shows_how_to_export(tmp_path):
    net, _ = _checkpoint(tmp_path)
    pt2 = _export(net, tmp_path / "fixed.pt2", dynamic=False)
    prep = default_preprocessing("resnet18").__class__(crop=64)
    with pytest.raises(WeightsError, match=r"batches of 2 only.*torch.export.Dim\('batch'"):
        load_model(pt2, preprocessing=prep)


def test_exported_program_of_another_input_size_names_the_crop(tmp_path):
    net, _ = _checkpoint(tmp_path)
    pt2 = _export(net, tmp_path / "m.pt2", crop=64)
    with pytest.raises(WeightsError, match=r"take 224x224 images .* exported for 64x64"):
        load_model(pt2)


def test_tampered_exported_program_is_refused_before_any_unpickling(tmp_path, capsys):
    """A .pt2 part that torch.export.load would unpickle (it retries without weights_only)
    is refused, and its code never runs."""
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    net, _ = _checkpoint(tmp_path)
    good = _export(net, tmp_path / "good.pt2")
    bad = tmp_path / "bad.pt2"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        root = src.namelist()[0].split("/")[0]
        evil = f"{root}/data/sample_inputs/model.pt"
        for item in src.infolist():
            if item.filename != evil:
                dst.writestr(item, src.read(item.filename))
        dst.writestr(evil, pickle.dumps(Evil(), protocol=2))
    prep = default_preprocessing("resnet18").__class__(crop=64)
    with pytest.raises(WeightsError, match="unpickling them can run code"):
        load_model(bad, preprocessing=prep)
    assert "pwned" not in capsys.readouterr().out
    (tmp_path / "junk.pt2").write_bytes(b"not a zip")
    with pytest.raises(WeightsError, match="not one"):
        load_model(tmp_path / "junk.pt2", preprocessing=prep)


def test_unknown_arch_in_a_config_is_refused_with_a_suggestion(tmp_path):
    from workflows.config.loading import load_config

    path = tmp_path / "c.toml"
    path.write_text('[dataset]\nlayout = "synthetic"\ncount = 2\n[model]\narch = "resnt50"\n'
                    'weights = "random"\n[methods.gradient]\n')
    with pytest.raises(ConfigError, match="resnet50"):
        load_config(path)
