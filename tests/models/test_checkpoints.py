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


# ------------------------------------------------------------------ imported safetensors


def _safetensors(path: Path, seed: int = 3, num_classes: int = 1000) -> str:
    """A seeded ResNet18 with ``num_classes`` classes saved by safetensors to ``path``;
    returns its SHA-256."""
    import torch
    from safetensors.torch import save_file
    from torchvision.models import resnet18

    torch.manual_seed(seed)
    save_file(resnet18(weights=None, num_classes=num_classes).state_dict(), str(path))
    return weights_mod().file_sha256(path)


def _text(result: object) -> str:
    return " ".join(result.output.split())  # type: ignore[attr-defined]


def _nothing_imported() -> bool:
    folder = weights_mod().imported_path("resnet18").parent
    return not folder.exists() or not any(folder.iterdir())


def test_a_safetensors_import_without_the_publishers_hash_is_refused(offline_hub, tmp_path):
    src = tmp_path / "model.safetensors"
    _safetensors(src)
    result = cli("weights", "import", str(src), "--arch", "resnet18")
    assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
    text = _text(result)
    assert "Expected --sha256 HEX" in text and "torchvision publishes no safetensors" in text
    assert '"SHA256"' in text and "Hugging Face Hub" in text
    assert f"--weights {src} --arch resnet18" in text
    assert _nothing_imported() and offline_hub == []


def test_a_safetensors_import_with_another_hash_is_refused(offline_hub, tmp_path):
    src = tmp_path / "model.safetensors"
    digest = _safetensors(src)
    other = "0" * 64
    result = cli("weights", "import", str(src), "--sha256", other)
    assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
    text = _text(result)
    assert f"the SHA-256 its publisher lists ({other}), got {digest}" in text
    assert _nothing_imported()
    garbled = cli("weights", "import", str(src), "--sha256", digest[:12])
    assert garbled.exit_code == 2 and "64 hex digits" in _text(garbled)


def test_a_file_named_safetensors_that_is_none_is_refused_naming_it(offline_hub, tmp_path):
    import hashlib

    src = tmp_path / "model.safetensors"
    src.write_bytes(b"an html error page, not a checkpoint")
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    result = cli("weights", "import", str(src), "--sha256", digest)
    assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
    text = _text(result)
    assert f"Expected a safetensors file at {src}" in text and "Download it again" in text
    assert ".importing" not in text and _nothing_imported()


def test_a_safetensors_import_must_fit_the_architecture_with_1000_classes(offline_hub,
                                                                          tmp_path):
    ten = tmp_path / "ten.safetensors"
    digest = _safetensors(ten, num_classes=10)
    result = cli("weights", "import", str(ten), "--sha256", digest)
    assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
    text = _text(result)
    assert "got a 10-class classifier (fc.weight [10, 512])" in text
    assert f"Use the file as it is: --weights {ten} --arch resnet18" in text
    good = tmp_path / "good.safetensors"
    digest = _safetensors(good)
    wrong_arch = cli("weights", "import", str(good), "--arch", "resnet34", "--sha256", digest)
    assert wrong_arch.exit_code == 2
    assert "not resnet34's; it fits resnet18" in _text(wrong_arch)
    assert f"--weights {good} --arch resnet18" in _text(wrong_arch)
    assert _nothing_imported()
    assert not weights_mod().imported_path("resnet34").parent.exists() or \
        not any(weights_mod().imported_path("resnet34").parent.iterdir())


def test_the_torch_free_fit_check_agrees_with_a_strict_load(tmp_path):
    """The header check answers what ``load_state_dict(strict=True)`` into torchvision's
    resnet18 (1000 classes) answers: a good state, a 10-class one, a renamed entry, a missing
    one."""
    import torch
    from torchvision.models import resnet18

    w = weights_mod()
    good = resnet18(weights=None).state_dict()
    renamed = dict(good)
    renamed["fc.w"] = renamed.pop("fc.weight")
    missing = {k: v for k, v in good.items() if k != "layer1.0.conv1.weight"}
    cases = {"good": good, "ten": resnet18(weights=None, num_classes=10).state_dict(),
             "renamed": renamed, "missing": missing}
    for name, state in cases.items():
        shapes = {k: list(v.shape) for k, v in state.items()}
        try:
            resnet18(weights=None).load_state_dict(state, strict=True)
            loads = True
        except RuntimeError:
            loads = False
        assert (w.fit_problem(shapes, "resnet18") is None) == loads == (name == "good"), name
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in good.items()}, str(tmp_path / "g.safetensors"))
    from pipeline.models.safetensors_file import safetensors_shapes

    read = safetensors_shapes(tmp_path / "g.safetensors")
    assert read == {k: list(v.shape) for k, v in good.items()}
    assert torch.Size(read["fc.weight"]) == good["fc.weight"].shape


