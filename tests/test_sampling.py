"""Sampling: prior draws, reconstructions, interpolation geometry, the inverse-CDF latent grid."""

import math
import re
from statistics import NormalDist

import pytest
import torch

from vae_tutorial.models import VAE, Autoencoder, ModelConfig
from vae_tutorial.sampling import (
    decode_grid,
    interpolate,
    latent_grid,
    lerp,
    reconstruct,
    sample_prior,
    slerp,
)


@pytest.fixture(scope="module")
def vae() -> VAE:
    torch.manual_seed(0)
    return VAE(ModelConfig(latent_dim=2, hidden_dim=16))


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.bernoulli(torch.full((4, 784), 0.3), generator=torch.Generator().manual_seed(0))


def test_sample_prior_decodes_seeded_standard_normal_draws(vae):
    probs = sample_prior(vae, 6, seed=3)
    z = torch.randn((6, 2), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(probs, torch.sigmoid(vae.decode(z)).detach())
    assert probs.shape == (6, 784) and not probs.requires_grad
    assert torch.all((probs > 0) & (probs < 1))
    assert not torch.equal(sample_prior(vae, 6, seed=4), probs)


def test_reconstruct_decodes_the_mean_or_a_seeded_draw(vae, images):
    mu, logvar = vae.encode(images)
    torch.testing.assert_close(reconstruct(vae, images), torch.sigmoid(vae.decode(mu)).detach())
    eps = torch.randn((4, 2), generator=torch.Generator().manual_seed(5))
    z = mu + torch.exp(0.5 * logvar) * eps
    expected = torch.sigmoid(vae.decode(z)).detach()
    torch.testing.assert_close(reconstruct(vae, images, sample=True, seed=5), expected)


def test_reconstruct_with_an_autoencoder(images):
    torch.manual_seed(0)
    ae = Autoencoder(ModelConfig(kind="ae", latent_dim=3, hidden_dim=16))
    expected = torch.sigmoid(ae(images)).detach()
    torch.testing.assert_close(reconstruct(ae, images.reshape(4, 1, 28, 28)), expected)
    message = "reconstruct: sample=True expected a VAE (a q(z|x) to sample), got Autoencoder"
    with pytest.raises(ValueError, match=re.escape(message)):
        reconstruct(ae, images, sample=True)


def test_lerp_is_evenly_spaced_between_the_endpoints():
    z0, z1 = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([-3.0, 0.0, 4.5])
    path = lerp(z0, z1, 5)
    assert path.shape == (5, 3)
    torch.testing.assert_close(path[0], z0)
    torch.testing.assert_close(path[-1], z1)
    torch.testing.assert_close(path[2], (z0 + z1) / 2)
    torch.testing.assert_close(path.diff(dim=0), ((z1 - z0) / 4).expand(4, 3))


def test_slerp_keeps_the_norm_and_turns_at_constant_speed():
    """Equal norms r: every point has norm r, consecutive points are Omega / (steps - 1) apart."""
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(2, 20, generator=g, dtype=torch.float64)
    z1 = z1 * z0.norm() / z1.norm()
    path = slerp(z0, z1, 9)
    torch.testing.assert_close(path[0], z0)
    torch.testing.assert_close(path[-1], z1)
    torch.testing.assert_close(path.norm(dim=1), z0.norm().expand(9))
    unit = path / path.norm(dim=1, keepdim=True)
    angles = torch.arccos((unit[:-1] * unit[1:]).sum(1))
    omega = math.acos(torch.dot(z0, z1).item() / (z0.norm() * z1.norm()).item())
    torch.testing.assert_close(angles, torch.full((8,), omega / 8, dtype=torch.float64))


def test_lerp_shrinks_the_norm_where_slerp_does_not():
    """Orthogonal vectors, norm r: the lerp midpoint has norm r / sqrt(2), the slerp midpoint r."""
    z0, z1 = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 3.0])
    assert lerp(z0, z1, 3)[1].norm().item() == pytest.approx(3 / math.sqrt(2))
    assert slerp(z0, z1, 3)[1].norm().item() == pytest.approx(3.0)
    torch.testing.assert_close(slerp(z0, z1, 3)[1], torch.tensor([1.0, 1.0]) * 3 / math.sqrt(2))


def test_slerp_of_parallel_vectors_is_lerp():
    z0 = torch.tensor([1.0, 2.0])
    torch.testing.assert_close(slerp(z0, 3 * z0, 4), lerp(z0, 3 * z0, 4))


@pytest.mark.parametrize("method", ["lerp", "slerp"])
def test_interpolate_starts_and_ends_at_the_reconstructions(vae, images, method):
    probs = interpolate(vae, images[0], images[1].reshape(1, 1, 28, 28)[0], steps=6, method=method)
    assert probs.shape == (6, 784)
    torch.testing.assert_close(probs[[0, -1]], reconstruct(vae, images[:2]))


def test_latent_grid_uses_the_gaussian_inverse_cdf():
    """Phi^-1(0.025) = -1.95996, Phi^-1(0.5) = 0, Phi^-1(0.975) = 1.95996; statistics.NormalDist."""
    grid = latent_grid(3, eps=0.025)
    q = torch.tensor([-1.959963984540054, 0.0, 1.959963984540054])
    assert grid.shape == (9, 2)
    torch.testing.assert_close(grid[:3, 0], q)  # z_1 rises left to right within a row
    torch.testing.assert_close(grid[::3, 1], q.flip(0))  # z_2 falls from the top row down
    reference = [NormalDist().inv_cdf(u) for u in torch.linspace(0.05, 0.95, 7).tolist()]
    torch.testing.assert_close(latent_grid(7)[:7, 0], torch.tensor(reference))


def test_decode_grid_decodes_the_grid_row_by_row(vae):
    probs = decode_grid(vae, 4)
    torch.testing.assert_close(probs, torch.sigmoid(vae.decode(latent_grid(4))).detach())
    assert probs.shape == (16, 784)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: sample_prior(VAE(), 0), "n: expected an int >= 1, got 0"),
        (
            lambda: lerp(torch.zeros(3), torch.zeros(4), 5),
            "lerp: expected z0 and z1 of the same shape (D,), got (3,) and (4,)",
        ),
        (
            lambda: slerp(torch.zeros(1, 3), torch.zeros(1, 3), 5),
            "slerp: expected z0 and z1 of the same shape (D,), got (1, 3) and (1, 3)",
        ),
        (lambda: lerp(torch.ones(3), torch.ones(3), 1), "lerp: expected an int steps >= 2, got 1"),
        (
            lambda: slerp(torch.zeros(3), torch.ones(3), 4),
            "slerp: expected nonzero z0 and z1, got a zero vector",
        ),
        (
            lambda: interpolate(VAE(), torch.zeros(784), torch.zeros(784), method="cubic"),
            "method: expected 'lerp' or 'slerp', got 'cubic'",
        ),
        (
            lambda: interpolate(VAE(), torch.zeros(2, 784), torch.zeros(2, 784)),
            "interpolate: expected two single images of 784 pixels each, "
            "got shapes (2, 784) and (2, 784)",
        ),
        (lambda: latent_grid(1), "n: expected an int >= 2, got 1"),
        (lambda: latent_grid(5, eps=0.5), "eps: expected a probability in (0, 0.5), got 0.5"),
        (lambda: latent_grid(5, eps=0.0), "eps: expected a probability in (0, 0.5), got 0.0"),
        (
            lambda: decode_grid(VAE(), 5),
            "decode_grid: expected a model with latent_dim == 2, got 20",
        ),
    ],
)
def test_bad_inputs_name_expected_and_got(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()
