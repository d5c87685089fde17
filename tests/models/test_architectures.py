"""Architectures by name: the check with a did-you-mean, the classifier entries, the one
builder and seeded random weights, whichever source names the architecture."""

from __future__ import annotations

import pytest
import torch

from pipeline.errors import ConfigError
from pipeline.models.architectures import (
    build,
    classifier_entries,
    default_preprocessing,
    num_classes_of,
)
from pipeline.models.sources import check_arch
from pipeline.models.sources.base import random_network


def test_unknown_arch_has_a_did_you_mean():
    why = check_arch("resnet181")
    assert why is not None and "resnet18" in why
    assert check_arch("resnet50") is None
    with pytest.raises(ConfigError, match=r"^\[model\] arch: expected a torchvision"):
        default_preprocessing("resnet181")


@pytest.mark.parametrize(("arch", "entry"), [
    ("resnet18", "fc.weight"), ("mobilenet_v3_small", "classifier.3.weight"),
    ("vit_b_16", "heads.head.weight"), ("convnext_tiny", "classifier.2.weight"),
])
def test_class_count_is_read_off_the_classifier(arch, entry):
    assert entry in classifier_entries(arch)
    state = {entry: torch.zeros(7, 3)}
    assert num_classes_of(arch, state) == 7
    assert num_classes_of(arch, {"other.weight": torch.zeros(7, 3)}) is None


def test_random_weights_are_the_builders_under_the_seed():
    """The seeded weights are those the builder draws after ``torch.manual_seed(seed)``,
    and drawing them leaves the caller's random state alone."""
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    net = random_network(3, "resnet18", 224)
    assert torch.equal(torch.rand(1), before)
    torch.manual_seed(3)
    ref = build("resnet18", None, 224)
    for (k, v), w in zip(net.state_dict().items(), ref.state_dict().values(), strict=True):
        assert torch.equal(v, w), k


def test_a_zero_head_gets_small_seeded_weights():
    """torchvision's ViT starts with a zero head: its random weights get a seeded normal
    one, so that classes (and maps) differ."""
    net = random_network(0, "vit_b_16", 32)
    head = net.heads.head.weight.detach()
    assert head.any() and float(head.std()) == pytest.approx(0.02, rel=0.05)
    assert torch.equal(head, random_network(0, "vit_b_16", 32).heads.head.weight)


def test_unknown_arch_in_a_config_is_refused_with_a_suggestion(tmp_path):
    from workflows.config.loading import load_config

    path = tmp_path / "c.toml"
    path.write_text('[dataset]\nlayout = "synthetic"\ncount = 2\n[model]\narch = "resnt50"\n'
                    'weights = "random"\n[methods.gradient]\n')
    with pytest.raises(ConfigError, match="resnet50"):
        load_config(path)
