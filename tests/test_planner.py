from __future__ import annotations

import torch

from pipeline.planner import bytes_per_sample, cpu_budget, plan_max_batch


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
