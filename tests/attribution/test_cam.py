"""Layer maps (``pipeline.attribution.cam``): the layer found or checked, Grad-CAM against
Captum's, and
Grad-CAM on a transformer's tokens."""

from __future__ import annotations

import pytest
import torch
import torchvision
from captum.attr import GuidedGradCam, LayerAttribution, LayerGradCam
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from pipeline.attribution.accel import optimize
from pipeline.attribution.cam import find_layer, grad_cam, guided_grad_cam, named_layers
from pipeline.attribution.network_rewrite import unshared
from pipeline.errors import ConfigError
from pipeline.models.classifier import freeze, with_head


def _net(arch: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return freeze(torchvision.models.get_model(arch, **kwargs).eval())


def _tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    vit = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                            hidden_dim=16, mlp_dim=32, num_classes=10)
    nn.init.normal_(vit.heads.head.weight, std=0.5)  # torchvision starts it at zero
    return freeze(vit.eval())


@pytest.mark.parametrize(("arch", "crop", "layer", "grid"), [
    ("resnet18", 64, "layer4", (2, 2)),
    ("resnet18", 32, "layer3", (2, 2)),   # layer4 is 1x1 at 32 px: not a map
    ("mobilenet_v3_small", 64, "features", (2, 2)),
    ("resnet50", 32, "layer4.0.bn1", (2, 2)),  # not layer4.0.relu: it runs thrice, 2 sizes
])
def test_the_last_spatial_layer_is_found_through_the_engine_wrappers(arch, crop, layer, grid):
    model = optimize(with_head(_net(arch, num_classes=10), "softmax"), "cpu",
                     channels_last=True)
    assert find_layer(model, torch.zeros(1, 3, crop, crop)) == (layer, grid)


def test_a_vit_reads_the_last_block_before_only_the_class_token_goes_on():
    """After the last block's attention only the class token reaches the head: a map of the
    encoder's output would be zero, so the last ln_1 is the layer."""
    layer, grid = find_layer(_tiny_vit(), torch.zeros(1, 3, 32, 32))
    assert (layer, grid) == ("encoder.layers.encoder_layer_1.ln_1", (4, 4))


def test_a_bad_layer_name_lists_candidates():
    model = with_head(_net("resnet18", num_classes=10), "softmax")
    with pytest.raises(ConfigError, match=r"'layer9'.*not a module.*layer4"):
        find_layer(model, torch.zeros(1, 3, 64, 64), "layer9")
    with pytest.raises(ConfigError, match=r"'fc'.*shape \(1, 10\), not a map"):
        find_layer(model, torch.zeros(1, 3, 64, 64), "fc")
    with pytest.raises(ConfigError, match=r"'layer4.0.relu'.*runs 2 times"):
        find_layer(model, torch.zeros(1, 3, 64, 64), "layer4.0.relu")


def test_grad_cam_equals_captums_layer_grad_cam_on_the_optimized_model():
    model = optimize(with_head(_net("resnet18", num_classes=10), "softmax"), "cpu",
                     channels_last=True)
    x = torch.randn(3, 3, 64, 64)
    t = torch.tensor([1, 4, 7])
    ours = grad_cam(model, x, t, {"layer": "layer4"}, max_batch=2)
    cam = LayerGradCam(model, named_layers(model)["layer4"]).attribute(
        x, target=t, relu_attributions=True)
    ref = LayerAttribution.interpolate(cam, (64, 64), interpolate_mode="bilinear")
    assert ours.shape == (3, 3, 64, 64)
    # Batches of 2 against one of 3: the same numbers up to float rounding.
    torch.testing.assert_close(ours.sum(1, keepdim=True), ref, rtol=1e-4,
                               atol=1e-5 * float(ref.detach().abs().max()))
    assert (ours >= 0).all() and ref.abs().max() > 0


