"""Figures for the book: image grids, training curves, latent scatter, manifold, interpolations.

Every figure has an opaque white background, so it reads the same on the book's light and dark
themes, a title, and axes labelled with their units. Image grids go through
`torchvision.utils.make_grid`, with about 0.6 inch per digit.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import BoundaryNorm
from matplotlib.figure import Figure
from torch import Tensor
from torchvision.utils import make_grid

from vae_tutorial import checks
from vae_tutorial.history import History
from vae_tutorial.sampling import decode_grid, latent_grid

INCHES_PER_DIGIT = 0.6
PAD = 2  # pixels between digits in a grid
PAD_VALUE = 0.5  # grey: separates white strokes and black backgrounds alike


def _figure(
    nrows: int = 1, ncols: int = 1, *, size: tuple[float, float]
) -> tuple[Figure, np.ndarray]:
    """plt.subplots with an opaque white facecolor; axes always a 2-D array."""
    return plt.subplots(nrows, ncols, figsize=size, facecolor="white", squeeze=False)


def _as_images(images: Tensor, name: str = "images") -> Tensor:
    """(N, 784), (N, 28, 28) or (N, 1, 28, 28) in [0, 1] -> (N, 1, 28, 28) float on the CPU."""
    checks.tensor(name, images, "(N, 784) or (N, 1, 28, 28)")
    if images.ndim < 2 or len(images) == 0 or images[0].numel() != 784:
        raise ValueError(
            f"{name}: expected a tensor (N, 784) or (N, 1, 28, 28) with N >= 1, "
            f"got {tuple(images.shape)}"
        )
    checks.floating(name, images)
    images = images.detach().float().cpu().reshape(-1, 1, 28, 28)
    checks.unit_interval(f"{name} (pixel values)", images)
    return images


def image_grid(images: Tensor, nrow: int = 8, padding: int = PAD) -> np.ndarray:
    """The grid `show_images` draws, one channel: (N, 784) -> (H, W) in [0, 1]."""
    nrow = checks.positive_int("nrow", nrow)
    padding = checks.int_at_least("padding", padding, 0)
    grid = make_grid(_as_images(images), nrow=nrow, padding=padding, pad_value=PAD_VALUE)
    return grid[0].numpy()  # make_grid repeats the grey channel three times: (3, H, W)


def show_images(
    images: Tensor, *, nrow: int = 8, title: str = "Images", ax: Axes | None = None
) -> Figure:
    """A grid of digits, nrow per row, black = 0 and white = 1: (N, 784) or (N, 1, 28, 28)."""
    grid = image_grid(images, nrow)  # (H, W)
    if ax is None:
        rows, cols = -(-len(images) // nrow), min(nrow, len(images))
        _, axes = _figure(size=(INCHES_PER_DIGIT * cols + 0.4, INCHES_PER_DIGIT * rows + 0.6))
        ax = axes[0, 0]
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title)
    ax.set_axis_off()
    return ax.figure


def plot_history(history: History) -> Figure:
    """Training curves: -E log p(x|z), KL and -ELBO per epoch, train and test, in nats."""
    if not isinstance(history, History):
        raise ValueError(
            f"plot_history: expected a History, got {checks.describe(history)}; "
            "pass fit(...).history"
        )
    if history.epochs_done == 0:
        raise ValueError("plot_history: expected a history with at least 1 epoch, got 0")
    fig, axes = _figure(1, 3, size=(12, 3.6))
    epochs = np.arange(1, history.epochs_done + 1)
    panels = [
        ("reconstruction", r"Reconstruction $-\mathbb{E}_q \log p(x \mid z)$"),
        ("kl", r"KL$(q(z \mid x) \,\|\, p(z))$"),
        ("neg_elbo", r"Negative ELBO (lower is better)"),
    ]
    for ax, (key, title) in zip(axes[0], panels, strict=True):
        ax.plot(epochs, getattr(history, f"train_{key}"), "o-", label="train (during epoch)")
        ax.plot(epochs, getattr(history, f"test_{key}"), "s--", label="test (after epoch)")
        ax.set(title=title, xlabel="epoch", ylabel="nats per example")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def plot_latent_scatter(z: Tensor, labels: Tensor, *, title: str = "Latent codes") -> Figure:
    """Codes z (N, 2), one dot each, coloured by digit label (N,), with a colorbar of digits."""
    checks.tensor("z", z, "(N, 2)")
    if z.ndim != 2 or z.shape[1] != 2:
        raise ValueError(f"z: expected shape (N, 2), got {tuple(z.shape)}")
    checks.finite("z", z, "a NaN code would be left out of the plot without a word")
    checks.tensor("labels", labels, f"({len(z)},)")
    if labels.shape != (len(z),):
        raise ValueError(f"labels: expected shape ({len(z)},), got {tuple(labels.shape)}")
    z, labels = z.detach().float().cpu().numpy(), labels.detach().cpu().numpy()
    fig, axes = _figure(size=(6.4, 5.4))
    ax = axes[0, 0]
    norm = BoundaryNorm(np.arange(-0.5, 10), 10)  # one colour per digit 0..9
    dots = ax.scatter(z[:, 0], z[:, 1], c=labels, cmap="tab10", norm=norm, s=4, alpha=0.7)
    fig.colorbar(dots, ax=ax, ticks=range(10), label="digit")
    ax.set(title=title, xlabel=r"$z_1$ (prior std. devs.)", ylabel=r"$z_2$ (prior std. devs.)")
    ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    return fig


def plot_manifold(model: torch.nn.Module, n: int = 20, *, eps: float = 0.05) -> Figure:
    """Decoded grid of z = Phi^-1(u) for latent_dim == 2 (Kingma and Welling 2014, figure 4)."""
    probs = decode_grid(model, n, eps=eps)  # (n*n, 784), row by row, top row = largest z_2
    grid = image_grid(probs, nrow=n, padding=0)  # (28 n, 28 n)
    points = latent_grid(n, eps=eps)  # (n*n, 2)
    fig, axes = _figure(size=(min(0.45 * n, 10) + 1.2, min(0.45 * n, 10) + 1.0))
    ax = axes[0, 0]
    ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ticks = np.unique(np.linspace(0, n - 1, 5).round().astype(int))
    centres = 28 * ticks + 13.5  # pixel centre of cell i
    ax.set_xticks(centres, [f"{v:.2f}" for v in points[:n, 0][ticks].tolist()])
    ax.set_yticks(centres, [f"{v:.2f}" for v in points[::n, 1][ticks].tolist()])
    ax.set(
        title=f"Decoded latent grid, {n} x {n}",
        xlabel=r"$z_1$ (cells evenly spaced in prior probability $\Phi(z_1)$)",
        ylabel=r"$z_2$ (evenly spaced in $\Phi(z_2)$)",
    )
    fig.tight_layout()
    return fig


def plot_interpolation(
    probs_rows: Tensor | list[Tensor], *, titles: list[str] | None = None
) -> Figure:
    """One strip per path, each (steps, 784) pixel means from t = 0 (left) to t = 1 (right)."""
    if isinstance(probs_rows, Tensor) and probs_rows.ndim == 2:
        probs_rows = [probs_rows]  # one path
    rows = [_as_images(row, "probs_rows") for row in probs_rows]
    if not rows or len({len(row) for row in rows}) != 1:
        raise ValueError(
            "probs_rows: expected one or more paths with the same number of steps, "
            f"got lengths {[len(row) for row in rows]}"
        )
    titles = [f"path {i + 1}" for i in range(len(rows))] if titles is None else titles
    if len(titles) != len(rows):
        raise ValueError(f"titles: expected {len(rows)} titles, got {len(titles)}")
    steps = len(rows[0])
    fig, axes = _figure(len(rows), 1, size=(INCHES_PER_DIGIT * steps + 0.6, 1.3 * len(rows)))
    t = np.linspace(0, 1, steps)
    for ax, row, title in zip(axes[:, 0], rows, titles, strict=True):
        ax.imshow(image_grid(row, nrow=steps), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks(PAD + (28 + PAD) * np.arange(steps) + 13.5, [f"{v:.2g}" for v in t])
        ax.set_yticks([])
        ax.set_title(title)
    axes[-1, 0].set_xlabel("interpolation position t (0 = first image, 1 = second)")
    fig.tight_layout()
    return fig
