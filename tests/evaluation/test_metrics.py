"""Attribution-quality metrics: exact answers on hand-made maps, and agreement with Quantus 0.6."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.attribution.baselines import make_baseline
from pipeline.data.images import black_baseline, denormalize, normalize
from pipeline.evaluation import metrics as M

# Quantus 0.6's sources have invalid escape sequences in docstrings (seen on first import).
pytestmark = pytest.mark.filterwarnings("ignore:invalid escape sequence:DeprecationWarning")
ROOT = Path(__file__).resolve().parents[2]
NAN = float("nan")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: one intra-op thread. With two, every small op waits for the other
    thread, which takes ~10 ms instead of ~0.05 ms when another process holds a core."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def square(n: int = 1, size: int = 6, lo: int = 1, hi: int = 3) -> np.ndarray:
    """``(n, size, size)`` bool masks, True on ``[lo:hi, lo:hi]``."""
    mask = np.zeros((n, size, size), bool)
    mask[:, lo:hi, lo:hi] = True
    return mask


# -------------------------------------------------------------------------- registry


def test_registry_names_and_flags():
    assert set(M.METRICS) == {"deletion", "insertion", "relevance_mass_accuracy",
                              "relevance_rank_accuracy", "pointing_game", "sparseness"}
    flags = {name: (s.higher_is_better, s.needs_mask, s.needs_model, s.curve)
             for name, s in M.METRICS.items()}
    assert flags["deletion"] == (False, False, True, True)
    assert flags["insertion"] == (True, False, True, True)
    for name in ("relevance_mass_accuracy", "relevance_rank_accuracy", "pointing_game"):
        assert flags[name] == (True, True, False, False)
    assert flags["sparseness"] == (True, False, False, False)
    assert M.get_metric("pointing_game").fn is M.pointing_game
    with pytest.raises(KeyError, match="sparseness"):
        M.get_metric("sparsity")


def test_importing_the_metrics_does_not_import_torch():
    code = ("import sys, pipeline.evaluation.metrics; "
            "print(sorted(m for m in ('torch', 'torchvision', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "[]", out


# --------------------------------------------------------------- localisation: exact


def test_a_map_exactly_on_the_mask_scores_one_everywhere():
    mask = square()
    attr = mask.astype(np.float32)
    for fn in (M.relevance_mass_accuracy, M.relevance_rank_accuracy, M.pointing_game):
        np.testing.assert_array_equal(fn(attr, mask), [1.0])


def test_mass_accuracy_clips_negative_attribution():
    mask = square()
    attr = np.where(mask, 1.0, -5.0)  # all positive mass inside
    np.testing.assert_array_equal(M.relevance_mass_accuracy(attr, mask), [1.0])
    attr = np.where(mask, 1.0, 0.0)
    attr[0, 5, 5] = 3.0  # 4 inside, 3 outside
    np.testing.assert_allclose(M.relevance_mass_accuracy(attr, mask), [4 / 7])
    # No positive attribution: undefined.
    assert np.isnan(M.relevance_mass_accuracy(-np.ones((1, 6, 6)), mask)[0])


def test_rank_accuracy_counts_the_top_k_and_breaks_ties_by_flat_index():
    mask = square()  # K = 4: (1,1) (1,2) (2,1) (2,2)
    attr = np.zeros((1, 6, 6))
    attr[0, 1, 1], attr[0, 5, 5], attr[0, 4, 0] = 3.0, 2.0, 1.0  # ranks 1, 2, 3
    # Top 4: (1,1) in, (5,5) out, (4,0) out, then the first zero in row-major order, (0,0).
    np.testing.assert_array_equal(M.relevance_rank_accuracy(attr, mask), [0.25])
    # All tied: the top K are the first K pixels in row-major order, (0,0)..(0,3): none in.
    np.testing.assert_array_equal(M.relevance_rank_accuracy(np.zeros((1, 6, 6)), mask), [0.0])
    first_row = np.zeros((1, 6, 6), bool)
    first_row[0, 0, 1:5] = True
    np.testing.assert_array_equal(M.relevance_rank_accuracy(np.zeros((1, 6, 6)), first_row),
                                  [0.75])


def test_rank_accuracy_matches_a_reference_with_ties():
    rng = np.random.default_rng(5)
    attr = rng.integers(0, 3, (6, 6, 6)).astype(float)
    masks = rng.random((6, 6, 6)) < 0.3
    expected = [m.ravel()[morf_order(a)[:m.sum()]].mean() for a, m in zip(attr, masks,
                                                                           strict=True)]
    np.testing.assert_allclose(M.relevance_rank_accuracy(attr, masks), expected, atol=1e-15)


def test_pointing_game_hits_and_misses():
    mask = square(2)
    attr = np.zeros((2, 6, 6))
    attr[0, 2, 2] = 1.0  # max inside
    attr[1, 2, 2], attr[1, 0, 5] = 1.0, 1.5  # max outside
    np.testing.assert_array_equal(M.pointing_game(attr, mask), [1.0, 0.0])
    attr[1, 2, 2] = 1.5  # a tie for the max, one of them inside: a hit (as Quantus)
    np.testing.assert_array_equal(M.pointing_game(attr, mask), [1.0, 1.0])


def test_empty_masks_and_nan_rows_give_nan():
    mask = square(3)
    mask[1] = False
    attr = np.random.default_rng(0).random((3, 6, 6))
    attr[2] = np.nan
    for fn in (M.relevance_mass_accuracy, M.relevance_rank_accuracy, M.pointing_game):
        out = fn(attr, mask)
        assert np.isfinite(out[0]) and np.isnan(out[1]) and np.isnan(out[2]), fn.__name__
    out = M.sparseness(attr)
    assert np.isfinite(out[:2]).all() and np.isnan(out[2])
    with pytest.raises(ValueError, match="mask"):
        M.pointing_game(attr, mask[:, :5])


# ------------------------------------------------------------------ sparseness: exact


def test_sparseness_is_the_gini_index_of_abs():
    n = 36
    one_hot = np.zeros((1, 6, 6))
    one_hot[0, 3, 4] = -2.0
    np.testing.assert_allclose(M.sparseness(one_hot), [(n - 1) / n], rtol=0, atol=1e-15)
    np.testing.assert_allclose(M.sparseness(np.full((1, 6, 6), -0.3)), [0.0], atol=1e-15)
    # |a| sorted = [0, 0, 1, 3], weights 2i - n - 1 = [-3, -1, 1, 3]: (1 + 9) / (4 * 4).
    small = np.array([[[-3.0, 0.0], [1.0, 0.0]]])
    np.testing.assert_allclose(M.sparseness(small), [10 / 16], rtol=0, atol=1e-15)
    assert np.isnan(M.sparseness(np.zeros((1, 2, 2)))[0])


# ------------------------------------------------------------------ pixel flipping: exact


class WeightedSum(nn.Module):
    """"Probabilities" ``[p, 1 - p]`` with ``p = sum(w * mean_c(x)) / sum(w)``: a fixed linear
    function of the pixels, so every point of a flipping curve is known exactly."""

    def __init__(self, weights: torch.Tensor) -> None:
        super().__init__()
        self.weights = weights.double() / weights.double().sum()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = (x.double().mean(1) * self.weights).sum((1, 2))
        return torch.stack([p, 1 - p], 1)


def test_flip_counts_round_half_up():
    np.testing.assert_array_equal(M.flip_counts(16, 4), [0, 4, 8, 12, 16])
    np.testing.assert_array_equal(M.flip_counts(16, 3), [0, 5, 11, 16])
    np.testing.assert_array_equal(M.flip_counts(10, 4), [0, 3, 5, 8, 10])


@pytest.mark.parametrize("steps", [4, 3])
def test_pixel_flipping_curves_of_a_linear_model_are_exact(steps):
    order = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    weights = torch.arange(1.0, 17.0, dtype=torch.float64)[order].view(4, 4)  # sum 136
    images = torch.ones(2, 3, 4, 4)  # normalized; the "mean" baseline is 0
    attr = weights.numpy()[None].repeat(2, 0)
    targets = torch.tensor([0, 1])
    top = np.concatenate([[0.0], np.cumsum(np.arange(16.0, 0.0, -1.0))]) / 136.0
    removed = top[M.flip_counts(16, steps)]  # weight of the flipped pixels after each step
    dele = M.pixel_flipping(WeightedSum(weights), images, attr, targets, steps=steps,
                            mode="deletion", baseline="mean")
    np.testing.assert_allclose(dele, np.stack([1 - removed, removed]), rtol=0, atol=1e-12)
    ins = M.pixel_flipping(WeightedSum(weights), images, attr, targets, steps=steps,
                           mode="insertion", baseline="mean")
    np.testing.assert_allclose(ins, np.stack([removed, 1 - removed]), rtol=0, atol=1e-12)


def morf_order(amap: np.ndarray) -> list[int]:
    """Flat pixel indices by attribution, highest first, ties by lower flat index."""
    flat = amap.ravel()
    return sorted(range(flat.size), key=lambda i: (-flat[i], i))


def test_pixel_flipping_goes_in_morf_order_with_ties_by_flat_index():
    class Probe(nn.Module):  # "class" j is the value of pixel j (first channel)
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, 0].flatten(1)

    amap = np.random.default_rng(3).integers(0, 3, (4, 4)).astype(float)  # many ties
    images, attr = torch.ones(16, 3, 4, 4), amap[None].repeat(16, 0)
    curves = M.pixel_flipping(Probe(), images, attr, torch.arange(16), steps=16,
                              baseline="mean")
    gone_at = (curves == 0).argmax(1)  # the step at which pixel j was removed
    expected = np.empty(16, int)
    expected[morf_order(amap)] = np.arange(1, 17)
    np.testing.assert_array_equal(gone_at, expected)
    revealed = M.pixel_flipping(Probe(), images, attr, torch.arange(16), steps=16,
                                mode="insertion", baseline="mean")
    np.testing.assert_array_equal((revealed == 1).argmax(1), expected)


class TinyNet(nn.Module):
    """A seeded 5-class CNN with named layers (logits)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
            self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
            self.fc = nn.Linear(64, 5)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(nn.functional.adaptive_avg_pool2d(h, 4).flatten(1))