def test_guided_grad_cam_equals_captums_on_the_unshared_network():
    """Captum's GuidedGradCam on the network with one ReLU per use (its own guided backprop
    cannot hook a ReLU module that ResNet calls twice) is ours, exactly."""
    model = with_head(_net("resnet18", num_classes=10), "logits")
    x = torch.randn(2, 3, 64, 64)
    t = torch.tensor([2, 5])
    ours = guided_grad_cam(model, x, t, {"layer": "layer4"}, max_batch=4)
    free = unshared(model)[0]
    # The traced network calls leaves only: layer4's output is its last ReLU's.
    last = next(n for n in free.graph.nodes if n.target == "avgpool").args[0]
    ref = GuidedGradCam(free, free.get_submodule(str(last.target))).attribute(x, target=t)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-10)


def _token_cam_by_hand(vit: VisionTransformer, x: torch.Tensor, t: torch.Tensor
                       ) -> torch.Tensor:
    """Grad-CAM on ViT tokens written out once more: the activations and gradients at the
    last ln_1, patch tokens only, on their 4x4 grid."""
    kept = {}
    layer = vit.encoder.layers[-1].ln_1
    handle = layer.register_forward_hook(lambda _m, _i, out: kept.setdefault("a", out))
    try:
        out = vit(x.requires_grad_())
        (grad,) = torch.autograd.grad(out[torch.arange(len(t)), t].sum(), kept["a"])
    finally:
        handle.remove()
    acts, grads = kept["a"][:, 1:].detach(), grad[:, 1:]              # (N, 16, C)
    weights = grads.mean(dim=1, keepdim=True)                         # (N, 1, C)
    cam = torch.relu((weights * acts).sum(dim=2))                     # (N, 16)
    return cam.reshape(len(t), 1, 4, 4)


def test_grad_cam_on_tokens_is_laid_out_on_their_grid():
    vit = _tiny_vit()
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([0, 3])
    ours = grad_cam(vit, x, t, {"layer": ""}, max_batch=8)
    ref = LayerAttribution.interpolate(_token_cam_by_hand(vit, x, t), (32, 32),
                                       interpolate_mode="bilinear")
    torch.testing.assert_close(ours.sum(1, keepdim=True), ref, rtol=1e-5, atol=1e-9)
    assert ref.abs().max() > 0


def test_an_exported_program_has_no_layer_to_read(tmp_path):
    net = _net("resnet18", num_classes=10)
    program = torch.export.export(net, (torch.randn(2, 3, 64, 64),),
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    module = program.module()
    with pytest.raises(ConfigError, match="exported program runs operators"):
        find_layer(module, torch.zeros(1, 3, 64, 64))
    with pytest.raises(ConfigError, match="never runs as a module"):
        find_layer(module, torch.zeros(1, 3, 64, 64), "layer4")


class _Branches(nn.Module):
    """A CNN with a side branch the head never uses (``unused``) and one cut off from the
    graph (``detached``): both run, neither reaches the target."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.used = nn.Conv2d(4, 4, 3, padding=1)
        self.unused = nn.Conv2d(4, 4, 3, padding=1)
        self.detached = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        self.unused(h)  # computed and dropped
        side = self.detached(h.detach())
        pooled = self.used(h).mean(dim=(2, 3)) + 0 * side.detach().mean(dim=(2, 3))
        return self.head(pooled)


@pytest.mark.parametrize("layer", ["unused", "detached"])
@pytest.mark.parametrize("method", [grad_cam, guided_grad_cam])
def test_a_layer_the_target_does_not_reach_is_an_error_with_the_candidates(layer, method):
    """Captum fails inside autograd ("One of the differentiated Tensors appears to not have
    been used in the graph", or "element 0 of tensors does not require grad"); the layer is
    refused before any map, naming the layers that the target's gradient reaches."""
    torch.manual_seed(0)
    model = freeze(_Branches().eval())
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([0, 2])
    with pytest.raises(RuntimeError, match=r"differentiated Tensors|does not require grad"):
        LayerGradCam(model, getattr(model, layer)).attribute(x, target=t)
    with pytest.raises(ConfigError, match=rf"got '{layer}', which runs, but the target does "
                                          r"not depend on its output.*last first: used, stem\."):
        method(model, x, t, {"layer": layer}, 4)
    assert find_layer(model, torch.zeros(1, 3, 8, 8)) == ("used", (8, 8))
    assert find_layer(model, torch.zeros(1, 3, 8, 8), "used") == ("used", (8, 8))
