"""The grey-pixel likelihoods against float64 closed forms near lambda = 1/2 (where their Taylor
series take over), their reductions, their input ranges, and the continuous Bernoulli's mean
through every consumer that shows a decoded image (sampling, reconstruction) or refuses it
(the explorer)."""

import pytest
import torch

from vae_tutorial.config import ModelConfig
from vae_tutorial.explorer_widget import LatentExplorer
from vae_tutorial.likelihoods import (
    continuous_bce,
    continuous_bernoulli_log_likelihood,
    continuous_bernoulli_log_norm,
    continuous_bernoulli_mean,
    likelihood_mean,
)
from vae_tutorial.models import build_model
from vae_tutorial.sampling import decode_grid, latent_grid, reconstruct

pytestmark = pytest.mark.usefixtures("one_thread")

# |l| from 0.005 to 0.099, both signs: all inside the series' range |l| < 0.1
NEAR_HALF = torch.cat([s * torch.linspace(0.005, 0.099, 20, dtype=torch.float64) for s in (-1, 1)])


def closed_form_mean(logits: torch.Tensor) -> torch.Tensor:
    """E[x] = 1 / (1 - e^(-l)) - 1 / l in float64: its cancellation near 0 costs about
    eps_64 / l^2 < 1e-11 for |l| >= 0.005."""
    return 1 / (1 - torch.exp(-logits)) - 1 / logits


def test_the_mean_near_one_half_is_the_closed_form():
    # the series' first omitted term, l^7 / 1209600, is below 1e-13 for |l| < 0.1
    torch.testing.assert_close(
        continuous_bernoulli_mean(NEAR_HALF), closed_form_mean(NEAR_HALF), rtol=0, atol=1e-10
    )


def test_the_normaliser_near_one_half_is_the_closed_form():
    # log C = log(l / tanh(l / 2)), accurate to a few eps_64 in float64; the series' first
    # omitted term, about 0.00008 l^8, is below 1e-12 for |l| < 0.1
    want = torch.log(NEAR_HALF / torch.tanh(NEAR_HALF / 2))
    torch.testing.assert_close(continuous_bernoulli_log_norm(NEAR_HALF), want, rtol=0, atol=1e-10)


def test_continuous_bce_sums_over_pixels():
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(3, 784, generator=g, dtype=torch.float64)
    x = torch.rand(3, 784, generator=g, dtype=torch.float64)
    p = torch.sigmoid(logits)
    want = (x * torch.log(p) + (1 - x) * torch.log1p(-p)).sum(-1)  # (3,), a sum of 784 terms
    torch.testing.assert_close(continuous_bce(logits, x), want)


@pytest.mark.parametrize("fn", [continuous_bce, continuous_bernoulli_log_likelihood])
@pytest.mark.parametrize("bad", [1.5, -0.25])
def test_grey_likelihoods_refuse_pixels_outside_0_1(fn, bad):
    x = torch.full((2, 784), 0.5)
    x[1, 7] = bad
    with pytest.raises(ValueError, match=r"expected values in \[0, 1\]"):
        fn(torch.zeros(2, 784), x)


@pytest.fixture(scope="module")
def grey_model():
    torch.manual_seed(0)
    return build_model(ModelConfig(latent_dim=2, hidden_dim=16, likelihood="continuous_bernoulli"))


def test_every_consumer_shows_the_continuous_bernoulli_mean_not_lambda(grey_model):
    model = grey_model
    logits = torch.linspace(-6, 6, 24, dtype=torch.float64)  # not 0, where it is 0/0
    torch.testing.assert_close(
        likelihood_mean("continuous_bernoulli")(logits), closed_form_mean(logits)
    )

    def want(z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return closed_form_mean(model.decode(z).double()).float()  # (B, 784)

    z = torch.tensor([[0.3, -1.2]])
    with torch.no_grad():
        assert (want(z) - torch.sigmoid(model.decode(z))).abs().max() > 1e-3  # lambda differs
    torch.testing.assert_close(model.decode_mean(z), want(z))
    torch.testing.assert_close(decode_grid(model, 3), want(latent_grid(3)))
    x = torch.rand(4, 784, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        mu, _ = model.encode(x)
    torch.testing.assert_close(reconstruct(model, x), want(mu))
    # the explorers draw sigmoid(g(z)): they refuse this model rather than show lambda
    with pytest.raises(ValueError, match="expected a model whose mean image is sigmoid"):
        LatentExplorer(model, torch.zeros(4, 2), torch.arange(4))