@pytest.fixture(scope="module")
def net() -> TinyNet:
    return TinyNet()


def softmax_of(model: nn.Module):
    return lambda x: torch.softmax(model(x), -1)


def seeded_images(n: int, size: int, seed: int = 1) -> torch.Tensor:
    return normalize(torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)))


@pytest.mark.parametrize("baseline", ["black", "blur"])
def test_pixel_flipping_ends_at_the_baseline_and_the_image(net, baseline):
    images = seeded_images(3, 8)
    params = {"baseline_sigma": 2.0}
    attr = M.random_attribution((3, 8, 8), seed=3)
    targets = torch.tensor([0, 3, 4])
    fwd = softmax_of(net)
    rows = torch.arange(3)
    with torch.no_grad():
        at_image = fwd(images)[rows, targets].double().numpy()
        at_base = fwd(make_baseline(baseline, images, params))[rows, targets].double().numpy()
    dele = M.pixel_flipping(fwd, images, attr, targets, steps=5, baseline=baseline,
                            baseline_params=params)
    ins = M.pixel_flipping(fwd, images, attr, targets, steps=5, mode="insertion",
                           baseline=baseline, baseline_params=params)
    np.testing.assert_allclose(dele[:, 0], at_image, atol=1e-7, rtol=0)
    np.testing.assert_allclose(dele[:, -1], at_base, atol=1e-7, rtol=0)
    np.testing.assert_allclose(ins[:, 0], at_base, atol=1e-7, rtol=0)
    np.testing.assert_allclose(ins[:, -1], at_image, atol=1e-7, rtol=0)
    assert not np.allclose(dele[:, 2], ins[:, 2])  # the middle differs


