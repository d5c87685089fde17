"""An exported program: the eager model's outputs and input gradients exactly, its identity
without an architecture, and every archive that would unpickle code refused unopened."""

from __future__ import annotations

import pickle
import zipfile

import pytest
import torch
import torchvision

from pipeline.errors import WeightsError
from pipeline.file_io import file_sha256
from pipeline.models.classifier import load_model
from pipeline.models.preprocessing import Preprocessing
from pipeline.models.sources import weights_identity

NAMES = tuple(f"kind{i}" for i in range(10))
SMALL = Preprocessing(crop=64)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return torchvision.models.get_model("resnet18", num_classes=10).eval()


def _export(net, path, crop=64, dynamic=True):
    example = (torch.randn(2, 3, crop, crop),)
    shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic else None
    program = torch.export.export(net.eval(), example, dynamic_shapes=shapes)
    torch.export.save(program, str(path))
    return path


def test_exported_program_matches_the_eager_model_and_its_gradient(tmp_path, net):
    """Gradients flow through ExportedProgram.module(): the input gradient of ResNet18 is
    the eager one, exactly."""
    pt2 = _export(net, tmp_path / "model.pt2")
    names = tmp_path / "classes.txt"
    names.write_text("\n".join(NAMES))
    loaded = load_model(pt2, "logits", classes=names, preprocessing=SMALL, arch="vit_b_16")
    assert loaded.arch == "exported" and loaded.classes == NAMES
    assert loaded.weights_id == f"file:model.pt2:sha256={file_sha256(pt2)}"
    assert loaded.weights_id == weights_identity(str(pt2), 0, "", "vit_b_16")
    x = torch.randn(3, 3, 64, 64)
    xe, xp = x.clone().requires_grad_(), x.clone().requires_grad_()
    net(xe)[:, 4].sum().backward()
    loaded.backbone(xp)[:, 4].sum().backward()
    assert torch.equal(xe.grad, xp.grad)
    assert loaded.backbone.train() is loaded.backbone


def test_exported_program_without_a_dynamic_batch_shows_how_to_export(tmp_path, net):
    pt2 = _export(net, tmp_path / "fixed.pt2", dynamic=False)
    with pytest.raises(WeightsError, match=r"batches of 2 only.*torch.export.Dim\('batch'"):
        load_model(pt2, preprocessing=SMALL)


def test_exported_program_of_another_input_size_names_the_crop(tmp_path, net):
    pt2 = _export(net, tmp_path / "m.pt2", crop=64)
    with pytest.raises(WeightsError, match=r"take 224x224 images .* exported for 64x64"):
        load_model(pt2)


def test_tampered_exported_program_is_refused_before_any_unpickling(tmp_path, capsys, net):
    """A .pt2 part that torch.export.load would unpickle (it retries without weights_only)
    is refused, and its code never runs."""

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    good = _export(net, tmp_path / "good.pt2")
    bad = tmp_path / "bad.pt2"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        root = src.namelist()[0].split("/")[0]
        evil = f"{root}/data/sample_inputs/model.pt"
        for item in src.infolist():
            if item.filename != evil:
                dst.writestr(item, src.read(item.filename))
        dst.writestr(evil, pickle.dumps(Evil(), protocol=2))
    with pytest.raises(WeightsError, match="unpickling them can run code"):
        load_model(bad, preprocessing=SMALL)
    assert "pwned" not in capsys.readouterr().out
    (tmp_path / "junk.pt2").write_bytes(b"not a zip")
    with pytest.raises(WeightsError, match="not one"):
        load_model(tmp_path / "junk.pt2", preprocessing=SMALL)
    with pytest.raises(WeightsError, match=r"Expected an exported program at .*none"):
        load_model(tmp_path / "missing.pt2", preprocessing=SMALL)