def test_an_imported_safetensors_stands_in_for_imagenet_under_its_own_identity(
        offline_hub, tmp_path):
    import torch

    from pipeline.models.classifier import load_model
    from pipeline.models.safetensors_file import read_safetensors
    from pipeline.models.sources import weights_identity

    w = weights_mod()
    src = tmp_path / "model.safetensors"
    digest = _safetensors(src)
    result = cli("weights", "import", str(src), "--sha256", f"  {digest.upper()} ")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    dest = w.imported_path("resnet18")
    assert dest.read_bytes() == src.read_bytes()
    assert dest.parent == w.imagenet_cache_path().parent / "imported"
    assert sorted(p.name for p in dest.parent.iterdir()) == [
        "resnet18.safetensors", "resnet18.safetensors.json"]  # no staging copy left behind
    record = w.imported("resnet18")
    assert record is not None and record.sha256 == digest and record.source == str(src)
    assert record.size == src.stat().st_size
    expected_id = f"imported:resnet18.safetensors:sha256={digest}"
    assert weights_identity("imagenet", 0) == weights_identity("auto", 0) == expected_id

    loaded = load_model("imagenet", arch="resnet18")
    assert not loaded.is_random and loaded.weights_id == expected_id != w.IMAGENET_ID
    expected = read_safetensors(src)
    state = loaded.backbone.state_dict()
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    assert loaded.note == (
        f"weights imagenet: the imported safetensors {dest} (SHA-256 {digest[:12]}..., "
        "checked against the hash given on import), not torchvision's published "
        f"{w.IMAGENET_FILE}")
    auto = load_model("auto")
    assert not auto.is_random and auto.weights_id == expected_id
    assert auto.note.startswith("weights auto: the imported safetensors")
    assert offline_hub == [], "a download was tried although an imported file was there"

    status = _text(cli("weights", "status"))
    assert f"imported safetensors: {dest}" in status and digest in status
    assert "use the imported safetensors (resnet18.safetensors), not torchvision's" in status

    # Another file imported in its place replaces it, under another identity.
    other = tmp_path / "other.safetensors"
    other_digest = _safetensors(other, seed=4)
    assert cli("weights", "import", str(other), "--sha256", other_digest).exit_code == 0
    assert dest.read_bytes() == other.read_bytes()
    assert weights_identity("imagenet", 0) == \
        f"imported:resnet18.safetensors:sha256={other_digest}" != expected_id


def test_torchvisions_own_checkpoint_wins_over_an_imported_one(offline_hub, tmp_path):
    import torch
    from torchvision.models import resnet18

    from pipeline.models.classifier import load_model
    from pipeline.models.sources import weights_identity

    w = weights_mod()
    src = tmp_path / "model.safetensors"
    assert cli("weights", "import", str(src), "--sha256", _safetensors(src)).exit_code == 0
    imported_id = weights_identity("imagenet", 0)
    torch.manual_seed(9)
    published_state = resnet18(weights=None).state_dict()
    torch.save(published_state, w.imagenet_cache_path())
    assert weights_identity("imagenet", 0) == weights_identity("auto", 0) == w.IMAGENET_ID
    assert imported_id != w.IMAGENET_ID
    loaded = load_model("imagenet")
    assert loaded.weights_id == w.IMAGENET_ID and loaded.note == ""
    assert torch.equal(loaded.backbone.conv1.weight, published_state["conv1.weight"])
    status = _text(cli("weights", "status"))
    assert "present" in status and "imported safetensors:" in status
    assert "use torchvision's checkpoint (resnet18-f37072fd.pth), not the imported" in status


def test_an_imported_file_changed_since_its_import_is_refused(offline_hub, tmp_path):
    from pipeline.models.classifier import load_model

    w = weights_mod()
    src = tmp_path / "model.safetensors"
    digest = _safetensors(src)
    assert cli("weights", "import", str(src), "--sha256", digest).exit_code == 0
    _safetensors(tmp_path / "swap.safetensors", seed=8)
    w.imported_path("resnet18").write_bytes((tmp_path / "swap.safetensors").read_bytes())
    with pytest.raises(WeightsError, match=r"the file changed since\. Import it again"):
        load_model("imagenet")
    # A file without its record (an import cut short) is not used, and status says so.
    w._record_path("resnet18").unlink()
    assert w.imported("resnet18") is None
    assert "incomplete" in _text(cli("weights", "status"))


def test_a_pth_import_checks_a_given_sha256_too(offline_hub, tmp_path):
    src = tmp_path / "resnet18.pth"
    digest = _fake_checkpoint(src)
    result = cli("weights", "import", str(src), "--sha256", "f" * 64)
    assert result.exit_code == 2
    assert f"given with --sha256 ({'f' * 64}), got {digest}" in _text(result)
    # The hash agrees: on to torchvision's own check, which this stand-in fails.
    agreed = cli("weights", "import", str(src), "--sha256", digest)
    assert agreed.exit_code == 2 and "SHA-256 starting f37072fd" in _text(agreed)


def test_a_run_on_an_imported_file_names_it_and_goes_stale_when_torchvisions_arrives(
        offline_hub, tmp_path):
    import torch
    import zarr
    from torchvision.models import resnet18

    from workflows.config.loading import load_config
    from workflows.runner.store_lifecycle import expected_weights_id

    w = weights_mod()
    src = tmp_path / "model.safetensors"
    digest = _safetensors(src)
    assert cli("weights", "import", str(src), "--sha256", digest).exit_code == 0
    root = tmp_path / "images"
    make_images(root, n=2, broken=False)
    cfg = write_config(tmp_path / "c.toml", root, tmp_path / "runs", methods=("gradient",))
    cfg.write_text(cfg.read_text().replace('weights = "random"', 'weights = "imagenet"'))
    text = _text(run_ok(cfg))
    assert f"weights imagenet: the imported safetensors {w.imported_path()}" in text
    assert "RANDOM WEIGHTS" not in text
    store = zarr.open_group(str(load_config(cfg).run_dir / "store.zarr"), mode="r")
    assert store.attrs["weights_id"] == f"imported:resnet18.safetensors:sha256={digest}"
    assert expected_weights_id(load_config(cfg)) == store.attrs["weights_id"]
    torch.save(resnet18(weights=None).state_dict(), w.imagenet_cache_path())
    assert expected_weights_id(load_config(cfg)) == w.IMAGENET_ID
    status = cli("status", "--config", str(cfg)).output  # type: ignore[attr-defined]
    rows = {line.split()[1]: line.split() for line in status.splitlines()
            if line.startswith("│")}
    assert rows["ingest"][-2] == "done" and rows["predict"][-2] == "stale", status
    assert "predict and the stages after it will be recomputed" in status
