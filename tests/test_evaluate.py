"""Evaluation against numerical integration over a 1-D latent, torch.distributions and numpy."""

import copy
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from vae_tutorial.config import ModelConfig
from vae_tutorial.elbo import kl_to_standard_normal
from vae_tutorial.evaluate import (
    active_units,
    encode_dataset,
    evaluate_elbo,
    kl_per_latent,
    nats_to_bits_per_dim,
)
from vae_tutorial.iwae import importance_weighted_bound, log_importance_weights
from vae_tutorial.models import VAE, Autoencoder


def log_integral(log_f: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """log of the trapezoid-rule integral of exp(log_f) over the grid z, without underflow."""
    top = log_f.max()
    return torch.log(torch.trapezoid(torch.exp(log_f - top), z)) + top


@pytest.fixture(scope="module")
def tiny() -> SimpleNamespace:
    """A VAE with a 1-D latent, one binary image x, and the exact quantities by integration over z.

    q(z|x) is set by hand to N(m + 3, 1), where m is the posterior mean (the posterior's standard
    deviation is about 0.26): a poor fit on purpose, so that L_k needs large k to close the gap.
    Its tails are as heavy as the prior's, which bound the posterior's, so Var_q(w) is finite.
    """
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent_dim=1, hidden_dim=8))
    with torch.no_grad():
        probs = model.decode_mean(torch.tensor([[0.5]]))
    x = torch.bernoulli(probs, generator=torch.Generator().manual_seed(1))  # (1, 784)

    reference = copy.deepcopy(model).double()
    z = torch.linspace(-12.0, 16.0, 14_001, dtype=torch.float64)  # the grid, step 0.002
    with torch.no_grad():
        logits = reference.decode(z[:, None])  # (G, 784)
    log_px_z = Bernoulli(logits=logits).log_prob(x.double()).sum(-1)  # (G,)
    log_joint = log_px_z + Normal(0.0, 1.0).log_prob(z)  # log p(x, z), (G,)
    log_px = log_integral(log_joint, z).item()  # log p(x) = log \int p(x, z) dz
    posterior = torch.exp(log_joint - log_px)  # p(z | x), (G,)
    post_mean = torch.trapezoid(posterior * z, z).item()

    with torch.no_grad():
        model.to_mu.weight.zero_()
        model.to_mu.bias.fill_(post_mean + 3.0)
        model.to_logvar.weight.zero_()
        model.to_logvar.bias.zero_()
        mu, logvar = model.encode(x)  # (1, 1) each
    log_q = Normal(mu.double()[0, 0], torch.exp(0.5 * logvar.double()[0, 0])).log_prob(z)
    q = log_q.exp()  # (G,)

    def expect_q(f: torch.Tensor) -> float:
        return torch.trapezoid(q * f, z).item()

    log_w = log_joint - log_q  # log p(x, z) - log q(z | x), (G,)
    for integrand in (posterior, q, torch.exp(2 * (log_w - log_px)) * q):  # the grid holds them
        assert max(integrand[0], integrand[-1]) < 1e-12 * integrand.max()
    elbo = expect_q(log_w)  # E_q[log p(x, z) - log q(z | x)]
    reconstruction = expect_q(log_px_z)  # E_q[log p(x | z)]
    return SimpleNamespace(
        model=model,
        x=x,
        mu=mu,
        logvar=logvar,
        z=z,
        log_joint=log_joint,
        post_mean=post_mean,
        log_px=log_px,
        elbo=elbo,
        reconstruction=reconstruction,
        sd_reconstruction=math.sqrt(expect_q((log_px_z - reconstruction) ** 2)),
        sd_log_w=math.sqrt(expect_q((log_w - elbo) ** 2)),
        kl_to_posterior=expect_q(log_q - (log_joint - log_px)),
        chi2=expect_q(torch.exp(2 * (log_w - log_px))) - 1,  # Var_q(w / p(x))
    )


def test_elbo_is_log_px_minus_the_kl_to_the_posterior(tiny):
    """log p(x) - ELBO = KL(q(z|x) || p(z|x)) > 0; all by integration except the closed-form KL."""
    kl = kl_to_standard_normal(tiny.mu.double(), tiny.logvar.double()).item()
    # The trapezoid rule with step 0.002 on Gaussian-weighted smooth integrands (sd 1 and 0.26) is
    # exact to float64 rounding (its error falls like exp(-2 pi^2 sd^2 / step^2)); float64 sums of
    # 14,001 grid points, each under 1e3 nats: 14001 * 2^-52 * 1e3 < 4e-9 nats.
    assert tiny.reconstruction - kl == pytest.approx(tiny.elbo, abs=4e-9)
    assert tiny.log_px - tiny.elbo == pytest.approx(tiny.kl_to_posterior, abs=4e-9)
    assert tiny.kl_to_posterior > 1.0  # the gap this q leaves


