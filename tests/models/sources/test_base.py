"""The model-source registry: which source takes each ``(arch, weights)`` pair, the messages
built from all of them, and a new source taking pairs with nothing else changed."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from pipeline.errors import ConfigError
from pipeline.models.classifier import load_model
from pipeline.models.preprocessing import IMAGENET, Preprocessing
from pipeline.models.sources import (
    MODEL_SOURCES,
    LoadedNetwork,
    LoadRequest,
    ModelSource,
    check_arch,
    fallback_hint,
    hashed_class_count,
    is_weights_path,
    preprocessing_for,
    recorded_arch,
    source_for,
    weights_identity,
)
from tests.workflow_helpers import ROOT


def test_the_sources_in_their_order():
    assert list(MODEL_SOURCES) == ["torchvision", "timm", "evidence", "state-dict",
                                   "exported-program", "huggingface"]


@pytest.mark.parametrize(("arch", "weights", "source"), [
    ("resnet18", "imagenet", "torchvision"), ("vit_b_16", "auto", "torchvision"),
    ("resnet18", "random", "torchvision"), ("timm:deit_tiny_patch16_224", "random", "timm"),
    ("resnet18", "evidence", "evidence"), ("resnet18", "/w/model.pth", "state-dict"),
    ("timm:x", "model.pt", "state-dict"), ("resnet18", "model.pt2", "exported-program"),
    ("timm:x", "~/m.pt2", "exported-program"), ("resnet18", "hf:org/name", "huggingface"),
    ("resnet18", "hf:org/name@v1", "huggingface"),
])
def test_each_pair_has_one_source(arch, weights, source):
    assert source_for(arch, weights).name == source
    specific = [s.name for s in MODEL_SOURCES.values()
                if s.takes(arch, weights) and not s.catch_all]
    assert specific == ([] if MODEL_SOURCES[source].catch_all else [source])


def test_an_unknown_arch_is_a_config_error_naming_every_form():
    with pytest.raises(ConfigError) as info:
        source_for("resnt18", "random")
    message = str(info.value)
    assert message.startswith("[model] arch: expected a torchvision classification model (e.g.")
    assert " or timm:<name>, got 'resnt18'; did you mean resnet18" in message
    assert check_arch("resnet50") is None


def test_weights_paths_are_what_no_source_names():
    assert [w for w in ("imagenet", "auto", "random", "evidence", "a.pth", "b.pt2", "dir")
            if is_weights_path(w)] == ["a.pth", "b.pt2", "dir"]


def test_what_the_store_records_without_loading():
    """The identities, architectures and class counts a run records (a store made before
    must find them unchanged)."""
    assert weights_identity("random", 0) == "random:seed=0"
    assert weights_identity("random", 2, "", "vit_b_16") == "random:vit_b_16:seed=2"
    assert weights_identity("imagenet", 0) == "torchvision:ResNet18_Weights.IMAGENET1K_V1"
    assert weights_identity("imagenet", 0, "", "convnext_tiny") == \
        "torchvision:ConvNeXt_Tiny_Weights.IMAGENET1K_V1"
    assert weights_identity("evidence", 0, "abc") == "evidence:resnet18-abc"
    assert weights_identity("nofile.pt2", 0, "", "vit_b_16") == "file:nofile.pt2"
    assert recorded_arch("vit_b_16", "m.pt2") == "exported"
    assert recorded_arch("vit_b_16", "m.pth") == "vit_b_16"
    assert [hashed_class_count("resnet18", w) for w in ("random", "evidence", "m.pth")] == \
        [1000, 6, 1000]
    assert preprocessing_for("inception_v3", "m.pt2") == IMAGENET
    assert preprocessing_for("inception_v3", "evidence") == IMAGENET
    assert preprocessing_for("inception_v3", "m.pth").crop == 299
    assert preprocessing_for("inception_v3", "random").crop == 299
    assert fallback_hint("resnet18", "auto").startswith("Put the file in place with")
    assert fallback_hint("resnet18", "random") == fallback_hint("timm:x", "auto") == ""


class _Tiny(ModelSource):
    """A source as a new module would add it: names of its own, taken by nothing else."""

    name = "tiny"

    def takes(self, arch: str, weights: str) -> bool:
        return weights.startswith("tiny:")

    def names_weights(self, weights: str) -> bool:
        return weights.startswith("tiny:")

    def preprocessing(self, arch: str, weights: str) -> Preprocessing:
        return Preprocessing(40, 32)

    def weights_id(self, arch: str, weights: str, seed: int, evidence_key: str = "") -> str:
        return f"{weights}:seed={seed}"

    def recorded_arch(self, arch: str) -> str:
        return "tiny"

    def load(self, request: LoadRequest) -> LoadedNetwork:
        torch.manual_seed(request.seed)
        net = nn.Sequential(nn.Flatten(), nn.Linear(3 * request.crop * request.crop, 3))
        return LoadedNetwork(net, self.weights_id(request.arch, request.weights,
                                                  request.seed), False)


def test_a_new_source_is_taken_with_nothing_else_changed(monkeypatch):
    monkeypatch.setitem(MODEL_SOURCES._entries, "tiny", _Tiny())
    assert not is_weights_path("tiny:one")
    assert weights_identity("tiny:one", 4, "", "resnet18") == "tiny:one:seed=4"
    loaded = load_model("tiny:one", "logits", seed=4, classes=["a", "b", "c"])
    assert (loaded.arch, loaded.classes, loaded.preprocessing.crop) == ("tiny", ("a", "b", "c"),
                                                                       32)
    assert loaded.weights_id == "tiny:one:seed=4"
    assert loaded.backbone(torch.zeros(2, 3, 32, 32)).shape == (2, 3)


def test_the_registry_is_torch_free():
    code = ("import sys, pipeline.models.sources as s, pipeline.models.architectures; "
            "s.preprocessing_for('resnet18', 'random'); s.check_arch('resnt18'); "
            "s.weights_identity('random', 0, '', 'vit_b_16'); "
            "print(sorted(m for m in ('torch', 'torchvision', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "[]", out
