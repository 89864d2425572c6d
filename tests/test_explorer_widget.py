"""The Jupyter explorer's two pictures, read back from the PNGs its widget shows: the plane puts
each code where its z lies, in its digit's colour, and the digit is the decoded mean, unscaled."""

import io

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from vae_tutorial.config import ModelConfig
from vae_tutorial.explorer import LIMIT
from vae_tutorial.explorer_widget import LatentExplorer
from vae_tutorial.models import VAE

pytest.importorskip("ipywidgets")


def _pictures(
    codes: torch.Tensor, labels: torch.Tensor
) -> tuple[LatentExplorer, np.ndarray, np.ndarray]:
    torch.manual_seed(0)
    explorer = LatentExplorer(VAE(ModelConfig(latent_dim=2, hidden_dim=16)), codes, labels)
    plane, digit = explorer.widget().children[0].children
    read = [
        np.asarray(Image.open(io.BytesIO(view.value)).convert("RGB")) for view in (plane, digit)
    ]
    return explorer, read[0], read[1]


def _where(image: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """(row, col) of every pixel of exactly this colour."""
    return np.argwhere((image == colour).all(-1))


def test_each_code_lies_in_its_quadrant_in_its_digits_colour():
    half = LIMIT / 2
    codes = torch.tensor(
        [[half, half], [-half, -half], [-half, half]]
    )  # up right, down left, up left
    labels = torch.tensor([3, 7, 1])
    _, plane, _ = _pictures(codes, labels)
    middle = plane.shape[0] / 2
    colours = (np.array(matplotlib.colormaps["tab10"].colors) * 255).astype(np.uint8)
    quadrants = {3: (True, True), 7: (False, False), 1: (True, False)}  # (upper?, right?)
    for label, (upper, right) in quadrants.items():
        found = _where(plane, colours[label])
        assert len(found) == 1, f"digit {label}: {len(found)} pixels of its colour"
        row, col = found[0]
        assert (row < middle, col > middle) == (upper, right), f"digit {label} at {row, col}"


def test_the_digit_is_the_decoded_mean_at_the_sliders_z():
    explorer, _, digit = _pictures(torch.zeros(2, 2), torch.tensor([0, 1]))
    scale = digit.shape[0] // 28  # each pixel enlarged to scale x scale
    shown = digit[::scale, ::scale, 0].astype(np.float64) / 255  # (28, 28), grey: R = G = B
    want = explorer.decode((0.0, 0.0))  # the sliders start at z = 0
    np.testing.assert_allclose(shown, want, rtol=0, atol=0.5 / 255 + 1e-6)  # rounded to 1/255
