"""An evaluation summary for the report's tests: three methods, two metrics, the
randomisation curves."""

from __future__ import annotations


def _stat(mean: float | None, half: float = 0.01, n: int = 6) -> dict:
    if mean is None:
        return {"mean": None, "low": None, "high": None, "n": 0}
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


def _curve(*means: float) -> dict:
    groups = ["fc", "layer4", "layer3", "layer2", "layer1+conv1+bn1"]
    return {g: _stat(m, 0.05) for g, m in zip(groups, means, strict=False)}


EVALUATION = {
    "metrics": {
        "deletion": {"better": "lower", "description": "AUC as pixels are removed",
                     "methods": {"gradient": _stat(0.30), "custom_gradient": _stat(0.20),
                                 "integrated_gradients": _stat(0.25)},
                     "random": _stat(0.31, 0.02)},
        "sparseness": {"better": "higher", "description": "Gini index",
                       "methods": {"gradient": _stat(0.40), "custom_gradient": _stat(0.60),
                                   "integrated_gradients": _stat(None)},
                       "random": _stat(0.35)},
    },
    "randomisation": {"gradient": _curve(0.64, 0.6, 0.55, 0.52, 0.51),
                      "custom_gradient": _curve(-0.8, 0.6, 0.2, 0.1, 0.0),
                      "integrated_gradients": _curve(-0.10, 0.0, 0.0, 0.0, 0.0)},
    "notes": [],
}

SIGNS = {"gradient": "absolute", "custom_gradient": "signed", "integrated_gradients": "signed"}