def test_pixel_flipping_batches_and_skips_nan_rows(net):
    images = seeded_images(3, 8)
    attr = M.random_attribution((3, 8, 8), seed=4)
    targets = torch.tensor([1, 2, 3])
    sizes: list[int] = []

    def fwd(x: torch.Tensor) -> torch.Tensor:
        sizes.append(x.shape[0])
        return torch.softmax(net(x), -1)

    one = M.pixel_flipping(fwd, images, attr, targets, steps=6, max_batch=1)
    assert sizes == [1] * 21
    sizes.clear()
    many = M.pixel_flipping(fwd, images, attr, targets, steps=6, max_batch=1000)
    assert sizes == [21]  # every (image, step) input in one pass
    np.testing.assert_allclose(one, many, atol=1e-6, rtol=0)
    sizes.clear()
    attr[1] = np.nan
    skipped = M.pixel_flipping(fwd, images, attr, targets, steps=6, max_batch=8)
    assert sizes == [8, 6]  # the NaN row is not run
    assert np.isnan(skipped[1]).all()
    np.testing.assert_allclose(skipped[[0, 2]], many[[0, 2]], atol=1e-6, rtol=0)


def test_pixel_flipping_rejects_bad_arguments(net):
    images, attr = seeded_images(1, 4), np.zeros((1, 4, 4))
    for kwargs in ({"mode": "morf"}, {"baseline": "uniform"}):
        with pytest.raises(ValueError):
            M.pixel_flipping(softmax_of(net), images, attr, torch.tensor([0]), **kwargs)
    with pytest.raises(ValueError, match="shaped"):
        M.pixel_flipping(softmax_of(net), images, np.zeros((1, 4, 5)), torch.tensor([0]))


