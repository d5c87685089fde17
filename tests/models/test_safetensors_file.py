"""safetensors weights for every source: read as a state dict, the class count off its
classifier, and a whole run on it equal to the run on the same weights saved with
``torch.save``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import zarr
from safetensors.torch import save_file

from pipeline.errors import WeightsError
from pipeline.models.classifier import load_model
from pipeline.models.safetensors_file import is_safetensors
from pipeline.models.sources.state_dict_file import read_state_dict
from tests.workflow_helpers import cli, make_images, write_config
from workflows.config.loading import load_config


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    """A seeded 4-class ResNet18 as ``.pth``, as ``.safetensors`` and renamed ``.pth``."""
    root = tmp_path_factory.mktemp("st")
    torch.manual_seed(5)
    state = torchvision.models.resnet18(num_classes=4).state_dict()
    torch.save(state, root / "r18.pth")
    save_file(state, str(root / "r18.safetensors"))
    (root / "renamed.pth").write_bytes((root / "r18.safetensors").read_bytes())
    return {"pth": root / "r18.pth", "st": root / "r18.safetensors",
            "renamed": root / "renamed.pth", "root": root}


def test_a_safetensors_file_reads_as_the_same_state_dict(weights):
    a, b = read_state_dict(weights["pth"]), read_state_dict(weights["st"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert is_safetensors(weights["st"]) and is_safetensors(weights["renamed"])
    assert not is_safetensors(weights["pth"])
    c = read_state_dict(weights["renamed"])
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_the_class_count_comes_from_the_classifier(weights):
    loaded = load_model(str(weights["st"]), "logits", arch="resnet18")
    assert len(loaded.classes) == 4
    assert loaded.weights_id.startswith("file:r18.safetensors:sha256=")


def test_weights_import_takes_a_safetensors_file_only_with_its_hash_and_1000_classes(
        weights, monkeypatch, tmp_path):
    """Without the publisher's hash a safetensors import is refused, and this 4-class
    checkpoint cannot stand in for the ImageNet weights: both say how to use it as it is."""
    from pipeline.file_io import file_sha256
    from pipeline.models.checkpoints import import_weights, imported

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    way_out = r"--weights .*r18.safetensors --arch"
    with pytest.raises(WeightsError, match=rf"torchvision publishes no safetensors.*{way_out}"):
        import_weights(weights["st"], "resnet18")
    digest = file_sha256(weights["st"])
    with pytest.raises(WeightsError, match=rf"got a 4-class classifier.*{way_out}"):
        import_weights(weights["st"], "resnet18", sha256=digest)
    # A renamed file is known by its header, not its name.
    with pytest.raises(WeightsError, match="torchvision publishes no safetensors"):
        import_weights(weights["renamed"], "resnet18")
    assert imported("resnet18") is None


def test_a_broken_safetensors_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(WeightsError, match="Expected a safetensors file"):
        read_state_dict(bad)


def _run(tmp: Path, weights: Path, images: Path) -> zarr.Group:
    path = write_config(tmp / "c.toml", images, tmp / "out",
                        methods=("gradient", "integrated_gradients", "grad_cam"))
    path.write_text(path.read_text().replace(
        'weights = "random"', f'weights = "{weights}"\narch = "resnet18"'))
    result = cli("run", "--config", str(path))
    assert result.exit_code == 0, result.output
    return zarr.open_group(str(load_config(path).run_dir / "store.zarr"), mode="r")


def test_the_safetensors_store_equals_the_pth_store(tmp_path, weights):
    images = tmp_path / "images"
    make_images(images, 3, broken=False)
    a = _run(tmp_path / "pth", weights["pth"], images)
    b = _run(tmp_path / "st", weights["st"], images)
    for name in ("pixels", "logits", "pred", "raw", "aggregated", "normalized", "delta"):
        assert np.array_equal(np.asarray(a[name][:]), np.asarray(b[name][:]), equal_nan=True), \
            name
    assert a.attrs["weights_id"].split(":sha256=")[0] == "file:r18.pth"
    assert b.attrs["weights_id"].split(":sha256=")[0] == "file:r18.safetensors"
