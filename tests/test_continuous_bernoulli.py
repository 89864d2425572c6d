"""The continuous Bernoulli against numerical integration over x in [0, 1], in float64.

Independent of the package's closed form and Taylor series: the normaliser is 1 / the trapezoid
integral of lambda^x (1 - lambda)^(1 - x), the mean is the integral of x p(x), and the gradient of
log C in the logit ell is lambda - E[x] (as log C = -log(1 - lambda) - log int e^(ell x) dx).
"""

import math

import pytest
import torch

from vae_tutorial.config import ModelConfig, TrainConfig, check_run
from vae_tutorial.elbo import elbo_terms
from vae_tutorial.likelihoods import (
    TAYLOR_BELOW,
    continuous_bernoulli_log_likelihood,
    continuous_bernoulli_log_norm,
    continuous_bernoulli_mean,
    log_likelihood,
)

X = torch.linspace(0.0, 1.0, 200_001, dtype=torch.float64)  # the grid over [0, 1], step 5e-6

# lambda at 1/2 exactly, within 1e-6 and 1e-3 of it, moderate, and near 0 and 1
LAMBDAS = [0.5, 0.5 + 1e-6, 0.5 - 1e-6, 0.5 + 1e-3, 0.5 - 1e-3, 0.3, 0.7, 0.1, 0.9, 1e-3, 1e-6]
LAMBDAS += [1 - 1e-6]
# logits on both sides of the switch from the Taylor series to the closed form
LOGITS_AT_SWITCH = [TAYLOR_BELOW * (1 - 1e-6), TAYLOR_BELOW, TAYLOR_BELOW * (1 + 1e-6)]


def logit(lam: float) -> torch.Tensor:
    """ell = log(lambda / (1 - lambda)) in float64, as a (1,) tensor."""
    return torch.tensor([math.log(lam) - math.log1p(-lam)], dtype=torch.float64)


def integrated(ell: float) -> tuple[float, float]:
    """log C and E[x] by the trapezoid rule over X, for lambda = sigmoid(ell)."""
    top = max(ell, 0.0)  # exp(ell x - top) <= 1: no overflow
    scaled = torch.exp(ell * X - top)  # lambda^x (1 - lambda)^(1 - x) / ((1 - lambda) e^top)
    mass = torch.trapezoid(scaled, X)
    log_one_minus_lambda = -math.log1p(math.exp(-abs(ell))) - max(ell, 0.0)  # log sigmoid(-ell)
    # $\log C = -\log \int_0^1 \lambda^x (1 - \lambda)^{1 - x} dx$
    log_c = -(math.log(mass) + top + log_one_minus_lambda)
    mean = torch.trapezoid(X * scaled, X) / mass
    return log_c, float(mean)


@pytest.mark.parametrize("ell", [float(logit(lam)) for lam in LAMBDAS] + LOGITS_AT_SWITCH)
def test_normaliser_and_mean_match_numerical_integration(ell):
    log_c, mean = integrated(ell)
    t = torch.tensor([ell], dtype=torch.float64)
    assert continuous_bernoulli_log_norm(t).item() == pytest.approx(log_c, abs=1e-9)
    assert continuous_bernoulli_mean(t).item() == pytest.approx(mean, abs=1e-9)


def test_normaliser_is_log_2_at_one_half_and_symmetric():
    t = torch.tensor([0.0, 1e-300, 1e-12, 2.0, 30.0, 700.0], dtype=torch.float64)
    assert continuous_bernoulli_log_norm(t)[0].item() == math.log(2)  # C(1/2) = 2
    assert torch.equal(continuous_bernoulli_log_norm(t), continuous_bernoulli_log_norm(-t))
    # lambda near 0 or 1: C = |ell| (1 + e^-|ell|) / (1 - e^-|ell|) -> |ell|, no overflow
    assert continuous_bernoulli_log_norm(t)[-1].item() == pytest.approx(math.log(700.0), abs=1e-12)


@pytest.mark.parametrize("lam", [0.5, 0.5 + 1e-3, 0.2, 1e-4, 1 - 1e-4])
def test_the_density_integrates_to_one(lam):
    logits = logit(lam).expand(len(X), 1)  # one pixel, every x of the grid: (G, 1)
    density = continuous_bernoulli_log_likelihood(logits, X[:, None]).exp()  # (G,)
    assert torch.trapezoid(density, X).item() == pytest.approx(1.0, abs=1e-9)


