from __future__ import annotations

import pytest
import torch
from torchvision.models import resnet18

from pipeline.attribution.memory_planner import bytes_per_sample, cpu_budget, plan_max_batch


def test_planned_batch_scales_with_budget(model):
    small = plan_max_batch(model, (3, 64, 64), "cpu", budget_bytes=8 << 20)
    large = plan_max_batch(model, (3, 64, 64), "cpu", budget_bytes=64 << 20)
    assert 1 <= small < large


def test_bigger_images_get_smaller_batches(model):
    per32 = bytes_per_sample(model, (3, 32, 32), torch.device("cpu"))
    per64 = bytes_per_sample(model, (3, 64, 64), torch.device("cpu"))
    assert 3.0 < per64 / per32 < 5.0


def test_cpu_budget_from_environment(monkeypatch):
    monkeypatch.setenv("XAI_CPU_MEMORY_BUDGET", "512M")
    assert cpu_budget() == 512 << 20
    monkeypatch.setenv("XAI_CPU_MEMORY_BUDGET", "2G")
    assert cpu_budget() == 2 << 30


def test_measure_pass_size_times_every_candidate_and_picks_the_cheapest(monkeypatch):
    import time

    import pipeline.attribution.memory_planner as planner

    sizes = []

    def run_pass(size):  # 8 samples cost less per sample than 4 here
        sizes.append(size)
        time.sleep(0.004 * (4 if size == 4 else 2))

    best, seconds = planner.measure_pass_size(run_pass, (4, 8), rounds=2)
    assert sizes == [4, 4, 8, 4, 8]  # a warm-up, then interleaved rounds
    assert set(seconds) == {4, 8} and best == 8
    from workflows.runner.worker import _ig_pass

    model = resnet18(num_classes=4).eval()
    out = _ig_pass(model, (3, 32, 32), torch.device("cpu"))(4)
    assert out.shape == (1, 3, 32, 32)


def test_the_timed_pass_size_is_recorded_once_per_model_and_machine(tmp_path, monkeypatch):
    from workflows.runner import worker

    monkeypatch.setenv("XAI_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("XAI_CPU_MEMORY_BUDGET", raising=False)
    calls = []

    def fake_measure(run_pass, candidates, **_kw):
        calls.append(candidates)
        return candidates[1], {c: 1.0 / c for c in candidates}

    monkeypatch.setattr("pipeline.attribution.memory_planner.measure_pass_size", fake_measure)
    spec = worker.ModelSpec(weights="random", weights_id="random:seed=0", head="softmax",
                            seed=0, device="cpu", precision="fp32", channels_last=True,
                            fuse_bn=False, compile=False, max_batch=0, crop=32)
    model = resnet18(num_classes=4).eval()
    import torch

    first, how = worker.planned_pass(spec, model, torch.device("cpu"))
    again, how_again = worker.planned_pass(spec, model, torch.device("cpu"))
    assert len(calls) == 1 and first == again == calls[0][1]
    assert "recorded in" in how and "timed, from" in how_again
    records = list((tmp_path / "passes").glob("*.json"))
    assert len(records) == 1 and '"max_batch"' in records[0].read_text()
    assert records[0].name.startswith("resnet18-")
    monkeypatch.setenv("XAI_CPU_MEMORY_BUDGET", "64M")  # a budget set: memory decides
    assert worker.planned_pass(spec, model, torch.device("cpu"))[1] == "planned from memory"


def test_the_recorded_pass_size_is_named_after_the_model_the_weights_hold(tmp_path,
                                                                          monkeypatch):
    """A Hugging Face folder overrides ``[model] arch``: its record is named after its class,
    not the config's resnet18."""
    pytest.importorskip("transformers")
    from tests.models.sources.hf_tiny import save_tiny
    from workflows.runner import worker

    monkeypatch.setenv("XAI_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("XAI_CPU_MEMORY_BUDGET", raising=False)
    monkeypatch.setattr("pipeline.attribution.memory_planner.measure_pass_size",
                        lambda run_pass, candidates, **_kw: (candidates[0], {
                            c: 1.0 for c in candidates}))
    folder = save_tiny("vit", tmp_path / "tiny-vit")
    spec = worker.ModelSpec(weights=str(folder), weights_id="hf", head="softmax", seed=0,
                            device="cpu", precision="fp32", channels_last=True,
                            fuse_bn=False, compile=False, max_batch=0, crop=32)
    worker.planned_pass(spec, resnet18(num_classes=4).eval(), torch.device("cpu"))
    names = [p.name for p in (tmp_path / "cache" / "passes").glob("*.json")]
    assert len(names) == 1 and names[0].startswith("hf-ViTForImageClassification-"), names
