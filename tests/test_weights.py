"""Torch-free weights identity, and a CLI that answers without importing torch."""

from __future__ import annotations

import subprocess
import sys

from tests.workflow_helpers import ROOT


def test_torch_free_identity_matches_torchvision(monkeypatch, tmp_path):
    import torch
    from torchvision.models import ResNet18_Weights

    from pipeline import weights

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

    from pipeline import weights

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "elsewhere"))
    assert weights.imagenet_cache_path().parent.parent == tmp_path / "elsewhere"


def test_the_cli_and_status_do_not_import_torch():
    code = ("import sys, workflows.cli, workflows.run, workflows.config; "
            "print(sorted(m for m in ('torch', 'torchvision', 'captum') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "[]", out
