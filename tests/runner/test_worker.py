"""The worker's model cache: one model per frozen spec and device, so two runs that differ in
anything (the precision too) never share a model on a persistent worker."""

from __future__ import annotations

import dataclasses

import pytest

from workflows.runner import worker


def _spec(**kw: object) -> worker.ModelSpec:
    base = dict(weights="random", weights_id="random:seed=0", head="softmax", seed=0,
                device="cpu", precision="fp32", channels_last=False, fuse_bn=False,
                compile=False, max_batch=4, crop=32)
    return worker.ModelSpec(**{**base, **kw})  # type: ignore[arg-type]


@pytest.fixture()
def empty_cache(monkeypatch):
    monkeypatch.setattr(worker, "_MODELS", {})


def test_a_precision_change_builds_its_own_wrapped_model(empty_cache, monkeypatch):
    """fp32 then fp32-fwd on one worker: the second must be wrapped for fp32-fwd, not the
    cached fp32 model (as a cache keyed without the precision would return)."""
    import pipeline.attribution.accel as accel

    def wrap(model, mode, device):  # what for_precision does on CUDA, on any device
        return ("wrapped", model) if mode == "fp32-fwd" else model

    monkeypatch.setattr(accel, "for_precision", wrap)
    strict = worker.model_for(_spec())
    forward = worker.model_for(_spec(precision="fp32-fwd"))
    assert forward is not strict
    assert forward.model[0] == "wrapped" and strict.model is not forward.model
    assert worker.model_for(_spec()) is strict, "the same spec is cached"


def test_every_field_of_the_spec_keys_the_cache(empty_cache):
    spec = _spec()
    hash(spec)  # frozen and hashable: it is the key
    first = worker.model_for(spec)
    for field, value in (("max_batch", 2), ("head", "logits"), ("channels_last", True)):
        other = dataclasses.replace(spec, **{field: value})
        assert worker.model_for(other) is not first, field
