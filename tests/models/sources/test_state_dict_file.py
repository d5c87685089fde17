"""A state-dict file: loaded into ``[model] arch`` with its classifier's class count, its
identity by name and SHA-256, and every file that is not a tensor-only state dict refused
with what it holds."""

from __future__ import annotations

import pickle
import re

import pytest
import torch
import torchvision

from pipeline.errors import WeightsError
from pipeline.file_io import file_sha256
from pipeline.models.classifier import load_model
from pipeline.models.sources import weights_identity
from pipeline.models.torchvision_table import fitting_archs


def test_local_state_dict_file(tmp_path):
    src = load_model("random", seed=9).backbone
    path = tmp_path / "w.pth"
    torch.save(src.state_dict(), path)
    loaded = load_model(path)
    assert torch.equal(loaded.backbone.fc.weight, src.fc.weight)
    assert loaded.weights_id == f"file:w.pth:sha256={file_sha256(path)}"
    assert loaded.weights_id == weights_identity(str(path), 0)
    wrapped = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, wrapped)
    assert torch.equal(load_model(wrapped).backbone.fc.weight, src.fc.weight)


def test_the_identity_names_an_architecture_other_than_the_reference(tmp_path):
    path = tmp_path / "m.pth"
    path.write_bytes(b"abc")
    sha = file_sha256(path)
    assert weights_identity(str(path), 3, "", "mobilenet_v3_small") == \
        f"file:mobilenet_v3_small:m.pth:sha256={sha}"
    assert weights_identity("missing.pth", 3, "", "vit_b_16") == "file:vit_b_16:missing.pth"
    assert weights_identity("missing.pth", 3) == "file:missing.pth"


@pytest.mark.parametrize("content,match", [
    (b"\x00garbage", "starts with the bytes 00 67 61 72"),
    (b"", "it is empty"),
    (b"hello, these are not weights\n", "it starts with text ('hello, these are not weights')"),
    (b"PK\x03\x04truncated", "zip archive like a torch.save"),
    (None, "there is none"),
])
def test_bad_local_file(tmp_path, content, match):
    path = tmp_path / "bad.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(WeightsError, match=re.escape(match)) as info:
        load_model(path)
    assert "KeyError" not in str(info.value) and "Error:" not in str(info.value)


def test_wrong_architecture_file(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(WeightsError, match="does not fit"):
        load_model(path)


def test_state_dict_of_another_architecture_names_the_one_it_fits(tmp_path):
    torch.manual_seed(0)
    net = torchvision.models.get_model("mobilenet_v3_small", num_classes=10)
    path = tmp_path / "mobile.pth"
    torch.save(net.state_dict(), path)
    with pytest.raises(WeightsError, match=r"does not fit.*mobilenet_v3_small") as info:
        load_model(path, arch="resnet18")
    assert "It fits torchvision's mobilenet_v3_small" in str(info.value)
    assert 'arch = "mobilenet_v3_small"' in str(info.value)
    state = torch.load(path, weights_only=True)
    assert "mobilenet_v3_small" in fitting_archs({k: list(v.shape) for k, v in state.items()})


def test_a_deeper_network_of_the_family_is_named_without_torch_internals(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "deeper.pth"
    torch.save(torchvision.models.get_model("resnet34", num_classes=10).state_dict(), path)
    with pytest.raises(WeightsError) as info:
        load_model(path, arch="resnet18")
    assert str(info.value) == (
        f"Expected resnet18 weights in {path}, but the state dict does not fit: 96 entries "
        "are not resnet18's. It fits torchvision's resnet34: set [model] arch = \"resnet34\" "
        "(or --arch resnet34).")


def test_a_state_dict_that_fits_nothing_quotes_a_few_entries_and_their_shapes(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2), "head.bias": torch.zeros(2)}, path)
    with pytest.raises(WeightsError) as info:
        load_model(path)
    assert str(info.value) == (
        f"Expected resnet18 weights in {path}, but the state dict does not fit: 121 entries "
        "of the 122 resnet18 needs are missing (conv1.weight, bn1.weight and 119 more), "
        "1 entry is not resnet18's (head.bias), and 1 entry has another shape (fc.weight is "
        "[2, 2], expected [2, 512]). Save the model you mean with "
        "torch.save(model.state_dict(), path), and set [model] arch to its architecture.")


def test_file_with_code_is_refused(tmp_path, capsys):
    """weights_only=True: a pickle that would run code is rejected, and the code never runs."""

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(Evil(), protocol=2))
    with pytest.raises(WeightsError, match="a Python pickle, not a tensor-only"):
        load_model(path)
    assert "pwned" not in capsys.readouterr().out


def test_a_whole_pickled_model_is_named_with_the_fix(tmp_path):
    """torch.save(model): refused (loading it would run code), and the message says to save
    the state dict or export the model, naming the classes the file holds."""
    from torchvision.models import resnet18

    path = tmp_path / "whole.pth"
    torch.save(resnet18(num_classes=3), path)
    with pytest.raises(WeightsError) as err:
        load_model(path)
    message = str(err.value)
    assert "whole pickled model" in message and "torchvision.models.resnet.ResNet" in message
    assert "model.state_dict()" in message and "torch.export" in message