def test_l1_equals_the_elbo_in_expectation(tiny):
    n = 10_000
    bound = importance_weighted_bound(
        tiny.model, tiny.x.expand(n, -1), 1, generator=torch.Generator().manual_seed(0)
    )
    assert abs(bound.mean().item() - tiny.elbo) < 4 * tiny.sd_log_w / math.sqrt(n)


def test_evaluate_elbo_matches_integration(tiny):
    n = 10_000
    images = tiny.x.expand(n, -1)
    result = evaluate_elbo(tiny.model, images, batch_size=4096, seed=0)
    kl = kl_to_standard_normal(tiny.mu, tiny.logvar).item()
    # closed form, no sampling noise; float32 sums of <= 4096 equal KLs (the batch): relative
    # error <= log2(4096) * 2^-24 = 7.2e-7 with pairwise summation
    assert result["kl"] == pytest.approx(kl, rel=1e-6)
    se = tiny.sd_reconstruction / math.sqrt(n)
    assert abs(result["reconstruction"] + tiny.reconstruction) < 4 * se
    assert abs(result["neg_elbo"] + tiny.elbo) < 4 * se
    assert result["neg_elbo"] == pytest.approx(result["reconstruction"] + result["kl"])
    assert result["bits_per_dim"] == pytest.approx(result["neg_elbo"] / (784 * math.log(2)))
    few = images[:100]
    assert evaluate_elbo(tiny.model, few.reshape(100, 1, 28, 28)) == evaluate_elbo(tiny.model, few)
    assert evaluate_elbo(tiny.model, few, seed=1) != evaluate_elbo(tiny.model, few)


def test_lk_rises_towards_log_px(tiny):
    """Means of r draws of L_k, k = 1, 10, 100, 1000: rising, below log p(x), closing the gap."""
    r = 128
    generator = torch.Generator().manual_seed(0)
    means, ses = [], []
    for k in (1, 10, 100, 1000):
        x = tiny.x.expand(r, -1)
        bound = importance_weighted_bound(tiny.model, x, k, generator=generator, check=False)
        means.append(bound.mean().item())
        ses.append(bound.std().item() / math.sqrt(r))
    assert means == sorted(set(means))  # strictly increasing
    assert all(m < tiny.log_px + 4 * se for m, se in zip(means, ses, strict=True))
    assert abs(means[0] - tiny.elbo) < 4 * ses[0]
    assert tiny.log_px - means[-1] < 0.01 * (tiny.log_px - tiny.elbo)  # 99% of the gap closed


def test_l5000_in_chunks_reaches_log_px(tiny):
    """For large k, E[L_k] = log p(x) - chi2 / (2k) and sd(L_k) = sqrt(chi2 / k) (delta method)."""
    k, b = 5000, 8
    bound = importance_weighted_bound(
        tiny.model, tiny.x.expand(b, -1), k, chunk=500, generator=torch.Generator().manual_seed(0)
    )
    bias, se = tiny.chi2 / (2 * k), math.sqrt(tiny.chi2 / k / b)
    assert abs(bound.mean().item() - (tiny.log_px - bias)) < 4 * se


def gaussian_proposal_by_integration(tiny: SimpleNamespace, mean: float, logvar: float):
    """q = N(mean, exp(logvar)) on the grid, in float64: its ELBO, sd(log w), Var_q(w / p(x))."""
    z, log_joint = tiny.z, tiny.log_joint
    log_q = Normal(mean, math.exp(0.5 * logvar)).log_prob(z)  # (G,)
    q, log_w = log_q.exp(), log_joint - log_q  # q(z), log p(x, z) - log q(z): (G,) each
    chi2_integrand = torch.exp(2 * (log_w - tiny.log_px)) * q
    for integrand in (q, chi2_integrand):  # the grid holds them
        assert max(integrand[0], integrand[-1]) < 1e-12 * integrand.max()
    elbo = torch.trapezoid(q * log_w, z).item()
    sd_log_w = math.sqrt(torch.trapezoid(q * (log_w - elbo) ** 2, z).item())
    return elbo, sd_log_w, torch.trapezoid(chi2_integrand, z).item() - 1


