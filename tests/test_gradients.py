"""Gradient estimators against analytic gradients of Gaussian expectations known in closed form."""

import math
import re

import pytest
import torch
from torch.distributions import Normal

from vae_tutorial.gradients import pathwise_gradient, score_function_gradient

N = 200_000
MU, SIGMA = 1.3, 0.7


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def assert_within_stderr(samples, exact, k=4.0):
    """The mean of per-sample estimates lies within k standard errors of the exact value."""
    mean = samples.mean(0)
    stderr = samples.std(0) / math.sqrt(samples.shape[0])
    assert ((mean - exact).abs() < k * stderr).all(), (mean, exact, stderr)


# E[h(z)] for z ~ N(mu, sigma^2) in closed form, and its gradient (d/dmu, d/dsigma).
EXACT = {
    # E[z^2] = mu^2 + sigma^2
    "square": (lambda z: z**2, lambda m, s: (2 * m, 2 * s)),
    # E[e^z] = e^{mu + sigma^2 / 2}
    "exp": (torch.exp, lambda m, s: (math.exp(m + s * s / 2), s * math.exp(m + s * s / 2))),
    # E[sin z] = sin(mu) e^{-sigma^2 / 2}
    "sin": (
        torch.sin,
        lambda m, s: (math.cos(m) * math.exp(-s * s / 2), -s * math.sin(m) * math.exp(-s * s / 2)),
    ),
}


@pytest.mark.parametrize("name", sorted(EXACT))
@pytest.mark.parametrize("estimator", [pathwise_gradient, score_function_gradient])
def test_estimators_are_unbiased(name, estimator):
    f, grad = EXACT[name]
    d_mu, d_sigma = estimator(f, MU, SIGMA, N, generator=gen(1))
    exact_mu, exact_sigma = grad(MU, SIGMA)
    assert d_mu.shape == d_sigma.shape == (N,)
    assert_within_stderr(d_mu, exact_mu)
    assert_within_stderr(d_sigma, exact_sigma)


def test_pathwise_samples_are_the_analytic_derivative_along_the_path():
    # f = z^2: f'(z) = 2z, so the estimates are 2z and 2z * eps for the same eps.
    d_mu, d_sigma = pathwise_gradient(lambda z: z**2, MU, SIGMA, 1000, generator=gen(2))
    eps = torch.randn(1000, generator=gen(2), dtype=torch.float64)
    z = MU + SIGMA * eps
    torch.testing.assert_close(d_mu, 2 * z)
    torch.testing.assert_close(d_sigma, 2 * z * eps)
    # Var(2z) = 4 sigma^2 for one sample.
    big, _ = pathwise_gradient(lambda z: z**2, MU, SIGMA, N, generator=gen(3))
    assert abs(big.var().item() / (4 * SIGMA**2) - 1) < 0.02


def test_score_matches_autograd_of_log_prob():
    # With h = 1 the estimates are the score itself: compare with autograd on Normal.log_prob.
    d_mu, d_sigma = score_function_gradient(torch.ones_like, MU, SIGMA, 50, generator=gen(4))
    z = MU + SIGMA * torch.randn(50, generator=gen(4), dtype=torch.float64)
    mu = torch.full((50,), MU, dtype=torch.float64, requires_grad=True)
    sigma = torch.full((50,), SIGMA, dtype=torch.float64, requires_grad=True)
    ref_mu, ref_sigma = torch.autograd.grad(Normal(mu, sigma).log_prob(z).sum(), (mu, sigma))
    torch.testing.assert_close(d_mu, ref_mu)
    torch.testing.assert_close(d_sigma, ref_sigma)


def test_score_function_handles_a_step_function_where_pathwise_is_blind():
    # E[1{z > 0}] = Phi(m/s): d/dmu = phi(m/s) / s, d/dsigma = -m phi(m/s) / s^2 (m = mu, s = sigma)
    def step(z):
        return (z > 0).to(z.dtype)

    phi = math.exp(-0.5 * (MU / SIGMA) ** 2) / math.sqrt(2 * math.pi)
    d_mu, d_sigma = score_function_gradient(step, MU, SIGMA, N, generator=gen(5))
    assert_within_stderr(d_mu, phi / SIGMA)
    assert_within_stderr(d_sigma, -MU / SIGMA**2 * phi)
    with pytest.raises(ValueError, match="no gradient path"):
        pathwise_gradient(step, MU, SIGMA, 100, generator=gen(5))
    # Written with sign(), the step has a gradient path, but f' = 0 almost everywhere: biased.
    p_mu, p_sigma = pathwise_gradient(lambda z: (torch.sign(z) + 1) / 2, MU, SIGMA, 100)
    assert (p_mu == 0).all() and (p_sigma == 0).all()


def test_baseline_keeps_the_mean_and_cuts_the_variance():
    def shifted(z):
        return z**2 + 10.0

    plain = score_function_gradient(shifted, MU, SIGMA, N, generator=gen(6))[0]
    based = score_function_gradient(shifted, MU, SIGMA, N, baseline=10.0, generator=gen(6))[0]
    assert_within_stderr(plain, 2 * MU)
    assert_within_stderr(based, 2 * MU)
    assert based.var() < plain.var() / 10
    same = score_function_gradient(lambda z: z**2, MU, SIGMA, N, generator=gen(6))[0]
    torch.testing.assert_close(based, same)


def test_tensor_parameters_give_one_estimate_per_entry():
    mu = torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64)
    sigma = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    for estimator in (pathwise_gradient, score_function_gradient):
        d_mu, d_sigma = estimator(lambda z: z**2, mu, sigma, N, generator=gen(7))
        assert d_mu.shape == d_sigma.shape == (N, 3)
        assert_within_stderr(d_mu, 2 * mu)
        assert_within_stderr(d_sigma, 2 * sigma)


@pytest.mark.parametrize("estimator", [pathwise_gradient, score_function_gradient])
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            (torch.sin, 0.0, -1.0, 10),
            "sigma: expected standard deviations > 0, got min -1; pass sigma, not log sigma^2",
        ),
        ((torch.sin, math.nan, 1.0, 10), "mu: expected finite values, got 1 non-finite"),
        ((torch.sin, 0.0, math.inf, 10), "sigma: expected finite values, got 1 non-finite"),
        ((torch.sin, 0.0, 1.0, 0), "n: expected an int >= 1, got 0; n is the number of samples"),
        ((torch.sin, 0.0, 1.0, True), "n: expected an int >= 1, got True (a bool)"),
        ((torch.sin, 0.0, 1.0, 1e3), "n: expected an int >= 1, got 1000.0 (a float)"),
        (
            (torch.sin, torch.zeros(2), torch.ones(3), 10),
            "mu, sigma: expected floats or float tensors of one shape, got (2,)",
        ),
        (
            (lambda z: z.sum(), 0.0, 1.0, 10),
            "h: expected an elementwise function returning (10,), got ()",
        ),
        (("sin", 0.0, 1.0, 10), "h: expected a function of z such as torch.sin, got 'sin'"),
    ],
)
def test_bad_inputs_name_expected_and_got(estimator, args, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        estimator(*args)


def test_baseline_must_be_a_finite_number():
    message = "baseline: expected a finite number in (-inf, inf), got nan (a float)"
    with pytest.raises(ValueError, match=re.escape(message)):
        score_function_gradient(torch.sin, 0.0, 1.0, 10, baseline=math.nan)