def test_float32_agrees_with_float64_from_one_half_to_the_extremes():
    l64 = torch.cat([torch.linspace(-0.3, 0.3, 6001), torch.linspace(-80, 80, 8001)]).double()
    l32 = l64.float()
    # Worst just above the switch l0: the mean's 1 / expm1(-l) (<= 1 / l0 + 1/2) and 1 / l cancel,
    # each within 2 float32 ulps (expm1, the division); log C's terms are smaller (|.| < 4.4).
    bound = 2 * 2 * torch.finfo(torch.float32).eps * (1 / TAYLOR_BELOW + 0.5)  # 5.0e-6
    for fn in (continuous_bernoulli_log_norm, continuous_bernoulli_mean):
        assert torch.allclose(fn(l32).double(), fn(l32.double()), rtol=0, atol=bound)
    extreme = torch.tensor([-1e4, -100.0, 100.0, 1e4])  # float32, far beyond any trained logit
    assert torch.isfinite(continuous_bernoulli_log_norm(extreme)).all()
    assert torch.isfinite(continuous_bernoulli_mean(extreme)).all()


@pytest.mark.parametrize("ell", [0.0, 1e-30, 1e-8, -1e-3, 0.05, *LOGITS_AT_SWITCH, 3.0, -40.0])
def test_gradient_is_finite_and_equals_lambda_minus_the_mean(ell):
    t = torch.tensor([ell], dtype=torch.float64, requires_grad=True)
    continuous_bernoulli_log_norm(t).sum().backward()
    _, mean = integrated(ell)
    # $\frac{d \log C}{d\ell} = \lambda - \mathbb E[x]$
    lam = 1 / (1 + math.exp(-ell))
    assert t.grad.item() == pytest.approx(lam - mean, abs=1e-9)
    for dtype in (torch.float32, torch.float64):
        t = torch.tensor([ell], dtype=dtype, requires_grad=True)
        continuous_bernoulli_log_likelihood(
            t[None], torch.full((1, 1), 0.3, dtype=dtype)
        ).backward()
        assert torch.isfinite(t.grad).all()


def test_log_likelihood_is_the_bce_term_plus_the_normaliser_per_pixel():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 16, generator=g, dtype=torch.float64) * 3  # (B, P)
    x = torch.rand(3, 16, generator=g, dtype=torch.float64)
    bce = x * torch.sigmoid(logits).log() + (1 - x) * torch.sigmoid(-logits).log()  # (B, P)
    log_c = [[integrated(float(v))[0] for v in row] for row in logits]
    log_c = torch.tensor(log_c, dtype=torch.float64)  # (B, P)
    got = continuous_bernoulli_log_likelihood(logits, x)  # (B,)
    assert torch.allclose(got, (bce + log_c).sum(-1), rtol=0, atol=1e-8)
    mu = logvar = torch.zeros(3, 2, dtype=torch.float64)
    terms = elbo_terms(logits, x, mu, logvar, likelihood="continuous_bernoulli")
    assert torch.equal(terms.reconstruction, got)


def test_log_densities_can_be_positive_unlike_log_probabilities():
    logits = torch.full((1, 784), 6.0)  # lambda near 1, for white pixels
    assert continuous_bernoulli_log_likelihood(logits, torch.ones(1, 784)).item() > 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: continuous_bernoulli_log_likelihood(torch.zeros(1, 3), torch.full((1, 3), 1.5)),
            r"continuous_bernoulli_log_likelihood: x: expected values in \[0, 1\], got min 1.5",
        ),
        (
            lambda: continuous_bernoulli_log_likelihood(
                torch.full((1, 3), math.nan), torch.zeros(1, 3)
            ),
            r"continuous_bernoulli_log_likelihood: logits: expected finite values, got 3 non-",
        ),
        (
            lambda: continuous_bernoulli_log_likelihood(torch.zeros(1, 3), torch.zeros(1, 4)),
            r"expected logits and x of the same shape \(\.\.\., N\), got \(1, 3\) and \(1, 4\)",
        ),
        (
            lambda: continuous_bernoulli_log_norm(torch.tensor([math.inf])),
            r"continuous_bernoulli_log_norm: logits: expected finite values",
        ),
        (
            lambda: continuous_bernoulli_mean(torch.zeros(3, dtype=torch.int64)),
            r"continuous_bernoulli_mean: logits: expected a floating-point tensor, got dtype",
        ),
        (
            lambda: log_likelihood("gaussian"),
            r"likelihood: expected one of \('bernoulli', 'continuous_bce', 'continuous_bernoulli'",
        ),
        (
            lambda: check_run(ModelConfig(likelihood="continuous_bernoulli"), TrainConfig()),
            r"likelihood='continuous_bernoulli' is a density for grey x, got binarize='dynamic'.*"
            r"use binarize='none'",
        ),
    ],
)
def test_bad_input_is_refused_with_what_was_expected(call, message):
    with pytest.raises(ValueError, match=message):
        call()