def test_a_given_proposal_replaces_the_encoders_q(tiny):
    """proposal=(mu, logvar): z_i ~ that q and w_i = p(x, z_i) / q(z_i), against integration.

    Two proposals in alternating rows, neither the encoder's N(m + 3, 1): each row's L_1 averages
    to its own q's ELBO, and L_k of the better one to log p(x) - chi2 / (2k) (delta method).
    """
    n, model = 10_000, tiny.model
    means, logvars = (tiny.post_mean, tiny.post_mean + 1.0), (0.0, math.log(0.25))
    mu = torch.tensor(means).repeat(n)[:, None]  # rows 0, 2, 4, ... get q_0; 1, 3, ... q_1
    logvar = torch.tensor(logvars).repeat(n)[:, None]  # (2n, 1) each
    x = tiny.x.expand(2 * n, -1)
    generator = torch.Generator().manual_seed(0)
    bound = importance_weighted_bound(model, x, 1, proposal=(mu, logvar), generator=generator)
    for row, (mean, lv) in enumerate(zip(means, logvars, strict=True)):
        elbo, sd_log_w, _ = gaussian_proposal_by_integration(tiny, mean, lv)
        assert abs(elbo - tiny.elbo) > 1  # far from the encoder's q: ignoring it would show
        assert abs(bound[row::2].mean().item() - elbo) < 4 * sd_log_w / math.sqrt(n)

    k, b = 1000, 8
    _, _, chi2 = gaussian_proposal_by_integration(tiny, means[0], logvars[0])
    proposal = (mu[: 2 * b : 2], logvar[: 2 * b : 2])  # (b, 1) each, all q_0
    bound = importance_weighted_bound(
        model, x[:b], k, chunk=300, proposal=proposal, generator=generator
    )
    bias, se = chi2 / (2 * k), math.sqrt(chi2 / k / b)
    assert abs(bound.mean().item() - (tiny.log_px - bias)) < 4 * se


def test_the_encoders_own_q_as_proposal_gives_the_same_draws(small):
    model, images = small
    x = images[:3]
    plain = importance_weighted_bound(
        model, x, 50, chunk=7, generator=torch.Generator().manual_seed(5)
    )
    given = importance_weighted_bound(
        model, x, 50, chunk=7, proposal=model.encode(x), generator=torch.Generator().manual_seed(5)
    )
    assert torch.equal(plain, given)


@pytest.fixture(scope="module")
def small() -> tuple[VAE, torch.Tensor]:
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent_dim=6, hidden_dim=16))
    images = torch.bernoulli(
        torch.full((300, 784), 0.3), generator=torch.Generator().manual_seed(0)
    )
    return model, images


