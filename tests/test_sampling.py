"""Sampling: prior draws, reconstructions, interpolation geometry, the inverse-CDF latent grid."""

import copy
import math
import re
from statistics import NormalDist

import pytest
import torch

from vae_tutorial.config import ModelConfig
from vae_tutorial.models import VAE, Autoencoder
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


@pytest.fixture(scope="module")
def reads_z() -> VAE:
    """A float64 VAE whose decoder copies z into the first two logits, and whose q(z|x) is
    N((1, -2), 0.5^2 I) for every x: logit(pixel means[:, :2]) shows the z that was decoded."""
    model = VAE(ModelConfig(latent_dim=2, hidden_dim=16)).double()
    first, _, second = model.decoder
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        # hidden units relu(z1), relu(-z1), relu(z2), relu(-z2); logit i = relu(z) - relu(-z) = z
        first.weight[:4] = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
        second.weight[:2, :4] = torch.tensor([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0]])
        model.to_mu.bias.copy_(torch.tensor([1.0, -2.0]))
        model.to_logvar.bias.fill_(math.log(0.25))
    return model


def decoded_z(probs: torch.Tensor) -> torch.Tensor:
    """The z that `reads_z` decoded into these pixel means: (N, 2)."""
    return torch.logit(probs[:, :2])


def assert_gaussian(z: torch.Tensor, mean: list[float], std: float) -> None:
    """Sample mean, variance and correlation within 4 standard errors of N(mean, std^2 I)."""
    n = len(z)
    assert torch.all((z.mean(0) - torch.tensor(mean, dtype=z.dtype)).abs() < 4 * std / n**0.5)
    assert torch.all((z.var(0) - std**2).abs() < 4 * std**2 * math.sqrt(2 / (n - 1)))
    assert abs(torch.corrcoef(z.T)[0, 1]) < 4 / n**0.5


def test_sample_prior_decodes_seeded_draws_from_the_prior(reads_z):
    probs = sample_prior(reads_z, 4000, seed=3)
    assert probs.shape == (4000, 784) and not probs.requires_grad
    assert torch.all((probs > 0) & (probs < 1))
    assert_gaussian(decoded_z(probs), [0.0, 0.0], 1.0)  # z ~ N(0, I)
    assert torch.equal(sample_prior(reads_z, 4000, seed=3), probs)  # seeded
    assert not torch.equal(sample_prior(reads_z, 4000, seed=4), probs)


def test_reconstruct_decodes_the_mean_or_a_seeded_draw_from_q(reads_z, images):
    x = images.double().repeat(1000, 1)  # (4000, 784)
    at_mean = decoded_z(reconstruct(reads_z, x[:4]))
    torch.testing.assert_close(at_mean, torch.tensor([[1.0, -2.0]] * 4, dtype=torch.float64))
    drawn = reconstruct(reads_z, x, sample=True, seed=5)
    assert_gaussian(decoded_z(drawn), [1.0, -2.0], 0.5)  # z ~ q(z|x) = N(mu, sigma^2)
    assert torch.equal(reconstruct(reads_z, x, sample=True, seed=5), drawn)
    assert not torch.equal(reconstruct(reads_z, x, sample=True, seed=6), drawn)


def test_reconstruct_with_an_autoencoder(images):
    torch.manual_seed(0)
    ae = Autoencoder(ModelConfig(kind="ae", latent_dim=3, hidden_dim=16)).double()
    images = images.double()  # float64, as the reference
    expected = torch.sigmoid(ae(images)).detach()
    torch.testing.assert_close(reconstruct(ae, images.reshape(4, 1, 28, 28)), expected)
    message = "reconstruct: sample=True expected a VAE (a q(z|x) to sample), got Autoencoder"
    with pytest.raises(ValueError, match=re.escape(message)):
        reconstruct(ae, images, sample=True)


