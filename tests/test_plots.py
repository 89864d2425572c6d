"""Figures: the right axes and images, pixel data equal to make_grid's, a white opaque page."""

import io
import math
import re

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from vae_tutorial.config import ModelConfig
from vae_tutorial.history import History
from vae_tutorial.models import build_model
from vae_tutorial.plots import (
    plot_history,
    plot_interpolation,
    plot_latent_scatter,
    plot_manifold,
    show_images,
)
from vae_tutorial.sampling import decode_grid, latent_grid

WHITE = (1.0, 1.0, 1.0, 1.0)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def reference_grid(images: torch.Tensor, nrow: int, padding: int = 2) -> np.ndarray:
    """The grid built by hand: digit i at row i // nrow, column i % nrow, grey 0.5 between."""
    digits = images.reshape(-1, 28, 28).numpy()
    rows, cols = -(-len(digits) // nrow), min(nrow, len(digits))
    step = 28 + padding
    grid = np.full((rows * step + padding, cols * step + padding), 0.5, dtype=np.float32)
    for i, digit in enumerate(digits):
        top, left = padding + (i // nrow) * step, padding + (i % nrow) * step
        grid[top : top + 28, left : left + 28] = digit
    return grid


def rendered_corner(fig) -> np.ndarray:
    """RGBA of the top-left pixel of the figure saved as PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    buffer.seek(0)
    return matplotlib.image.imread(buffer)[0, 0]


def history(epochs: int = 3) -> History:
    h = History()
    for e in range(epochs):
        h.append(
            train_reconstruction=200 - e,
            train_kl=10 + e,
            train_neg_elbo=210,
            train_objective=210,
            test_reconstruction=190 - e,
            test_kl=11 + e,
            test_neg_elbo=201,
            train_seconds=1,
            test_seconds=0.1,
            lr=1e-3,
        )
    return h


def test_show_images_draws_the_make_grid_pixels_on_a_white_page():
    images = torch.rand(10, 784)
    fig = show_images(images, nrow=4, title="Ten digits")
    (ax,) = fig.axes
    (drawn,) = ax.get_images()
    np.testing.assert_array_equal(drawn.get_array(), reference_grid(images, nrow=4))
    assert drawn.get_clim() == (0, 1)
    assert ax.get_title() == "Ten digits"
    assert fig.get_facecolor() == WHITE
    np.testing.assert_array_equal(rendered_corner(fig), WHITE)
    assert fig.get_figwidth() >= 0.5 * 4  # at least half an inch per digit


def test_show_images_accepts_image_shapes_and_an_existing_axes():
    images = torch.rand(6, 1, 28, 28)
    fig, (left, right) = plt.subplots(1, 2)
    assert show_images(images, nrow=3, ax=right) is fig
    assert not left.get_images()
    np.testing.assert_array_equal(right.get_images()[0].get_array(), reference_grid(images, 3))


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (
            torch.rand(4, 100),
            "images: expected a tensor (N, 784) or (N, 1, 28, 28) with N >= 1, got (4, 100)",
        ),
        (
            torch.rand(0, 784),
            "images: expected a tensor (N, 784) or (N, 1, 28, 28) with N >= 1, got (0, 784)",
        ),
        (
            np.zeros((4, 784)),
            "images: expected a torch.Tensor (N, 784) or (N, 1, 28, 28), "
            "got a ndarray of shape (4, 784) and dtype float64; convert it with torch.as_tensor",
        ),
        (
            torch.full((2, 784), 255.0),
            "images (pixel values): expected values in [0, 1], got min 255, max 255",
        ),
        (
            torch.full((2, 784), math.nan),
            "images (pixel values): expected finite values, got 1568 non-finite (first: nan)",
        ),
        (
            torch.zeros(2, 784, dtype=torch.uint8),
            "images: expected a floating-point tensor, got dtype torch.uint8; "
            "convert uint8 images with x.float() / 255",
        ),
    ],
)
def test_show_images_rejects_bad_input(images, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        show_images(images)


def test_show_images_rejects_a_bad_nrow():
    with pytest.raises(ValueError, match=re.escape("nrow: expected an int >= 1, got 0")):
        show_images(torch.rand(4, 784), nrow=0)


def test_plot_history_puts_reconstruction_kl_and_elbo_on_separate_axes():
    h = history(3)
    fig = plot_history(h)
    assert len(fig.axes) == 3
    assert fig.get_facecolor() == WHITE
    for ax, key in zip(fig.axes, ("reconstruction", "kl", "neg_elbo"), strict=True):
        train_line, test_line = ax.get_lines()
        np.testing.assert_array_equal(train_line.get_xdata(), [1, 2, 3])
        np.testing.assert_array_equal(train_line.get_ydata(), getattr(h, f"train_{key}"))
        np.testing.assert_array_equal(test_line.get_ydata(), getattr(h, f"test_{key}"))
        assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "nats per example"
        assert ax.get_title() and ax.get_legend() is not None
    assert "KL" in fig.axes[1].get_title()


def test_plot_history_of_no_epochs_is_refused():
    with pytest.raises(ValueError, match="expected a history with at least 1 epoch, got 0"):
        plot_history(History())
    message = "plot_history: expected a History, got {} (a dict); pass fit(...).history"
    with pytest.raises(ValueError, match=re.escape(message)):
        plot_history({})


def test_latent_scatter_colours_each_code_by_its_digit():
    z = torch.randn(50, 2)
    labels = torch.arange(50) % 10
    fig = plot_latent_scatter(z, labels, title="Codes")
    ax, colorbar = fig.axes
    (dots,) = ax.collections
    np.testing.assert_allclose(dots.get_offsets(), z.numpy())
    np.testing.assert_array_equal(dots.get_array(), labels.numpy())
    colours = dots.to_rgba(labels.numpy())
    assert len({tuple(c) for c in colours}) == 10  # one colour per digit
    assert colorbar.get_ylabel() == "digit"
    assert ax.get_title() == "Codes" and "$z_1$" in ax.get_xlabel() and "$z_2$" in ax.get_ylabel()


@pytest.mark.parametrize(
    ("z", "labels", "message"),
    [
        (torch.randn(5, 3), torch.zeros(5), r"z: expected shape \(N, 2\), got \(5, 3\)"),
        (torch.randn(5, 2), torch.zeros(4), r"labels: expected shape \(5,\), got \(4,\)"),
        (
            torch.tensor([[0.0, math.nan]]),
            torch.zeros(1),
            r"z: expected finite values, got 1 non-finite \(first: nan\); a NaN code would be",
        ),
    ],
)
def test_latent_scatter_rejects_bad_shapes(z, labels, message):
    with pytest.raises(ValueError, match=message):
        plot_latent_scatter(z, labels)


def test_manifold_shows_the_decoded_grid_with_z_values_on_the_axes():
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=2, hidden_dim=32))
    fig = plot_manifold(model, n=5)
    (ax,) = fig.axes
    expected = reference_grid(decode_grid(model, 5), nrow=5, padding=0)  # (140, 140)
    # the same decode_grid of the same model: the same float32 operations, equal to the bit
    np.testing.assert_array_equal(ax.get_images()[0].get_array(), expected)
    z = latent_grid(5)
    xticks = [float(t.get_text()) for t in ax.get_xticklabels()]
    yticks = [float(t.get_text().replace("\N{MINUS SIGN}", "-")) for t in ax.get_yticklabels()]
    # the labels print these z with two decimals: rounding moves them by at most half a unit,
    # 0.005 (and parsing the decimal back by 2^-53 relative)
    tol = {"rtol": 0, "atol": 0.005 * (1 + 1e-9)}
    np.testing.assert_allclose(xticks, z[:5, 0].numpy(), **tol)  # left to right
    np.testing.assert_allclose(yticks, z[::5, 1].numpy(), **tol)  # top row first
    assert "$z_1$" in ax.get_xlabel() and "$z_2$" in ax.get_ylabel() and ax.get_title()


def test_manifold_needs_a_two_dimensional_latent():
    model = build_model(ModelConfig(latent_dim=3, hidden_dim=16))
    with pytest.raises(ValueError, match="expected a model with latent_dim == 2, got 3"):
        plot_manifold(model)


def test_interpolation_draws_one_strip_per_path():
    rows = [torch.rand(7, 784), torch.rand(7, 784)]
    fig = plot_interpolation(rows, titles=["lerp", "slerp"])
    assert len(fig.axes) == 2
    for ax, row, title in zip(fig.axes, rows, ("lerp", "slerp"), strict=True):
        np.testing.assert_array_equal(ax.get_images()[0].get_array(), reference_grid(row, 7))
        assert ax.get_title() == title
        assert [t.get_text() for t in ax.get_xticklabels()][::6] == ["0", "1"]
    assert "t" in fig.axes[-1].get_xlabel()


def test_interpolation_rejects_paths_of_different_lengths_and_wrong_titles():
    with pytest.raises(ValueError, match=r"same number of steps, got lengths \[7, 5\]"):
        plot_interpolation([torch.rand(7, 784), torch.rand(5, 784)])
    with pytest.raises(ValueError, match="titles: expected 1 titles, got 2"):
        plot_interpolation([torch.rand(7, 784)], titles=["a", "b"])