def test_log_importance_weights_match_explicit_densities(small):
    """log w = log p(x|z) + log p(z) - log q(z|x) with torch.distributions, from the same eps."""
    model, images = small
    model, x, k = copy.deepcopy(model).double(), images[:3].double(), 5  # float64, as the reference
    log_w = log_importance_weights(model, x, k, generator=torch.Generator().manual_seed(3))
    mu, logvar = model.encode(x)
    eps = torch.randn((k, 3, 6), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    z = mu + torch.exp(0.5 * logvar) * eps  # (k, 3, 6)
    logits = model.decode(z.reshape(-1, 6)).reshape(k, 3, 784)
    expected = (
        Bernoulli(logits=logits).log_prob(x).sum(-1)
        + Normal(0.0, 1.0).log_prob(z).sum(-1)
        - Normal(mu, torch.exp(0.5 * logvar)).log_prob(z).sum(-1)
    )
    # float64 sums of 784 terms, each under 1e2: 784 * 2^-52 * 1e2 < 2e-11 nats
    torch.testing.assert_close(log_w, expected, rtol=0, atol=1e-10)
    log_w.sum().backward()  # differentiable, for an importance-weighted objective
    assert model.to_mu.weight.grad is not None


def test_chunks_combine_like_one_logsumexp(small):
    """Chunked L_k equals logsumexp over the same weights drawn all at once, minus log k."""
    model, images = small
    model, x, k, chunk = copy.deepcopy(model).double(), images[:3].double(), 50, 7  # float64
    chunked = importance_weighted_bound(
        model, x, k, chunk=chunk, generator=torch.Generator().manual_seed(5)
    )
    generator = torch.Generator().manual_seed(5)
    sizes = [chunk] * (k // chunk) + [k % chunk]
    log_w = torch.cat([log_importance_weights(model, x, s, generator=generator) for s in sizes])
    assert log_w.shape == (k, 3)
    # float64 log-sum-exps of 50 weights, |L_k| < 1e3: a few roundings of 2^-52 * 1e3 < 1e-12 each
    expected = torch.logsumexp(log_w, 0) - math.log(k)
    torch.testing.assert_close(chunked, expected, rtol=0, atol=1e-10)


def test_encode_dataset_in_batches_equals_one_pass(small):
    """Batches give one pass's codes, to float64 rounding (float32 products vary with the batch)."""
    model, images = small
    model, images = copy.deepcopy(model).double(), images.double()
    torch.testing.assert_close(
        encode_dataset(model, images, batch_size=37), model.encode(images)[0]
    )
    torch.manual_seed(0)
    ae = Autoencoder(ModelConfig(kind="ae", latent_dim=4, hidden_dim=16)).double()
    torch.testing.assert_close(encode_dataset(ae, images, batch_size=64), ae.encode(images))


def test_kl_per_latent_matches_torch_distributions(small):
    model, images = small
    model, images = copy.deepcopy(model).double(), images.double()  # float64, as the reference
    mu, logvar = model.encode(images)
    expected = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).mean(0)
    torch.testing.assert_close(kl_per_latent(model, images, batch_size=64), expected.detach())


def test_active_units_match_numpy_covariance(small):
    """Cov_x(E_q[z_u]) from np.cov; units 0-2 switched off by zeroing their rows of the mu layer."""
    model, images = small
    model, images = copy.deepcopy(model).double(), images.double()  # float64, as np.cov
    with torch.no_grad():
        model.to_mu.weight[:3] = 0
        model.to_mu.weight[3:] *= 10
    count, variances = active_units(model, images, batch_size=64)
    mu = model.encode(images)[0].detach().numpy()
    expected = np.diag(np.cov(mu, rowvar=False))
    # float64 variances of 300 codes: 300 * 2^-52 relative < 1e-13; the off units are exactly 0
    np.testing.assert_allclose(variances.numpy(), expected, rtol=1e-12, atol=0)
    assert count == int((expected > 0.01).sum()) == 3
    assert active_units(model, images, threshold=0.0)[0] == 3
    assert active_units(model, images, threshold=float(expected.max()))[0] == 0


def test_nats_to_bits_per_dim():
    assert nats_to_bits_per_dim(784 * math.log(2)) == pytest.approx(1.0)
    assert nats_to_bits_per_dim(math.log(2), dims=1) == pytest.approx(1.0)
    torch.testing.assert_close(
        nats_to_bits_per_dim(torch.tensor([0.0, 2 * 784 * math.log(2)], dtype=torch.float64)),
        torch.tensor([0.0, 2.0], dtype=torch.float64),
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda ae, vae, x: evaluate_elbo(ae, x),
            "evaluate_elbo: expected a VAE (kind 'vae') or a conditional VAE "
            "(kind 'cvae'), got an autoencoder (kind 'ae'); an autoencoder has no q(z|x) and no "
            "ELBO",
        ),
        (
            lambda ae, vae, x: importance_weighted_bound(ae, x, 10),
            "importance_weighted_bound: expected a VAE (kind 'vae') or a conditional VAE "
            "(kind 'cvae'), got an autoencoder (kind 'ae')",
        ),
        (
            lambda ae, vae, x: log_importance_weights(ae, x, 10),
            "log_importance_weights: expected a VAE (kind 'vae') or a conditional VAE "
            "(kind 'cvae'), got an autoencoder (kind 'ae')",
        ),
        (
            lambda ae, vae, x: kl_per_latent(ae, x),
            "kl_per_latent: expected a VAE (kind 'vae') or a conditional VAE "
            "(kind 'cvae'), got an autoencoder (kind 'ae')",
        ),
        (
            lambda ae, vae, x: active_units(ae, x),
            "active_units: expected a VAE (kind 'vae') or a conditional VAE "
            "(kind 'cvae'), got an autoencoder (kind 'ae')",
        ),
        (
            lambda ae, vae, x: evaluate_elbo(vae, x[:0]),
            "evaluate_elbo: expected at least 1 image(s), got 0",
        ),
        (
            lambda ae, vae, x: kl_per_latent(vae, x[:0]),
            "kl_per_latent: expected at least 1 image(s), got 0",
        ),
        (
            lambda ae, vae, x: encode_dataset(ae, x[:0]),
            "encode_dataset: expected at least 1 image(s), got 0",
        ),
        (
            lambda ae, vae, x: active_units(vae, x[:1]),
            "active_units: expected at least 2 image(s), got 1",
        ),
        (
            lambda ae, vae, x: active_units(vae, x, threshold=-1.0),
            "threshold: expected a finite number in [0, inf), got -1.0 (a float)",
        ),
        (
            lambda ae, vae, x: evaluate_elbo(vae, x, batch_size=0),
            "batch_size: expected an int >= 1, got 0",
        ),
        (
            lambda ae, vae, x: encode_dataset(vae, x, 2.5),
            "batch_size: expected an int >= 1, got 2.5",
        ),
        (lambda ae, vae, x: importance_weighted_bound(vae, x, 0), "k: expected an int >= 1, got 0"),
        (
            lambda ae, vae, x: log_importance_weights(vae, x, 1.5),
            "k: expected an int >= 1, got 1.5",
        ),
        (
            lambda ae, vae, x: importance_weighted_bound(vae, x, 10, chunk=0),
            "chunk: expected an int >= 1, got 0",
        ),
        (
            lambda ae, vae, x: importance_weighted_bound(vae, x * 0.5, 10),
            "importance_weighted_bound: x: expected binary values in {0, 1}, "
            "got 936 other value(s) (first: 0.5); binarize x",
        ),
        (
            lambda ae, vae, x: log_importance_weights(vae, x * 0.5, 10),
            "log_importance_weights: x: expected binary values in {0, 1}",
        ),
        (
            lambda ae, vae, x: evaluate_elbo(vae, x * 0.5),
            "bernoulli_log_likelihood: x: expected binary values in {0, 1}, "
            "got 936 other value(s) (first: 0.5)",
        ),
        (
            lambda ae, vae, x: importance_weighted_bound(vae, x[:, :100], 10),
            "x: expected shape (B, 784) or (B, 1, 28, 28), got (4, 100)",
        ),
        (lambda ae, vae, x: nats_to_bits_per_dim(1.0, dims=0), "dims: expected an int >= 1, got 0"),
        (
            lambda ae, vae, x: evaluate_elbo(vae, x, batch_size=True),
            "batch_size: expected an int >= 1, got True (a bool)",
        ),
        (
            lambda ae, vae, x: evaluate_elbo(vae, x, seed=-1),
            "seed: expected an int >= 0, got -1",
        ),
        (
            lambda ae, vae, x: evaluate_elbo(vae, x, likelihood="gauss"),
            "likelihood: expected one of ('bernoulli', 'continuous_bce', 'continuous_bernoulli'), "
            "got 'gauss'",
        ),
        (
            lambda ae, vae, x: evaluate_elbo(vae, x.tolist()),
            "evaluate_elbo: images: expected a torch.Tensor (N, 784) or (N, 1, 28, 28), got [[",
        ),
        (
            lambda ae, vae, x: encode_dataset(vae.state_dict(), x),
            "encode_dataset: expected a VAE (kind 'vae') or a conditional VAE (kind 'cvae') or an "
            "autoencoder (kind 'ae'), got OrderedDict(",
        ),
    ],
)
def test_bad_inputs_name_expected_and_got(small, call, message):
    vae, images = small
    torch.manual_seed(0)
    ae = Autoencoder(ModelConfig(kind="ae", latent_dim=6, hidden_dim=16))
    with pytest.raises(ValueError, match=re.escape(message)):
        call(ae, vae, images[:4])


def test_a_model_with_non_finite_weights_is_refused_not_evaluated(small):
    """A diverged run's weights give NaN bounds; each function says so before computing."""
    model, images = small
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.to_logvar.weight[0, 0] = math.nan
    message = (
        "expected a model with finite weights, got 1 NaN or infinite values (in to_logvar.weight); "
        "the run that made it diverged"
    )
    x = images[:4]
    for fn, call in [
        ("evaluate_elbo", lambda: evaluate_elbo(model, x)),
        ("importance_weighted_bound", lambda: importance_weighted_bound(model, x, 3)),
        ("log_importance_weights", lambda: log_importance_weights(model, x, 3)),
        ("encode_dataset", lambda: encode_dataset(model, x)),
        ("kl_per_latent", lambda: kl_per_latent(model, x)),
        ("active_units", lambda: active_units(model, x)),
    ]:
        with pytest.raises(ValueError, match=re.escape(f"{fn}: {message}")):
            call()
    assert importance_weighted_bound(model, x, 3, check=False).isnan().any()
