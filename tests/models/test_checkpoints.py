"""Torch-free weights identity, and a CLI that answers without importing torch."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest

from pipeline.errors import WeightsError
from tests.workflow_helpers import ROOT, cli, make_images, run_ok, write_config


def test_torch_free_identity_matches_torchvision(monkeypatch, tmp_path):
    import torch
    from torchvision.models import ResNet18_Weights

    from pipeline.models import checkpoints as weights

    assert f"torchvision:{ResNet18_Weights.IMAGENET1K_V1}" == weights.IMAGENET_ID
    assert ResNet18_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1] == weights.IMAGENET_FILE
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # torch's default, as in a fresh process
    for env in ({}, {"TORCH_HOME": str(tmp_path / "th")}, {"XDG_CACHE_HOME": str(tmp_path)}):
        monkeypatch.delenv("TORCH_HOME", raising=False)
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        assert str(weights.default_hub_dir()) == torch.hub.get_dir(), env


def test_hub_dir_follows_torch_set_dir(monkeypatch, tmp_path):
    import torch

    from pipeline.models import checkpoints as weights

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "elsewhere"))
    assert weights.imagenet_cache_path().parent.parent == tmp_path / "elsewhere"


def test_the_cli_and_status_do_not_import_torch():
    code = ("import sys, workflows.cli.app, workflows.runner.run, workflows.config.loading; "
            "print(sorted(m for m in ('torch', 'torchvision', 'captum') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "[]", out


# ------------------------------------------------------------------ offline machines


@pytest.fixture()
def offline_hub(monkeypatch, tmp_path):
    """An empty torch hub cache and a download that fails like a machine with no network;
    returns the list of download attempts."""
    import torch

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    calls: list[str] = []

    def no_network(url, *_a, **_k):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return calls


def test_auto_tries_the_network_once_then_remembers(offline_hub, tmp_path, monkeypatch):
    from pipeline.models import checkpoints as weights
    from pipeline.models.classifier import load_model

    first = load_model("auto")
    assert first.is_random and len(offline_hub) == 1
    assert "xai weights import FILE" in first.note and "name resolution" in first.note
    second = load_model("auto")
    assert second.is_random and len(offline_hub) == 1, "the remembered failure was ignored"
    assert "not retried until" in second.note
    with pytest.raises(WeightsError):  # asked for by name: always tried
        load_model("imagenet")
    assert len(offline_hub) == 2
    monkeypatch.setattr(weights, "RETRY_AFTER_S", 0.0)  # the memory has expired
    load_model("auto")
    assert len(offline_hub) == 3


def test_a_run_with_auto_weights_offline_says_in_one_line_what_to_do(offline_hub, tmp_path):
    root = tmp_path / "images"
    make_images(root, n=2, broken=False)
    cfg = write_config(tmp_path / "c.toml", root, tmp_path / "runs", methods=("gradient",))
    cfg.write_text(cfg.read_text().replace('weights = "random"', 'weights = "auto"'))
    for attempt in (1, 2):
        result = run_ok(cfg)
        text = " ".join(result.output.split())  # type: ignore[attr-defined]
        assert "Downloading" not in text
        assert "RANDOM WEIGHTS" in text and "xai weights import FILE" in text
        assert len(offline_hub) == 1, f"run {attempt} waited on the network again"


def _fake_checkpoint(path: Path) -> str:
    """A ResNet18 state dict saved to ``path``; returns its SHA-256."""
    import torch
    from torchvision.models import resnet18

    torch.manual_seed(3)
    torch.save(resnet18(weights=None).state_dict(), path)
    return weights_mod().file_sha256(path)


def weights_mod():
    from pipeline.models import checkpoints as weights

    return weights


def test_weights_import_refuses_a_file_with_another_hash(offline_hub, tmp_path):
    src = tmp_path / "resnet18.pth"
    digest = _fake_checkpoint(src)
    result = cli("weights", "import", str(src))
    assert result.exit_code == 2  # type: ignore[attr-defined]
    text = " ".join(result.output.split())  # type: ignore[attr-defined]
    assert "SHA-256 starting f37072fd" in text and digest in text
    assert not weights_mod().imagenet_cache_path().exists()
    missing = cli("weights", "import", str(tmp_path / "nope.pth"))
    assert missing.exit_code == 2 and "there is none" in missing.output  # type: ignore


def test_weights_import_copies_a_matching_file_and_auto_then_uses_it(offline_hub, tmp_path,
                                                                    monkeypatch):
    import torch

    from pipeline.models.classifier import load_model

    src = tmp_path / "download.pth"
    digest = _fake_checkpoint(src)
    w = weights_mod()
    # The real file's hash starts f37072fd; stand in a name carrying this file's prefix.
    real = w.published("resnet18")
    fake = type(real)(real.arch, real.name, real.url.replace("f37072fd", digest[:8]))
    monkeypatch.setattr(w, "published", lambda arch="resnet18": fake)
    assert load_model("auto").is_random and len(offline_hub) == 1  # failure remembered
    assert "missing" in cli("weights", "status").output  # type: ignore[attr-defined]
    result = cli("weights", "import", str(src))
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    dest = w.imagenet_cache_path()
    assert dest.read_bytes() == src.read_bytes()
    assert w.recent_failure() is None
    assert "present" in cli("weights", "status").output  # type: ignore[attr-defined]
    loaded = load_model("auto")
    assert not loaded.is_random and loaded.weights_id == w.IMAGENET_ID
    expected = torch.load(src, weights_only=True)["conv1.weight"]
    assert torch.equal(loaded.backbone.conv1.weight, expected)
    assert len(offline_hub) == 1
