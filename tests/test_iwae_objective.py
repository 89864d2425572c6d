"""The IWAE training objective, -L_k (TrainConfig.iwae_k), against independent computations."""

import copy
import itertools
import math
from dataclasses import replace

import pytest
import torch
from torch.distributions import Normal

from vae_tutorial import objective
from vae_tutorial.cli import build_parser, main
from vae_tutorial.config import ModelConfig, TrainConfig, check_run
from vae_tutorial.iwae import log_importance_weights
from vae_tutorial.models import build_model
from vae_tutorial.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ModelConfig(latent_dim=4, hidden_dim=32)
TINY = TrainConfig(epochs=1, train_size=512, batch_size=128)
NO_AMP = torch.autocast("cpu", enabled=False)
EPS32 = torch.finfo(torch.float32).eps  # 2^-23: one float32 rounding, or one ulp of exp/log


@pytest.fixture(scope="module")
def model_and_x():
    torch.manual_seed(0)
    model = build_model(SMALL)
    x = torch.bernoulli(torch.rand(6, 784, generator=torch.Generator().manual_seed(1)))
    return model, x


def iwae_losses(model, x, k, seed):
    """The package's per-batch IWAE terms, with torch's global RNG seeded (it draws eps there)."""
    torch.manual_seed(seed)
    return objective.iwae_terms(model, x, torch.zeros(len(x)), k)


def brute_force_neg_bound(model, x, k, seed):
    """-log (1/k) sum_i p(x, z_i) / q(z_i|x) in float64 from densities, with the same eps draws.

    Returns -L_k (B,), the float64 model and log w (k, B).
    """
    torch.manual_seed(seed)
    eps = torch.randn(k, len(x), model.config.latent_dim, dtype=model.to_mu.weight.dtype).double()
    m = copy.deepcopy(model).double()
    mu, logvar = m.encode(x.double(), check=False)
    sigma = logvar.mul(0.5).exp()
    z = mu + sigma * eps  # (k, B, D)
    probs = torch.sigmoid(m.decode(z.flatten(0, 1), check=False)).unflatten(0, (k, -1))
    xd = x.double()
    log_px_z = (xd * probs.log() + (1 - xd) * (-probs).log1p()).sum(-1)  # (k, B)
    log_pz = Normal(0.0, 1.0).log_prob(z).sum(-1)  # with its 2 pi constants
    log_q = Normal(mu, sigma).log_prob(z).sum(-1)
    log_w = log_px_z + log_pz - log_q  # (k, B)
    out = []
    for column in log_w.T:  # log-mean-exp, one image at a time, shifted by its largest weight
        top = column.max()
        out.append(-(top + torch.log(torch.exp(column - top).sum() / k)))
    return torch.stack(out), m, log_w


def float32_logsumexp_error(log_w):
    """A bound on -L_k's error when log w (k, B) is rounded to float32 and log-sum-exp'd there.

    Rounding log w: EPS32 / 2 * M (M = max |log w|); the shift by the max and the final
    log k - (max + log S): 2 * EPS32 * M; exp, the k-term sum S and its log: (k + 2) * EPS32.
    """
    k, big = len(log_w), log_w.abs().max().item()
    return EPS32 * (3 * big + k + 2)


@pytest.mark.parametrize("k", [1, 5, 50])
def test_the_loss_is_minus_l_k_of_a_float64_brute_force(model_and_x, k):
    model, x = model_and_x
    model, x = copy.deepcopy(model).double(), x.double()  # float64 up to log w, float32 after
    neg_bound, _, _ = iwae_losses(model, x, k, seed=3)
    expected, _, log_w = brute_force_neg_bound(model, x, k, seed=3)
    bound = float32_logsumexp_error(log_w)  # the package's float32 log w; float64 elsewhere
    torch.testing.assert_close(neg_bound.double(), expected, rtol=0, atol=bound)


def test_its_gradient_is_that_of_the_brute_force(model_and_x):
    model, x = model_and_x
    model, x = copy.deepcopy(model).double(), x.double()  # float64 up to log w, float32 after
    neg_bound, _, _ = iwae_losses(model, x, 5, seed=4)
    neg_bound.mean().backward()
    expected, reference, log_w = brute_force_neg_bound(model, x, 5, seed=4)
    expected.mean().backward(retain_graph=True)  # log w is differentiated again below
    # d(-L_k)/dθ = -Σ_i s_i ∇log w_i, s = softmax(log w): the package's s comes from float32 log w,
    # each s_i off by a relative ρ (twice the log-sum-exp error bound), so the error is at most
    # ρ · mean_b Σ_i s_i |∇log w_i|, an envelope computed from the float64 reference.
    rho = 2 * float32_logsumexp_error(log_w.detach())
    weights = torch.softmax(log_w.detach(), 0) / log_w.shape[1]  # s_i / B, the mean's 1 / B
    envelope = [torch.zeros_like(q) for q in reference.parameters()]
    for i, b in itertools.product(*map(range, log_w.shape)):
        grads = torch.autograd.grad(log_w[i, b], list(reference.parameters()), retain_graph=True)
        for e, g in zip(envelope, grads, strict=True):
            e += weights[i, b] * g.abs()
    named = zip(model.named_parameters(), reference.parameters(), envelope, strict=True)
    for (name, p), q, e in named:
        assert p.grad is not None and p.grad.abs().sum() > 0, name  # every weight gets a gradient
        error = (p.grad - q.grad).abs()
        assert (error <= rho * e + 1e-12).all(), (name, (error - rho * e).max())


