from __future__ import annotations

import re
import urllib.error

import pytest
import torch

from pipeline.errors import WeightsError
from pipeline.models.loading import (
    class_names,
    imagenet_cache_path,
    imagenet_synsets,
    load_model,
    synset_to_index,
)


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    """An empty torch hub cache and a download that fails like a machine with no network."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))

    def no_network(*_a, **_k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path


def test_offline_imagenet_weights_error_names_the_ways_out(offline):
    with pytest.raises(WeightsError) as info:
        load_model("imagenet")
    msg = str(info.value)
    assert str(imagenet_cache_path()) in msg
    assert "--weights random" in msg
    assert "local state-dict file" in msg
    assert "Traceback" not in msg


def test_auto_weights_fall_back_to_random_offline(offline):
    loaded = load_model("auto", seed=5)
    assert loaded.is_random
    assert loaded.weights_id == "random:seed=5"


def test_corrupt_cache_file_is_reported(offline):
    path = imagenet_cache_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="Delete the file"):
        load_model("imagenet")


def test_random_weights_are_seeded():
    a, b, c = (load_model("random", seed=s).backbone for s in (1, 1, 2))
    wa, wb, wc = (m.conv1.weight for m in (a, b, c))
    assert torch.equal(wa, wb)
    assert not torch.equal(wa, wc)


def test_model_is_frozen_and_in_eval_mode():
    loaded = load_model("random")
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())


def test_heads():
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    soft = load_model("random", head="softmax").model(x)
    logits = load_model("random", head="logits").model(x)
    assert torch.allclose(soft.sum(1), torch.ones(2), atol=1e-5)
    assert torch.allclose(soft, logits.softmax(1), atol=1e-6)
    with pytest.raises(WeightsError, match="head"):
        load_model("random", head="sigmoid")


def test_local_state_dict_file(tmp_path):
    src = load_model("random", seed=9).backbone
    path = tmp_path / "w.pth"
    torch.save(src.state_dict(), path)
    loaded = load_model(path)
    assert torch.equal(loaded.backbone.fc.weight, src.fc.weight)
    assert loaded.weights_id.startswith("file:w.pth:sha256=")
    wrapped = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, wrapped)
    assert torch.equal(load_model(wrapped).backbone.fc.weight, src.fc.weight)


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


def test_file_with_code_is_refused(tmp_path, capsys):
    """weights_only=True: a pickle that would run code is rejected, and the code never runs."""
    import pickle

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


def test_the_library_offline_error_names_the_library_calls():
    from pipeline.models.loading import _offline_message

    message = _offline_message("no network", "resnet18")
    assert "pipeline.models.checkpoints.import_weights(FILE" in message
    assert "load_model(weights='random')" in message


def test_class_names_and_synsets():
    assert len(class_names()) == 1000
    assert len(imagenet_synsets()) == 1000
    assert synset_to_index()["n01534433"] == 13
    assert class_names()[13] == "junco"
    assert class_names()[281] == "tabby"
