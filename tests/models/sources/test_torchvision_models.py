"""torchvision's models: every classifier known torch-free, their published preprocessing,
the one builder (auxiliary heads, input sizes), and the published weights offline."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision

from pipeline.errors import WeightsError
from pipeline.models.architectures import build, default_preprocessing
from pipeline.models.classifier import imagenet_cache_path, load_model
from pipeline.models.sources import MODEL_SOURCES
from pipeline.models.sources.torchvision_models import offline_message
from pipeline.models.torchvision_table import (
    _table,
    state_signature,
    table_classifier_entries,
    torchvision_archs,
)

TORCHVISION = MODEL_SOURCES["torchvision"]


def test_every_torchvision_classifier_is_known():
    listed = set(torchvision.models.list_models(module=torchvision.models))
    assert set(torchvision_archs()) == listed
    assert len(listed) >= 80


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


@pytest.mark.parametrize("arch", ["googlenet", "inception_v3", "mobilenet_v3_small",
                                  "vit_b_16"])
def test_the_builder_makes_the_table_architecture(arch):
    """The one builder gives the state dict the table was made from (its signature), for
    the architectures it passes extra parameters to as well."""
    with torch.device("meta"):
        net = build(arch)
    shapes = {k: list(v.shape) for k, v in net.state_dict().items()}
    classifier = table_classifier_entries(arch)
    assert state_signature(shapes, classifier) == _table()[arch]["signature"]


@pytest.mark.parametrize(("arch", "aux"), [("googlenet", "aux1"), ("inception_v3", "AuxLogits")])
def test_auxiliary_heads_are_built_for_the_weights_and_dropped_once_loaded(arch, aux):
    """Their published weights hold the auxiliary heads and expect transform_input: a
    checkpoint loads strictly, then the heads (training only) are gone."""
    with torch.device("meta"):
        net = TORCHVISION.build(arch, 4, initialise=False)
    assert net.transform_input and net.aux_logits and getattr(net, aux) is not None
    net = TORCHVISION.after_load(arch, net)
    assert not net.aux_logits and getattr(net, aux) is None


def test_the_builder_sizes_a_vit_for_the_crop():
    with torch.device("meta"):
        net = build("vit_b_16", 10, crop=64)
    assert net.image_size == 64 and net.heads.head.out_features == 10


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "efficientnet_b0", "convnext_tiny"])
def test_other_architectures_load_random_and_from_a_checkpoint(tmp_path, arch):
    torch.manual_seed(0)
    net = torchvision.models.get_model(arch, num_classes=5).eval()
    path = tmp_path / f"{arch}.pth"
    torch.save(net.state_dict(), path)
    loaded = load_model(path, "logits", arch=arch)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.backbone(x), net(x))
    rand = load_model("random", arch=arch)
    assert len(rand.classes) == 1000 and rand.is_random
    assert rand.weights_id == f"random:{arch}:seed=0"


# ------------------------------------------------------------------ published weights offline


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
    assert loaded.note.startswith("ImageNet weights unavailable (URLError: ")
    assert "xai weights import" in loaded.note


def test_corrupt_cache_file_is_reported(offline):
    path = imagenet_cache_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="Delete the file"):
        load_model("imagenet")


def test_a_recent_failed_download_is_a_problem_known_before_loading(offline):
    assert TORCHVISION.weights_problem("resnet18", "imagenet") is None
    load_model("auto")  # fails, and remembers it
    why = TORCHVISION.weights_problem("resnet18", "imagenet")
    assert why is not None and why.startswith("the resnet18 checkpoint is not in the cache (")
    assert "a download failed recently" in why
    assert TORCHVISION.weights_problem("resnet18", "random") is None


def test_the_library_offline_error_names_the_library_calls():
    message = offline_message("no network", "resnet18")
    assert "pipeline.models.checkpoints.import_weights(FILE" in message
    assert "load_model(weights='random')" in message


def test_an_imported_safetensors_file_counts_as_the_published_weights(offline, tmp_path):
    """A failed download is no problem once a safetensors copy is imported: ``auto`` and
    ``imagenet`` load it, under its own identity and with a note naming it."""
    from safetensors.torch import save_file

    from pipeline.file_io import file_sha256
    from pipeline.models.checkpoints import IMAGENET_ID, import_weights

    assert not TORCHVISION.has_published("resnet18")
    assert TORCHVISION.published_note("resnet18", "imagenet") == ""
    load_model("auto")  # fails, and remembers it
    assert TORCHVISION.weights_problem("resnet18", "imagenet") is not None
    src = tmp_path / "r18.safetensors"
    save_file(torchvision.models.resnet18().state_dict(), str(src))
    import_weights(src, "resnet18", sha256=file_sha256(src))
    assert TORCHVISION.has_published("resnet18")
    assert TORCHVISION.weights_problem("resnet18", "imagenet") is None
    assert TORCHVISION.published_id("resnet18") == \
        f"imported:resnet18.safetensors:sha256={file_sha256(src)}" != IMAGENET_ID
    assert "the imported safetensors" in TORCHVISION.published_note("resnet18", "auto")
    assert not TORCHVISION.has_published("resnet34")