def test_deletion_and_insertion_entries_return_auc_and_curves(net):
    images, attr = seeded_images(2, 6), M.random_attribution((2, 6, 6), seed=5)
    targets = torch.tensor([0, 1])
    for name in ("deletion", "insertion"):
        scores, curves = M.METRICS[name].fn(softmax_of(net), images, attr, targets, steps=4)
        assert curves.shape == (2, 5)
        np.testing.assert_array_equal(scores, M.auc(curves))
        np.testing.assert_array_equal(
            curves, M.pixel_flipping(softmax_of(net), images, attr, targets, steps=4, mode=name))


# ------------------------------------------------------------------------------ auc


def test_auc_is_the_trapezoid_on_the_unit_interval():
    curves = [[0.3] * 5, [0.0, 0.5, 1.0], [1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0]]
    expected = [0.3, 0.5, 0.5, 0.75, 0.25]  # the last: a triangle of base 0.5, height 1
    for curve, area in zip(curves, expected, strict=True):
        np.testing.assert_allclose(M.auc(np.array([curve])), [area], rtol=0, atol=1e-15)
    np.testing.assert_allclose(M.auc(np.array([[0.3] * 5, [0.0, 0.25, 0.5, 0.75, 1.0]])),
                               [0.3, 0.5], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(np.isnan(M.auc(np.array([[NAN, NAN], [1.0, 1.0]]))),
                                  [True, False])


# --------------------------------------------------------------- random row, spearman


def test_random_attribution_is_seeded_uniform_noise():
    a = M.random_attribution((2, 5, 7), seed=1)
    assert a.dtype == np.float32 and a.shape == (2, 5, 7)
    assert a.min() >= 0.0 and a.max() < 1.0 and a.std() > 0.2
    np.testing.assert_array_equal(a, M.random_attribution((2, 5, 7), seed=1))
    assert not np.array_equal(a, M.random_attribution((2, 5, 7), seed=2))


def test_spearman_matches_scipy_with_ties():
    from scipy.stats import rankdata, spearmanr

    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, (3, 5, 6)).astype(float)  # many ties
    b = a + rng.integers(0, 3, (3, 5, 6))
    expected = [spearmanr(x.ravel(), y.ravel()).statistic for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(M.spearman(a, b), expected, atol=1e-12, rtol=0)
    np.testing.assert_array_equal(M.average_ranks(a.reshape(3, -1)),
                                  rankdata(a.reshape(3, -1), axis=1))
    np.testing.assert_allclose(M.spearman(a, a), [1.0] * 3, atol=1e-12)
    np.testing.assert_allclose(M.spearman(a, -a), [-1.0] * 3, atol=1e-12)
    a[1], b[2] = NAN, 1.0  # a NaN row, a constant row
    out = M.spearman(a, b)
    assert np.isfinite(out[0]) and np.isnan(out[1:]).all()


# ------------------------------------------------------------- cascading randomisation


def gradient_maps(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    x = images.clone().requires_grad_(True)
    out = model(x)
    out[torch.arange(len(x)), targets].sum().backward()
    return x.grad.sum(1).numpy()


def test_cascading_randomisation_is_cascading_seeded_and_leaves_the_model(net):
    images, targets = seeded_images(3, 8), torch.tensor([0, 1, 2])
    before = {k: v.clone() for k, v in net.state_dict().items()}
    seen: list[dict[str, torch.Tensor]] = []

    def explain(model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> np.ndarray:
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return gradient_maps(model, x, t)

    groups = [["fc"], ["conv2"], ["conv1"]]
    rho = M.cascading_randomisation(net, groups, explain, images, targets, seed=7)
    assert rho.shape == (3, 3) and np.isfinite(rho).all()
    assert (rho[-1] < 0.9).all()  # everything random: the maps have changed
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    orig, after_fc, after_conv2, after_conv1 = seen
    assert not torch.equal(after_fc["fc.weight"], orig["fc.weight"])
    assert torch.equal(after_fc["conv2.weight"], orig["conv2.weight"])
    assert torch.equal(after_conv2["fc.weight"], after_fc["fc.weight"])  # stays randomised
    assert not torch.equal(after_conv2["conv2.weight"], orig["conv2.weight"])
    assert torch.equal(after_conv2["conv1.weight"], orig["conv1.weight"])
    assert not torch.equal(after_conv1["conv1.bias"], orig["conv1.bias"])
    for name in ("fc.weight", "conv2.weight"):  # the scale is kept
        ratio = float(after_conv1[name].std() / orig[name].std())
        assert 0.8 < ratio < 1.25, (name, ratio)
    again = M.cascading_randomisation(net, groups, gradient_maps, images, targets, seed=7)
    np.testing.assert_array_equal(rho, again)
    other = M.cascading_randomisation(net, groups, gradient_maps, images, targets, seed=8)
    assert not np.array_equal(rho, other)


def test_cascading_randomisation_only_touches_the_named_group(net):
    images, targets = seeded_images(2, 8), torch.tensor([0, 1])

    def conv1_maps(model: nn.Module, x: torch.Tensor, _t: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return model.conv1(x).sum(1).numpy()  # does not depend on fc

    rho = M.cascading_randomisation(net, [["fc"], ["conv1"]], conv1_maps, images, targets, 0)
    np.testing.assert_array_equal(rho[0], [1.0, 1.0])
    assert (rho[1] < 0.9).all()
    with pytest.raises(KeyError, match="layer9"):
        M.cascading_randomisation(net, [["layer9"]], conv1_maps, images, targets, 0)


def test_resnet_layer_groups_cover_resnet18_once():
    from torchvision.models import resnet18

    names = [n for n, _ in resnet18(num_classes=10).named_parameters()]
    prefixes = [p for group in M.RESNET_LAYER_GROUPS for p in group]
    owners = {n: [p for p in prefixes if n.startswith(p + ".")] for n in names}
    assert all(len(o) == 1 for o in owners.values()), owners
    assert M.RESNET_LAYER_GROUPS[0] == ("fc",)


# ------------------------------------------------------------- agreement with Quantus 0.6

Q_KW = {"disable_warnings": True, "normalise": False, "abs": False}


@pytest.fixture(scope="module")
def qdata(net):
    """4 images 3x24x24, seeded signed maps, rectangle masks: two contain the map's maximum,
    two do not (so the pointing game is not trivially constant)."""
    images = seeded_images(4, 24, seed=11)
    attr = np.random.default_rng(12).standard_normal((4, 24, 24)).astype(np.float32)
    masks = np.zeros((4, 24, 24), bool)
    rng = np.random.default_rng(13)
    for i in range(4):
        y, x = np.unravel_index(np.argmax(attr[i]), attr[i].shape)
        for _ in range(1000):
            y0, x0 = rng.integers(0, 16, 2)
            h, w = rng.integers(4, 9, 2)
            inside = y0 <= y < y0 + h and x0 <= x < x0 + w
            if inside == (i < 2):
                break
        masks[i, y0:y0 + h, x0:x0 + w] = True
    targets = np.array([0, 1, 2, 4])
    return images, attr, masks, targets


def test_localisation_and_sparseness_agree_with_quantus(net, qdata):
    """Quantus's RelevanceMassAccuracy, RelevanceRankAccuracy, PointingGame and Sparseness
    with ``normalise=False`` (Quantus divides by the max by default; the mass and rank metrics
    and Gini are scale-invariant anyway) and ``abs=False`` (``abs=True`` for Sparseness, whose
    definition uses ``|a|``). Differences, and how the inputs are adapted:

    - mass accuracy: ours clips negative attribution to 0, Quantus uses the signed values, so
      Quantus gets the clipped maps (the same definition on non-negative maps);
    - rank accuracy: ours breaks ties by flat index, Quantus by numpy's unstable sort; the
      Gaussian maps have no ties;
    - sparseness: Quantus adds 1e-7 to ``|a|`` before the Gini index, a ~1e-7 shift here;
    - pointing game: Quantus returns bools (and True for an empty mask); masks are non-empty.
    """
    import quantus

    images, attr, masks, targets = qdata
    common = {"model": net, "x_batch": images.numpy(), "y_batch": targets,
              "s_batch": masks[:, None], "device": "cpu"}
    clipped = np.clip(attr, 0, None)[:, None]
    pairs = [
        (quantus.RelevanceMassAccuracy(**Q_KW)(a_batch=clipped, **common),
         M.relevance_mass_accuracy(attr, masks)),
        (quantus.RelevanceRankAccuracy(**Q_KW)(a_batch=attr[:, None].copy(), **common),
         M.relevance_rank_accuracy(attr, masks)),
        (quantus.PointingGame(**Q_KW)(a_batch=attr[:, None].copy(), **common),
         M.pointing_game(attr, masks)),
        (quantus.Sparseness(**{**Q_KW, "abs": True})(a_batch=attr[:, None].copy(), **common),
         M.sparseness(attr)),
    ]
    for theirs, ours in pairs:
        np.testing.assert_allclose(ours, np.asarray(theirs, dtype=float), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(M.pointing_game(attr, masks), [1, 1, 0, 0])
    # The clipping matters: on the signed maps Quantus's mass accuracy is another number.
    signed = quantus.RelevanceMassAccuracy(**Q_KW)(a_batch=attr[:, None].copy(), **common)
    assert np.abs(np.asarray(signed) - M.relevance_mass_accuracy(attr, masks)).max() > 0.01


def test_pixel_flipping_agrees_with_quantus_mean_baseline(net, qdata):
    """quantus.PixelFlipping against our deletion curve with the ``mean`` baseline (0 in the
    normalized space the model reads), 12 steps of 48 pixels.

    Matched settings: ``perturb_baseline=0.0`` (Quantus's ``"black"`` means the image's
    minimum value, not a colour), ``normalise=False``, ``abs=False``, ``softmax=True`` on the
    logit model (ours: the softmax of the same logits). Quantus flips *features* (channel
    values) ranked by the map broadcast over channels; ``features_in_step = 3 * 48`` therefore
    flips the 48 next pixels in all three channels, like one of our steps, whenever no two
    pixels tie (Gaussian maps). Quantus asserts ``features_in_step`` divides ``H * W`` (not
    ``3 * H * W``), so the number of steps must be a multiple of 3. Quantus's curve omits the
    unperturbed point, our step 0: compare ``ours[:, 1:]``.
    """
    import quantus

    images, attr, _, targets = qdata
    steps = 12
    ours = M.pixel_flipping(softmax_of(net), images, attr, torch.as_tensor(targets),
                            steps=steps, baseline="mean")
    theirs = quantus.PixelFlipping(features_in_step=3 * 24 * 24 // steps, perturb_baseline=0.0,
                                   **Q_KW)(model=net, x_batch=images.numpy(), y_batch=targets,
                                           a_batch=attr[:, None].copy(), device="cpu",
                                           softmax=True)
    theirs = np.asarray(theirs)
    assert theirs.shape == (4, steps)
    np.testing.assert_allclose(ours[:, 1:], theirs, atol=1e-5, rtol=0)
    assert np.ptp(theirs, axis=1).min() > 1e-3  # the curves move: the comparison means something


class Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return normalize(x)


def test_pixel_flipping_agrees_with_quantus_black_baseline_pixel_by_pixel(net, qdata):
    """Our ``black`` baseline is ``-mean / std`` per channel in normalized space; Quantus
    replaces features with one scalar. So Quantus gets the images in pixel space
    (``denormalize``) and the model behind a :func:`normalize` layer, where black is the
    scalar 0.0. One pixel (3 features) per step, ``H * W`` steps: the full curve.
    """
    import quantus

    images, attr, _, targets = qdata
    ours = M.pixel_flipping(softmax_of(net), images, attr, torch.as_tensor(targets),
                            steps=24 * 24, baseline="black", max_batch=512)
    pixel_model = nn.Sequential(Normalize(), net).eval()
    theirs = quantus.PixelFlipping(features_in_step=3, perturb_baseline=0.0, **Q_KW)(
        model=pixel_model, x_batch=denormalize(images).numpy(), y_batch=targets,
        a_batch=attr[:, None].copy(), device="cpu", softmax=True)
    np.testing.assert_allclose(ours[:, 1:], np.asarray(theirs), atol=1e-5, rtol=0)
    with torch.no_grad():
        at_black = torch.softmax(net(black_baseline(images)), -1)[torch.arange(4), targets]
    np.testing.assert_allclose(np.asarray(theirs)[:, -1], at_black.numpy(), atol=1e-6)
