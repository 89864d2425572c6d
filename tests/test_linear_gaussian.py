"""Linear-Gaussian formulas against independent computations: torch.distributions, quadrature,
Bayes' rule on a grid, Monte Carlo."""

import math
import re

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from vae_tutorial.linear_gaussian import LinearGaussian, gaussian_kl

F64 = torch.float64


def random_gaussian(batch, dim, seed):
    """A batch of means (B, dim) and one SPD covariance (dim, dim), float64."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(batch, dim, generator=g, dtype=F64)
    a = torch.randn(dim, dim, generator=g, dtype=F64)
    return mean, a @ a.T / dim + 0.1 * torch.eye(dim, dtype=F64)


def data(model, n, seed=1):
    return model.sample(n, generator=torch.Generator().manual_seed(seed))[0]


def test_log_evidence_matches_multivariate_normal_log_prob():
    model = LinearGaussian.random(6, 3, 0.7, seed=0)
    x = data(model, 5)
    w, b = model.weight, model.bias
    ref = MultivariateNormal(b, covariance_matrix=w @ w.T + 0.49 * torch.eye(6, dtype=F64))
    torch.testing.assert_close(model.log_evidence(x), ref.log_prob(x), rtol=0, atol=1e-10)


def test_log_evidence_matches_quadrature_over_z_in_1d():
    # p(x) = integral of p(x|z) p(z) dz, by the trapezoid rule on a fine grid.
    model = LinearGaussian.random(3, 1, 0.5, seed=2)
    x = data(model, 4)
    z = torch.linspace(-12, 12, 200_001, dtype=F64).reshape(-1, 1, 1)  # (G, 1, 1)
    log_joint = model.log_likelihood(x, z) + Normal(0.0, 1.0).log_prob(z[:, :, 0])  # (G, B)
    log_px = torch.log(torch.trapezoid(torch.exp(log_joint), z[:, 0, 0], dim=0))
    torch.testing.assert_close(model.log_evidence(x), log_px, rtol=0, atol=1e-8)


def test_log_likelihood_matches_normal_log_prob():
    model = LinearGaussian.random(4, 2, 0.3, seed=3)
    x, z = model.sample(7, generator=torch.Generator().manual_seed(0))
    ref = Normal(z @ model.weight.T + model.bias, 0.3).log_prob(x).sum(-1)
    torch.testing.assert_close(model.log_likelihood(x, z), ref, rtol=0, atol=1e-10)


def test_posterior_matches_bayes_rule_on_a_grid_in_1d():
    # p(z|x) proportional to p(x|z) p(z): normalise on a grid, then take its mean and variance.
    model = LinearGaussian.random(3, 1, 0.8, seed=4)
    x = data(model, 3)
    z = torch.linspace(-12, 12, 200_001, dtype=F64)
    log_joint = model.log_likelihood(x, z.reshape(-1, 1, 1)) + Normal(0.0, 1.0).log_prob(z)[:, None]
    dens = torch.exp(log_joint - log_joint.max(0).values)  # (G, B), unnormalised
    dens = dens / torch.trapezoid(dens, z, dim=0)
    grid_mean = torch.trapezoid(dens * z[:, None], z, dim=0)  # (B,)
    grid_var = torch.trapezoid(dens * (z[:, None] - grid_mean) ** 2, z, dim=0)  # (B,)
    mean, cov = model.posterior(x)
    torch.testing.assert_close(mean[:, 0], grid_mean, rtol=0, atol=1e-8)
    torch.testing.assert_close(cov[0, 0].expand(3), grid_var, rtol=0, atol=1e-8)


def test_posterior_density_is_bayes_rule_pointwise():
    # log p(z|x) = log p(x|z) + log p(z) - log p(x) at random z, for a 3-D latent.
    model = LinearGaussian.random(5, 3, 0.6, seed=5)
    x = data(model, 4)
    z = torch.randn(10, 4, 3, generator=torch.Generator().manual_seed(6), dtype=F64)
    mean, cov = model.posterior(x)
    lhs = MultivariateNormal(mean, covariance_matrix=cov).log_prob(z)  # (10, 4)
    prior = MultivariateNormal(torch.zeros(3, dtype=F64), torch.eye(3, dtype=F64))
    rhs = model.log_likelihood(x, z) + prior.log_prob(z) - model.log_evidence(x)
    torch.testing.assert_close(lhs, rhs, rtol=0, atol=1e-9)


def test_gaussian_kl_matches_torch_distributions():
    mean_q, cov_q = random_gaussian(4, 3, seed=7)
    mean_p, cov_p = random_gaussian(4, 3, seed=8)
    ref = kl_divergence(
        MultivariateNormal(mean_q, covariance_matrix=cov_q),
        MultivariateNormal(mean_p, covariance_matrix=cov_p),
    )
    torch.testing.assert_close(gaussian_kl(mean_q, cov_q, mean_p, cov_p), ref, rtol=0, atol=1e-10)
    assert (gaussian_kl(mean_q, cov_q, mean_q, cov_q).abs() < 1e-12).all()


def test_elbo_matches_monte_carlo():
    # ELBO(q) = E_q[log p(x|z) + log p(z) - log q(z)], averaged over samples z ~ q.
    model = LinearGaussian.random(5, 2, 0.9, seed=9)
    x = data(model, 3)
    mean, cov = random_gaussian(3, 2, seed=10)
    torch.manual_seed(0)
    q = MultivariateNormal(mean, covariance_matrix=cov)
    z = q.sample((200_000,))  # (S, B, d)
    prior = MultivariateNormal(torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64))
    log_lik = Normal(z @ model.weight.T + model.bias, 0.9).log_prob(x).sum(-1)  # (S, B)
    terms = log_lik + prior.log_prob(z) - q.log_prob(z)  # (S, B)
    stderr = terms.std(0) / math.sqrt(terms.shape[0])
    assert ((model.elbo(x, mean, cov) - terms.mean(0)).abs() < 4 * stderr).all()
    rec = model.expected_log_likelihood(x, mean, cov)
    assert ((rec - log_lik.mean(0)).abs() < 4 * log_lik.std(0) / math.sqrt(z.shape[0])).all()


def test_identity_log_evidence_is_elbo_plus_kl_and_tight_at_the_posterior():
    model = LinearGaussian.random(8, 3, 0.4, seed=11)
    x = data(model, 6)
    mean, cov = random_gaussian(6, 3, seed=12)
    lhs = model.log_evidence(x)
    rhs = model.elbo(x, mean, cov) + model.kl_to_posterior(x, mean, cov)
    torch.testing.assert_close(lhs, rhs, rtol=0, atol=1e-10)
    assert (model.kl_to_posterior(x, mean, cov) > 0).all()
    post_mean, post_cov = model.posterior(x)
    torch.testing.assert_close(model.elbo(x, post_mean, post_cov), lhs, rtol=0, atol=1e-10)


def test_batched_covariance_equals_shared_covariance():
    model = LinearGaussian.random(4, 2, 0.5, seed=13)
    x = data(model, 3)
    mean, cov = random_gaussian(3, 2, seed=14)
    batched = cov.expand(3, 2, 2).clone()
    torch.testing.assert_close(model.elbo(x, mean, batched), model.elbo(x, mean, cov))


def test_sample_has_the_evidence_covariance():
    model = LinearGaussian.random(3, 2, 0.5, seed=15)
    n = 100_000
    x = data(model, n)
    c = model.evidence_cov()  # (P, P)
    # Gaussian x: SE of a mean is sqrt(C_ii / n); of a covariance sqrt((C_ii C_jj + C_ij^2) / n)
    se_mean = (c.diagonal() / n).sqrt()
    se_cov = ((c.diagonal()[:, None] * c.diagonal()[None, :] + c**2) / n).sqrt()
    assert ((x.mean(0) - model.bias).abs() < 4 * se_mean).all()  # 4 standard errors
    assert ((torch.cov(x.T) - c).abs() < 4 * se_cov).all()


def nan_at(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[0] = math.nan
    return t


MODEL = LinearGaussian.random(4, 2, 0.5, seed=16)
X = data(MODEL, 3)
MEAN, COV = random_gaussian(3, 2, seed=17)
SKEWED = COV + torch.tensor([[0.0, 0.5], [-0.5, 0.0]], dtype=F64)  # not symmetric


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: MODEL.log_evidence(X[:, :3]), "x: expected shape (B, 4), got (3, 3)"),
        (lambda: MODEL.log_evidence(X.float()), "x: expected dtype torch.float64 (the model's)"),
        (lambda: MODEL.log_evidence(X.tolist()), "x: expected a torch.Tensor (B, 4), got [["),
        (lambda: MODEL.log_evidence(nan_at(X)), "x: expected finite values, got 1 non-finite"),
        (lambda: MODEL.elbo(X, MEAN[:, :1], COV), "q mean: expected shape (B, 2), got (3, 1)"),
        (
            lambda: MODEL.elbo(X, MEAN, COV[:1]),
            "q cov: expected shape (2, 2) or (B, 2, 2) with B = 3, got (1, 2)",
        ),
        (
            lambda: MODEL.elbo(X, MEAN, COV.float()),
            "q cov: expected dtype torch.float64 (the mean's), got torch.float32",
        ),
        (lambda: MODEL.elbo(X, MEAN[:2], COV), "q mean: expected 3 rows (one per x), got 2"),
        (lambda: MODEL.elbo(X, nan_at(MEAN), COV), "q mean: expected finite values"),
        (lambda: MODEL.elbo(X, MEAN, nan_at(COV)), "q cov: expected finite values"),
        (
            lambda: MODEL.elbo(X, MEAN, -COV),
            "q cov: expected a positive definite matrix, got one that is not (Cholesky failed)",
        ),
        (
            lambda: MODEL.elbo(X, MEAN, SKEWED),
            "q cov: expected a symmetric matrix, got a matrix with |m - m^T| up to 1; "
            "symmetrise it with (m + m.mT) / 2",
        ),
        (
            lambda: MODEL.kl_to_posterior(X, MEAN, SKEWED.expand(3, 2, 2)),
            "q cov: expected a symmetric matrix",
        ),
        (lambda: gaussian_kl(MEAN, SKEWED, MEAN, SKEWED), "q cov: expected a symmetric matrix"),
        (lambda: gaussian_kl(MEAN, COV, MEAN, SKEWED), "p cov: expected a symmetric matrix"),
        (
            lambda: gaussian_kl(MEAN, COV, MEAN[:2], COV),
            "gaussian_kl: expected q and p with one dtype and batch sizes B or 1, "
            "got (3, 2) torch.float64 and (2, 2) torch.float64",
        ),
        (lambda: gaussian_kl([0.0], COV, MEAN, COV), "q mean: expected a torch.Tensor (B, D)"),
        (
            lambda: MODEL.log_likelihood(X, torch.zeros(3, 3, dtype=F64)),
            "z: expected shape (..., 3, 2), got (3, 3)",
        ),
        (
            lambda: MODEL.log_likelihood(X, nan_at(torch.zeros(3, 2, dtype=F64))),
            "z: expected finite values, got 1 non-finite (first: nan)",
        ),
        (
            lambda: MODEL.log_likelihood(X, torch.zeros(3, 2)),
            "z: expected dtype torch.float64 (the model's), got torch.float32",
        ),
        (lambda: MODEL.sample(True), "n: expected an int >= 1, got True (a bool)"),
        (lambda: MODEL.sample(0), "n: expected an int >= 1, got 0"),
        (
            lambda: LinearGaussian(MODEL.weight, MODEL.bias, 0.0),
            "LinearGaussian.noise_std: expected a finite number in (0, inf), got 0.0",
        ),
        (
            lambda: LinearGaussian(MODEL.weight, MODEL.bias, True),
            "LinearGaussian.noise_std: expected a finite number in (0, inf), got True (a bool)",
        ),
        (
            lambda: LinearGaussian(MODEL.weight, MODEL.bias[:2], 0.5),
            "LinearGaussian.bias: expected shape (4,) and dtype torch.float64",
        ),
        (
            lambda: LinearGaussian(nan_at(MODEL.weight), MODEL.bias, 0.5),
            "LinearGaussian.weight: expected finite values",
        ),
        (
            lambda: LinearGaussian.random(0, 2, 0.5),
            "data_dim: expected an int >= 1, got 0",
        ),
        (
            lambda: LinearGaussian.random(4, 2.0, 0.5),
            "latent_dim: expected an int >= 1, got 2.0 (a float)",
        ),
    ],
)
def test_bad_inputs_name_expected_and_got(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


def test_a_covariance_symmetric_to_rounding_is_accepted():
    """A covariance computed as A A^T in float32 is symmetric only up to rounding: accepted."""
    a = torch.randn(3, 3, generator=torch.Generator().manual_seed(0))
    cov = a @ a.T + torch.eye(3)
    cov[0, 1] += 1e-6
    mean = torch.zeros(1, 3)
    # KL(q || q) = 0, up to float32 rounding: tr(C^-1 C) - d and the log-determinants lose about
    # kappa(C) * 2^-24 each, per dimension: 3 * d * kappa * 2^-24 bounds their sum
    kappa = torch.linalg.cond(cov.double()).item()
    assert gaussian_kl(mean, cov, mean, cov).abs().item() < 3 * 3 * kappa * 2**-24
