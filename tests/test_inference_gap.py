"""The inference gap's parts, against numerical integration over a one-dimensional latent."""

import math

import pytest
import torch
import torch.nn.functional as F

from vae_tutorial.config import ModelConfig
from vae_tutorial.inference_gap import gaussian_elbo, inference_gaps, optimal_gaussian
from vae_tutorial.iwae import importance_weighted_bound
from vae_tutorial.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

GRID = torch.linspace(-10, 10, 8001, dtype=torch.float64)  # z for the quadrature, D = 1
DZ = float(GRID[1] - GRID[0])


@pytest.fixture(scope="module")
def model_and_x():
    """A VAE with D = 1 and random weights (an encoder far from the posterior), and 3 images."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=1, hidden_dim=16))
    probs = torch.sigmoid(model.decode(torch.tensor([[-1.0], [0.5], [2.0]])))
    x = torch.bernoulli(probs.detach(), generator=torch.Generator().manual_seed(1))
    return model.eval(), x


def log_px_given_grid(model, x):
    """log p(x|z) on GRID in float64, x log sigmoid(l) + (1 - x) log sigmoid(-l): (B, G)."""
    with torch.no_grad():
        logits = model.decode(GRID.float()[:, None]).double()  # (G, P)
    xd = x.double()
    return xd @ F.logsigmoid(logits).T + (1 - xd) @ F.logsigmoid(-logits).T  # (B, G)


def quadrature_log_px(model, x):
    """log p(x) = log int p(x|z) N(z; 0, 1) dz on GRID: (B,)."""
    log_prior = -0.5 * GRID**2 - 0.5 * math.log(2 * math.pi)
    return torch.logsumexp(log_px_given_grid(model, x) + log_prior, 1) + math.log(DZ)


def quadrature_elbo(log_lik, mu, logvar):
    """int N(z; mu, s^2) log p(x|z) dz - KL(N(mu, s^2) || N(0, 1)); log_lik (B, G) on GRID."""
    s2 = logvar.double().exp()
    mu = mu.double()
    density = torch.exp(-0.5 * (GRID - mu[:, None]) ** 2 / s2[:, None]) / torch.sqrt(
        2 * math.pi * s2[:, None]
    )  # (B, G)
    expected = (density * log_lik).sum(1) * DZ
    kl = 0.5 * (mu**2 + s2 - s2.log() - 1)
    return expected - kl


def log_q_grid(mu, logvar):
    """log N(z; mu, exp(logvar)) on GRID, float64: (B, G) from mu, logvar (B,) or (B, 1)."""
    mu, logvar = mu.double().reshape(-1, 1), logvar.double().reshape(-1, 1)
    return -0.5 * ((GRID - mu) ** 2 / logvar.exp() + logvar + math.log(2 * math.pi))


def chi_square(model, x, mu, logvar):
    """Var_q(w / p(x)) = int p(x, z)^2 / q(z) dz / p(x)^2 - 1 on GRID, per image: (B,)."""
    log_joint = log_px_given_grid(model, x) - 0.5 * GRID**2 - 0.5 * math.log(2 * math.pi)
    log_second = torch.logsumexp(2 * log_joint - log_q_grid(mu, logvar), 1) + math.log(DZ)
    return torch.exp(log_second - 2 * quadrature_log_px(model, x)) - 1


def bound_tolerance(chi2, k):
    """L_k - log p(x) = log(1 + e), e = mean of k draws of w / p(x) - 1 (mean 0, variance
    chi2 / k): bias about -chi2 / (2k), standard error sqrt(chi2 / k); the bias and 4 SE."""
    return chi2 / (2 * k) + 4 * torch.sqrt(chi2 / k)


def test_gaussian_elbo_is_the_integral(model_and_x):
    model, x = model_and_x
    mu, logvar = torch.tensor([[-0.5], [0.3], [2.0]]), torch.tensor([[-2.0], [-3.0], [-1.0]])
    sampled = gaussian_elbo(
        model, x, mu, logvar, samples=20000, generator=torch.Generator().manual_seed(2)
    )
    log_lik = log_px_given_grid(model, x)  # (B, G)
    exact = quadrature_elbo(log_lik, mu[:, 0], logvar[:, 0])
    q = log_q_grid(mu[:, 0], logvar[:, 0]).exp()  # (B, G)
    mean = (q * log_lik).sum(1) * DZ
    sd = ((q * (log_lik - mean[:, None]) ** 2).sum(1) * DZ).sqrt()  # of log p(x|z), z ~ q
    # 4 standard errors of the mean of 20,000 draws (the KL is in closed form); float32 sums of
    # 784 pixels round by about sqrt(784) * 2^-24 = 1.7e-6 relative: 1e-5 |ELBO| covers them
    tolerance = 4 * sd / math.sqrt(20000) + 1e-5 * exact.abs()
    assert ((sampled.double() - exact).abs() < tolerance).all(), (sampled, exact, tolerance)


def test_optimal_gaussian_reaches_the_best_elbo_of_a_grid_search(model_and_x):
    model, x = model_and_x
    log_lik = log_px_given_grid(model, x)  # (B, G)
    mu, logvar = optimal_gaussian(model, x, steps=400, lr=0.05, samples=32)
    found = quadrature_elbo(log_lik, mu[:, 0], logvar[:, 0])
    means = torch.linspace(-4, 4, 161, dtype=torch.float64)
    best = torch.full((len(x),), -math.inf, dtype=torch.float64)
    for lv in torch.linspace(-8, 1, 91, dtype=torch.float64):  # every (mu, log sigma^2) of a grid
        for i in range(len(x)):
            values = quadrature_elbo(log_lik[i].expand(len(means), -1), means, lv.expand(161))
            best[i] = torch.maximum(best[i], values.max())
    assert (found > best - 0.05).all(), (found, best)
    with torch.no_grad():
        enc_mu, enc_logvar = model.encode(x)
    encoder = quadrature_elbo(log_lik, enc_mu[:, 0], enc_logvar[:, 0])
    assert (found > encoder + 1).all()  # it moved far from the encoder's q
    assert (best <= quadrature_log_px(model, x) + 1e-6).all()  # the ELBO bounds log p(x)


def test_bound_with_a_proposal_estimates_log_px_and_uses_that_proposal(model_and_x):
    model, x = model_and_x
    log_px = quadrature_log_px(model, x)
    generator = torch.Generator().manual_seed(3)
    near = torch.tensor([[-0.9], [0.4], [2.2]]), torch.full((3, 1), math.log(0.2))
    bound = importance_weighted_bound(model, x, 20000, proposal=near, generator=generator)
    tolerance = bound_tolerance(chi_square(model, x, *near), 20000) + 1e-5 * log_px.abs()
    assert ((bound.double() - log_px).abs() < tolerance).all(), (bound, log_px, tolerance)
    far = torch.full((3, 1), 5.0), torch.full((3, 1), math.log(0.01))  # misses the posterior
    far_bound = importance_weighted_bound(model, x, 100, proposal=far, generator=generator)
    assert (far_bound < log_px - 5).all()


def test_the_gaps_add_up_and_match_the_integrals(model_and_x):
    model, x = model_and_x
    k, search = 20_000, {"steps": 400, "lr": 0.05, "samples": 32}
    gaps = inference_gaps(model, x, k=k, elbo_samples=20000, **search)
    log_px = quadrature_log_px(model, x)
    # log p(x) is the larger L_k of two proposals. The encoder's q has a finite chi-square on all
    # three images, so its L_k is within bound_tolerance, and the maximum is no lower. q* is
    # narrower than the posterior on two of them (infinite chi-square): its draws miss the
    # posterior's tails, so its L_k errs low; the maximum's upward error is the encoder's.
    with torch.no_grad():
        chi2 = chi_square(model, x, *model.encode(x))
    tolerance = bound_tolerance(chi2, k) + 1e-5 * log_px.abs()  # float32 rounding as above
    assert torch.isfinite(chi2).all()
    assert ((gaps["bound_encoder"].double() - log_px).abs() < tolerance).all()
    assert ((gaps["log_px"].double() - log_px).abs() < tolerance).all(), (gaps, log_px, tolerance)
    # each L_k is a lower bound: the estimate of log p(x) is the tighter one, on every image
    assert (gaps["log_px"] >= gaps["bound_encoder"]).all()
    assert (gaps["log_px"] >= gaps["bound_optimal"]).all()
    # (a - b) + (b - c) against a - c: b, a - b and a - c are exact (Sterbenz: the ELBOs and the
    # bound lie within a factor 2 of each other), so only the sum rounds: half an ulp of it
    total = gaps["approximation_gap"] + gaps["amortization_gap"]
    torch.testing.assert_close(total, gaps["inference_gap"], rtol=2**-24, atol=0)
    assert (gaps["approximation_gap"] > -0.15).all()  # >= 0 up to the ELBO's sampling error
    assert (gaps["amortization_gap"] > -0.15).all()
    assert gaps["inference_gap"].min() > 0.5  # an untrained encoder: a real gap to split


def test_results_hold_no_graph_leave_the_model_trainable_and_repeat_with_their_seed(model_and_x):
    model, x = model_and_x
    assert all(p.requires_grad for p in model.parameters())
    mu, logvar = optimal_gaussian(model, x, steps=5, samples=2)
    assert not mu.requires_grad and not logvar.requires_grad  # q* is handed back, not trained
    assert all(p.requires_grad for p in model.parameters())  # the decoder was frozen only inside

    def gaps(seed):
        return inference_gaps(model, x, k=50, elbo_samples=50, steps=5, samples=2, seed=seed)

    first, again, other = gaps(7), gaps(7), gaps(8)
    for name, value in first.items():
        assert not value.requires_grad, name
        assert torch.equal(value, again[name]), f"{name} differs between two runs of one seed"
    assert not torch.equal(first["log_px"], other["log_px"])


@pytest.mark.parametrize(
    "mu, logvar, message",
    [
        (torch.zeros(3, 2), torch.zeros(3, 2), r"shape \(3, 1\)"),
        (torch.zeros(3, 1), torch.zeros(2, 1), "same shape"),
        (torch.full((3, 1), math.nan), torch.zeros(3, 1), "mu"),
        (torch.zeros(3, 1), torch.full((3, 1), math.inf), "logvar"),
    ],
)
def test_bad_proposals_are_refused(model_and_x, mu, logvar, message):
    model, x = model_and_x
    with pytest.raises(ValueError, match=message):
        gaussian_elbo(model, x, mu, logvar)
    with pytest.raises(ValueError, match=message):
        importance_weighted_bound(model, x, 10, proposal=(mu, logvar))


def test_a_proposal_must_be_a_pair(model_and_x):
    model, x = model_and_x
    with pytest.raises(ValueError, match=r"proposal: expected a tuple \(mu, logvar\)"):
        importance_weighted_bound(model, x, 10, proposal=torch.zeros(3, 1))


def test_grey_images_and_bad_settings_are_refused(model_and_x):
    model, x = model_and_x
    with pytest.raises(ValueError, match="binarize x"):
        gaussian_elbo(model, x * 0.5, torch.zeros(3, 1), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="binarize x"):
        importance_weighted_bound(model, x * 0.5, 10, proposal=(torch.zeros(3, 1),) * 2)
    with pytest.raises(ValueError, match="steps"):
        optimal_gaussian(model, x, steps=0)
    with pytest.raises(ValueError, match="expected a VAE"):
        inference_gaps(build_model(ModelConfig(kind="ae", latent_dim=1, hidden_dim=16)), x)