def test_lerp_is_evenly_spaced_between_the_endpoints():
    z0 = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    z1 = torch.tensor([-3.0, 0.0, 4.5], dtype=torch.float64)
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
    z0, z1 = torch.tensor([[3.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    # float64: a few roundings of 2^-53 relative each
    assert lerp(z0, z1, 3)[1].norm().item() == pytest.approx(3 / math.sqrt(2), rel=1e-14)
    assert slerp(z0, z1, 3)[1].norm().item() == pytest.approx(3.0, rel=1e-14)
    expected = torch.tensor([1.0, 1.0], dtype=torch.float64) * 3 / math.sqrt(2)
    torch.testing.assert_close(slerp(z0, z1, 3)[1], expected)


def test_slerp_of_parallel_vectors_is_lerp():
    z0 = torch.tensor([1.0, 2.0], dtype=torch.float64)
    torch.testing.assert_close(slerp(z0, 3 * z0, 4), lerp(z0, 3 * z0, 4))


@pytest.mark.parametrize("method", ["lerp", "slerp"])
def test_interpolate_starts_and_ends_at_the_reconstructions(vae, images, method):
    vae, images = copy.deepcopy(vae).double(), images.double()  # float64: the batch size's
    # float32 kernels may round otherwise
    probs = interpolate(vae, images[0], images[1].reshape(1, 1, 28, 28)[0], steps=6, method=method)
    assert probs.shape == (6, 784)
    torch.testing.assert_close(probs[[0, -1]], reconstruct(vae, images[:2]))


def test_latent_grid_uses_the_gaussian_inverse_cdf():
    """Phi^-1(0.025) = -1.95996, Phi^-1(0.5) = 0, Phi^-1(0.975) = 1.95996; statistics.NormalDist."""
    grid = latent_grid(3, eps=0.025)
    q = torch.tensor([-1.959963984540054, 0.0, 1.959963984540054])
    assert grid.shape == (9, 2)
    # latent_grid is float32: u rounds by 2^-24 relative, moving z by u 2^-24 / phi(z) < 2e-8 here,
    # and float32 ndtri is good to a few ulp of |z| < 2 (ulp 2.4e-7): within 1e-6
    tol = {"rtol": 0, "atol": 1e-6}
    torch.testing.assert_close(grid[:3, 0], q, **tol)  # z_1 rises left to right within a row
    torch.testing.assert_close(grid[::3, 1], q.flip(0), **tol)  # z_2 falls from the top row down
    reference = [NormalDist().inv_cdf(u) for u in torch.linspace(0.05, 0.95, 7).tolist()]
    torch.testing.assert_close(latent_grid(7)[:7, 0], torch.tensor(reference), **tol)


def test_decode_grid_decodes_the_grid_row_by_row(reads_z):
    probs = decode_grid(reads_z, 4)
    assert probs.shape == (16, 784)
    torch.testing.assert_close(decoded_z(probs), latent_grid(4).double())


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: sample_prior(VAE(), 0), "n: expected an int >= 1, got 0"),
        (lambda: sample_prior(VAE(), True), "n: expected an int >= 1, got True (a bool)"),
        (lambda: sample_prior(VAE(), 4, seed=-1), "seed: expected an int >= 0, got -1"),
        (
            lambda: sample_prior(VAE().state_dict(), 4),
            "sample_prior: expected a VAE (kind 'vae') or a conditional VAE (kind 'cvae') or an "
            "autoencoder (kind 'ae'), got OrderedDict(",
        ),
        (
            lambda: reconstruct(VAE(), torch.zeros(2, 784), sample="yes"),
            "sample: expected True or False, got 'yes' (a str)",
        ),
        (
            lambda: lerp(torch.zeros(3), torch.zeros(4), 5),
            "lerp: expected z0 and z1 of the same shape (D,), got (3,) and (4,)",
        ),
        (
            lambda: slerp(torch.zeros(1, 3), torch.zeros(1, 3), 5),
            "slerp: expected z0 and z1 of the same shape (D,), got (1, 3) and (1, 3)",
        ),
        (
            lambda: lerp(torch.ones(3), torch.ones(3), 1),
            "lerp: steps: expected an int >= 2, got 1; a path needs both ends",
        ),
        (
            lambda: slerp(torch.ones(3), torch.ones(3), 4.0),
            "slerp: steps: expected an int >= 2, got 4.0 (a float)",
        ),
        (
            lambda: lerp(torch.tensor([0.0, math.nan]), torch.ones(2), 3),
            "lerp: z0: expected finite values, got 1 non-finite (first: nan)",
        ),
        (
            lambda: slerp(torch.ones(2), torch.tensor([1, 2]), 3),
            "slerp: z1: expected a floating-point tensor, got dtype torch.int64",
        ),
        (
            lambda: lerp([0.0, 1.0], torch.ones(2), 3),
            "lerp: z0: expected a torch.Tensor (D,), got [0.0, 1.0] (a list)",
        ),
        (
            lambda: slerp(torch.zeros(3), torch.ones(3), 4),
            "slerp: expected nonzero z0 and z1, got a zero vector",
        ),
        (
            lambda: interpolate(VAE(), torch.zeros(784), torch.zeros(784), method="cubic"),
            "method: expected one of ('lerp', 'slerp'), got 'cubic'",
        ),
        (
            lambda: interpolate(VAE(), torch.zeros(2, 784), torch.zeros(2, 784)),
            "interpolate: expected two single images of 784 pixels each, "
            "got shapes (2, 784) and (2, 784)",
        ),
        (lambda: latent_grid(1), "n: expected an int >= 2, got 1"),
        (lambda: latent_grid(5, eps=0.5), "eps: expected a finite number in (0, 0.5), got 0.5"),
        (lambda: latent_grid(5, eps=0.0), "eps: expected a finite number in (0, 0.5), got 0.0"),
        (
            lambda: interpolate(VAE(), torch.zeros(784).tolist(), torch.zeros(784)),
            "interpolate: x0: expected a torch.Tensor (784,), got [0.0",
        ),
        (
            lambda: decode_grid(VAE(), 5),
            "decode_grid: expected a model with latent_dim == 2, got 20",
        ),
    ],
)
def test_bad_inputs_name_expected_and_got(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()