def test_k_1_is_the_sampled_elbo_in_expectation_and_larger_k_is_tighter(model_and_x):
    """E[-L_1] = -ELBO (closed-form KL, one z); E[-L_k] falls as k grows (Burda et al. 2016)."""
    model, x = model_and_x
    draws = 4000
    x_many = x[:2].repeat(draws, 1)  # (2 draws, 784): two images, many independent draws each
    with torch.no_grad():
        torch.manual_seed(5)
        y = torch.zeros(len(x_many))
        _, rec, kl = objective.elbo_losses(model, model, x_many, y, 1.0, 0.0, NO_AMP)  # the -ELBO
        elbo_path = (rec + kl.sum(-1)).double().view(draws, 2)
        means = {}
        for k in (1, 5, 50):
            neg_bound, _, _ = iwae_losses(model, x_many, k, seed=6 + k)
            means[k] = neg_bound.double().view(draws, 2)
    difference = means[1].mean(0) - elbo_path.mean(0)  # (2,)
    se = ((means[1].var(0) + elbo_path.var(0)) / draws).sqrt()
    assert (difference.abs() < 4 * se).all(), (difference, se)
    assert se.max() < 0.5  # the check has power: a tenth of a typical gap between k = 1 and 5
    gaps = [means[1].mean(0) - means[5].mean(0), means[5].mean(0) - means[50].mean(0)]
    for gap in gaps:
        assert (gap > 4 * se).all(), (gap, se)  # -L_1 > -L_5 > -L_50 beyond the noise


def test_the_record_holds_the_elbo_estimate_of_the_same_draws(model_and_x):
    model, x = model_and_x
    neg_bound, reconstruction, kl = iwae_losses(model, x, 5, seed=7)
    torch.manual_seed(7)
    log_w = log_importance_weights(model, x, 5)  # the same draws: (5, B)
    neg_elbo = reconstruction + kl.sum(-1)  # (a - b) + b in float32: two roundings of a
    torch.testing.assert_close(neg_elbo, -log_w.mean(0).detach(), rtol=EPS32, atol=0)
    assert not reconstruction.requires_grad and not kl.requires_grad
    slack = float32_logsumexp_error(log_w.detach()) + EPS32 * neg_elbo.abs().max().item()
    assert (neg_bound <= neg_elbo + slack).all()  # Jensen: -L_k <= -ELBO, up to rounding


def test_fit_minimises_l_k_and_records_it_beside_the_elbo():
    plain = fit(SMALL, TINY, device="cpu", progress=False).history
    iwae = fit(SMALL, replace(TINY, iwae_k=5), device="cpu", progress=False).history
    # B * mean versus sum, float32 (torch's cascade sums: within (log2 B + 1) 2^-24 each), 2 sides
    rounding = (math.log2(TINY.batch_size) + 1) * EPS32
    assert plain.train_objective == pytest.approx(plain.train_neg_elbo, rel=rounding)
    # per image, log mean w >= mean log w: -L_5 lies below the -ELBO of the same draws
    assert iwae.train_objective[0] < iwae.train_neg_elbo[0] - 0.05
    assert iwae.train_objective[0] != pytest.approx(plain.train_objective[0], abs=1e-3)


@pytest.mark.parametrize(
    "change, named",
    [
        ({"beta": 0.5}, "beta=0.5"),
        ({"warmup_epochs": 3}, "warmup_epochs=3"),
        ({"free_bits": 0.1}, "free_bits=0.1"),
        ({"likelihood": "continuous_bce", "binarize": "none"}, "continuous_bce"),
    ],
)
def test_nonsense_combinations_are_refused(change, named):
    with pytest.raises(ValueError, match="iwae_k=5") as error:
        check_run(ModelConfig(), TrainConfig(iwae_k=5, **change))
    assert named in str(error.value)
    check_run(ModelConfig(), TrainConfig(iwae_k=1, **change))  # fine with the ELBO


@pytest.mark.parametrize("k", [0, -2, 2.0, True, "5"])
def test_iwae_k_must_be_a_positive_int(k):
    with pytest.raises(ValueError, match="TrainConfig.iwae_k"):
        TrainConfig(iwae_k=k)


def test_an_autoencoder_has_no_l_k():
    with pytest.raises(ValueError, match="kind='ae'"):
        fit(replace(SMALL, kind="ae"), replace(TINY, iwae_k=2), device="cpu", progress=False)


def test_the_cli_passes_iwae_k_and_refuses_nonsense_in_one_line(tmp_path, capsys):
    assert build_parser().parse_args(["train", "--iwae-k", "5"]).iwae_k == 5
    argv = ["train", "--iwae-k", "5", "--beta", "0.5", "--out", str(tmp_path), "--device", "cpu"]
    try:
        status = main(argv)
    except SystemExit as exit_:
        status = exit_.code
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1, err
    assert "iwae_k=5" in err[0] and "beta=0.5" in err[0]
