"""The comparison's known answer, end to end: ``python -m workflows.commands.shortcut_case``
(``make shortcut-compare``).

On the shortcut data set's test images (``configs/shortcut-compare.toml``): run B explains
the evidence model trained with the shortcut; run A the same model trained on clean images
(the evidence model of the same settings without the shortcut, loaded as a weights file);
run A-reinit a copy of A with its classifier layer re-initialised (seeded). Then
``xai compare`` A against B, A against A-reinit and A against itself, and, per method, the
shortcut class's rank and significance and the watermark's share of the positive part of
its mean difference map (B - A) over its share of the image. Writes
``<out>/shortcut-compare.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "shortcut-compare.toml"


def _xai(*args: str) -> None:
    cmd = [sys.executable, "-m", "workflows", *args]
    print("$ xai " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def clean_weights(out: Path) -> tuple[Path, Path, Path]:
    """Train (or take from the cache) the clean model of the config's settings; write its
    state dict, the re-initialised copy and the class names file under ``out``."""
    import torch

    from pipeline.data.evidence_dataset import SHAPES
    from pipeline.models.sources.evidence_training import load_evidence_model
    from workflows.config.loading import load_config

    cfg = load_config(CONFIG, [], out=out)
    settings = dataclasses.replace(cfg.evidence_settings(), shortcut_label=-1)
    net, report = load_evidence_model(settings, notify=print)
    print(f"clean model: accuracy {report.get('accuracy')}")
    out.mkdir(parents=True, exist_ok=True)
    clean = out / "clean-model.pth"
    state = {k: v.clone() for k, v in net.state_dict().items()}
    torch.save(state, clean)
    gen = torch.Generator().manual_seed(1)
    fc = torch.nn.Linear(state["fc.weight"].shape[1], state["fc.weight"].shape[0])
    bound = 1 / np.sqrt(fc.in_features)
    state["fc.weight"] = (torch.rand(fc.weight.shape, generator=gen) * 2 - 1) * bound
    state["fc.bias"] = (torch.rand(fc.bias.shape, generator=gen) * 2 - 1) * bound
    reinit = out / "clean-model-fc-reinit.pth"
    torch.save(state, reinit)
    classes = out / "shapes.txt"
    classes.write_text("\n".join(SHAPES) + "\n")
    return clean, reinit, classes


def watermark_ratio(store: Path, method: str, shortcut: str, size: int) -> dict[str, float]:
    """The positive part of the shortcut class's mean difference map (B - A, classes by
    label): its mass in the watermark box over its total, and that over the box's share of
    the image."""
    import xarray as xr

    from pipeline.data.evidence_dataset import watermark_box

    ds = xr.open_zarr(str(store), consolidated=False)
    diff = ds["label_mean_diff"].sel(explainer=method, **{"class": shortcut}).values
    pos = np.clip(np.nan_to_num(diff), 0, None)
    x0, y0, x1, y1 = watermark_box(size)
    box = np.zeros_like(pos, dtype=bool)
    box[y0:y1, x0:x1] = True
    share = float(pos[box].sum() / max(pos.sum(), 1e-30))
    area = float(box.mean())
    return {"mass_share": share, "area_share": area, "ratio": share / area}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "shortcut-compare")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    clean, reinit, classes = clean_weights(out)
    base = ["run", "--config", str(CONFIG), "--out", str(out)]
    _xai(*base, "--name", "B")
    for name, weights in (("A", clean), ("A-reinit", reinit)):
        _xai(*base, "--name", name, "--classes", str(classes), "--set",
             f'model.weights="{weights}"')
    results: dict[str, Any] = {}
    for name, other in (("A-vs-B", "B"), ("A-vs-A-reinit", "A-reinit"), ("A-vs-A", "A")):
        target = out / f"compare-{name}"
        _xai("compare", str(out / "A"), str(out / other), "--out", str(target))
        results[name] = json.loads((target / "comparison.json").read_text())["classes"]
    ratios = {m: watermark_ratio(out / "compare-A-vs-B" / "compare.zarr", m, "circle", 112)
              for m in ("gradient", "integrated_gradients", "grad_cam")}
    (out / "shortcut-compare.json").write_text(json.dumps(
        {"classes": results, "watermark": ratios}, indent=2))
    for m, r in ratios.items():
        label = results["A-vs-B"]["label"][m]
        first = label[0]
        print(f"{m}: first class by label {first['class']} (score {first['score']}, p "
              f"{first['p_value']}, adjusted {first['p_adjusted']}); watermark mass "
              f"{r['mass_share']:.3f} of the positive difference, {r['ratio']:.1f}x its "
              f"area share {r['area_share']:.4f}")


if __name__ == "__main__":
    main()
