from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients

from pipeline.attribution.gradient import predicted_class
from pipeline.custom_explainers import get_custom_gradient
from pipeline.data.images import IMAGENET_MEAN, IMAGENET_STD
from pipeline.explainers import (
    aggregate_attribution,
    get_gradient,
    get_integrated_gradients,
    get_smoothgrad,
    normalize_attribution,
    plot_attributions,
)
from tests.conftest import rel_err


def test_gradient_is_absolute_custom_gradient(model, images):
    assert rel_err(get_gradient(model, images), get_custom_gradient(model, images, True)) < 1e-5
    assert (get_gradient(model, images) >= 0).all()


def test_smoothgrad_without_noise_equals_gradient(model, images):
    smooth = get_smoothgrad(model, images, num_samples=4, stdevs=0.0)
    assert rel_err(smooth, get_gradient(model, images)) < 1e-6


def test_smoothgrad_is_repeatable_under_manual_seed(model, images):
    torch.manual_seed(3)
    first = get_smoothgrad(model, images, num_samples=4)
    torch.manual_seed(3)
    again = get_smoothgrad(model, images, num_samples=4)
    torch.manual_seed(4)
    other = get_smoothgrad(model, images, num_samples=4)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_integrated_gradients_baseline_is_normalized_black(model, images):
    target = predicted_class(model, images)
    black = torch.zeros_like(images)
    for c, (mean, std) in enumerate(zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)):
        black[:, c] = -mean / std
    explicit = IntegratedGradients(model).attribute(images, baselines=black, target=target,
                                                    n_steps=16)
    ours = get_integrated_gradients(model, images, n_steps=16)
    assert rel_err(ours, explicit) < 1e-6
    zero_base = get_integrated_gradients(model, images, n_steps=16,
                                         baselines=torch.zeros_like(images))
    assert rel_err(zero_base, ours) > 1e-3


def test_integrated_gradients_passes_kwargs_through(model, images):
    a = get_integrated_gradients(model, images, n_steps=8, internal_batch_size=5)
    b = get_integrated_gradients(model, images, n_steps=8)
    assert rel_err(a, b) < 1e-5
    c = get_integrated_gradients(model, images, n_steps=8, method="riemann_left")
    assert rel_err(c, b) > 1e-6


@pytest.mark.parametrize(
    "fn",
    [get_gradient, lambda m, x: get_integrated_gradients(m, x, n_steps=8),
     lambda m, x: get_smoothgrad(m, x, num_samples=3, stdevs=0.0), get_custom_gradient],
    ids=["gradient", "integrated_gradients", "smoothgrad", "custom_gradient"],
)
def test_batch_equals_row_by_row(model, images, fn):
    batch = fn(model, images)
    rows = torch.cat([fn(model, images[i:i + 1]) for i in range(images.shape[0])])
    assert rel_err(batch, rows) < 1e-5


@pytest.mark.parametrize("lib", ["torch", "numpy"])
def test_aggregate_shapes_and_values(lib):
    a = torch.randn(4, 3, 5, 6, generator=torch.Generator().manual_seed(0))
    conv = (lambda t: t) if lib == "torch" else (lambda t: t.numpy())
    assert aggregate_attribution(conv(a)).shape == (4, 5, 6)
    assert aggregate_attribution(conv(a[:1])).shape == (5, 6)
    assert aggregate_attribution(conv(a[0])).shape == (5, 6)
    np.testing.assert_allclose(np.asarray(aggregate_attribution(conv(a[0]))),
                               (a[0, 0] + a[0, 1] + a[0, 2]).numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="Expected an attribution"):
        aggregate_attribution(conv(a[0, 0]))


@pytest.mark.parametrize("lib", ["torch", "numpy"])
def test_normalize_range_per_map(lib):
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(3, 8, 8, generator=gen)
    a[1] *= 100.0
    conv = (lambda t: t) if lib == "torch" else (lambda t: t.numpy())
    out = np.asarray(normalize_attribution(conv(a)))
    assert out.shape == (3, 8, 8)
    for i in range(3):
        assert out[i].min() == 0.0
        assert abs(out[i].max() - 1.0) < 1e-6
    expected0 = a[0].abs() - a[0].abs().min()
    np.testing.assert_allclose(out[0], (expected0 / expected0.max()).numpy(), rtol=1e-6)
    single = np.asarray(normalize_attribution(conv(a[1])))
    np.testing.assert_allclose(single, out[1], rtol=1e-6)


@pytest.mark.parametrize("lib", ["torch", "numpy"])
@pytest.mark.parametrize("value", [0.0, 2.5, -1.0])
def test_normalize_constant_map_gives_zeros(lib, value):
    a = torch.full((2, 4, 4), value)
    conv = (lambda t: t) if lib == "torch" else (lambda t: t.numpy())
    out = np.asarray(normalize_attribution(conv(a)))
    assert np.isfinite(out).all()
    assert (out == 0).all()


def test_normalize_keeps_numpy_and_torch_types():
    assert isinstance(normalize_attribution(np.ones((2, 2))), np.ndarray)
    assert isinstance(normalize_attribution(torch.ones(2, 2)), torch.Tensor)


def test_plot_structure():
    import matplotlib.pyplot as plt
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    image = torch.rand(3, 10, 12, generator=gen)
    maps = [torch.rand(10, 12, generator=gen), np.random.default_rng(0).random((10, 12))]
    pyplot_figures = plt.get_fignums()
    fig = plot_attributions(image, maps, ["Gradient", "IG"], panel_size=1.0)
    assert plt.get_fignums() == pyplot_figures  # object API: nothing registered with pyplot
    axes = fig.get_axes()
    assert len(axes) == 3
    assert [ax.get_title() for ax in axes] == ["Image", "Gradient", "IG"]
    assert [len(ax.get_images()) for ax in axes] == [1, 1, 1]
    drawn = np.asarray(axes[0].get_images()[0].get_array())
    assert drawn.shape == (10, 12, 3)
    np.testing.assert_allclose(drawn, image.permute(1, 2, 0).numpy(), rtol=1e-6)
    for ax, expected in zip(axes[1:], maps, strict=True):
        heat = ax.get_images()[0]
        np.testing.assert_allclose(np.asarray(heat.get_array()), np.asarray(expected),
                                   rtol=1e-6)
        assert heat.get_clim() == (0.0, 1.0)  # maps in [0, 1] keep their absolute scale
    assert all(not ax.axison for ax in axes)

    # It renders: a PNG of figsize x dpi pixels, each panel's area full of distinct colours.
    fig.set_dpi(50)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=50)
    png = buf.getvalue()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(png)) as im:
        assert im.size == (150, 50)  # (3 panels x 1 inch) x 1 inch at 50 dpi
        pixels = np.asarray(im.convert("RGB"))
    for ax in axes:
        box = ax.get_window_extent()  # display pixels, origin bottom-left
        assert box.width > 20 and box.height > 20, ax.get_title()
        rows = slice(round(50 - box.y1) + 1, round(50 - box.y0) - 1)
        panel = pixels[rows, round(box.x0) + 1:round(box.x1) - 1]
        colours = np.unique(panel.reshape(-1, 3), axis=0)
        # 120 random cells: a blank or constant panel would give one colour.
        assert len(colours) >= 60, (ax.get_title(), len(colours))


def test_plot_rejects_mismatched_names():
    with pytest.raises(ValueError, match="one method name per attribution"):
        plot_attributions(torch.rand(3, 4, 4), [torch.rand(4, 4)], ["a", "b"])
