"""``load_model``: seeded random weights, a frozen model in eval mode, the output heads, and
the class names of ImageNet and of a checkpoint with its own classes."""

from __future__ import annotations

import pytest
import torch
import torchvision

from pipeline.data.class_names import imagenet_synsets, synset_to_index
from pipeline.errors import WeightsError
from pipeline.models.classifier import class_names, load_model

NAMES = tuple(f"kind{i}" for i in range(10))


def test_random_weights_are_seeded():
    a, b, c = (load_model("random", seed=s).backbone for s in (1, 1, 2))
    wa, wb, wc = (m.conv1.weight for m in (a, b, c))
    assert torch.equal(wa, wb)
    assert not torch.equal(wa, wc)


def test_model_is_frozen_and_in_eval_mode():
    loaded = load_model("random")
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert (loaded.arch, loaded.weights_id, loaded.is_random) == ("resnet18", "random:seed=0",
                                                                  True)


def test_heads():
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    soft = load_model("random", head="softmax").model(x)
    logits = load_model("random", head="logits").model(x)
    assert torch.allclose(soft.sum(1), torch.ones(2), atol=1e-5)
    assert torch.allclose(soft, logits.softmax(1), atol=1e-6)
    with pytest.raises(WeightsError, match="head"):
        load_model("random", head="sigmoid")


def test_class_names_and_synsets():
    assert len(class_names()) == 1000
    assert len(imagenet_synsets()) == 1000
    assert synset_to_index()["n01534433"] == 13
    assert class_names()[13] == "junco"
    assert class_names()[281] == "tabby"
    assert load_model("random").classes == class_names()


@pytest.fixture()
def checkpoint(tmp_path):
    torch.manual_seed(0)
    net = torchvision.models.get_model("resnet18", num_classes=10).eval()
    path = tmp_path / "resnet18-10.pth"
    torch.save(net.state_dict(), path)
    return net, path


def test_fine_tuned_checkpoint_loads_with_its_classes(tmp_path, checkpoint):
    net, path = checkpoint
    names = tmp_path / "classes.txt"
    names.write_text("\n".join(NAMES) + "\n")
    loaded = load_model(path, "logits", classes=names)
    assert loaded.classes == NAMES and not loaded.warnings
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.backbone(x), net(x))
        assert loaded.model(x).shape == (2, 10)


def test_checkpoint_class_names_from_the_dataset_folders_then_made_up(checkpoint):
    _net, path = checkpoint
    assert load_model(path, dataset_classes=NAMES).classes == NAMES
    made = load_model(path)
    assert made.classes == tuple(f"class_{i}" for i in range(10))
    assert made.warnings == (
        "the model in resnet18-10.pth: no class names given ([model] classes = "
        "\"classes.txt\" or --classes FILE, one a line), so its 10 outputs are called "
        "class_0 ... class_9.",)


def test_class_count_mismatch_names_both_counts(tmp_path, checkpoint):
    _net, path = checkpoint
    names = tmp_path / "classes.txt"
    names.write_text("a\nb\nc\n")
    with pytest.raises(WeightsError, match=r"Expected 10 class names .* got 3 in"):
        load_model(path, classes=names)
