"""Free bits (Kingma et al. 2016): the KL term, its gradient, the training objective, old files."""

import math
from dataclasses import replace

import pytest
import torch

from vae_tutorial import checkpoint
from vae_tutorial.cli import main
from vae_tutorial.config import ModelConfig, TrainConfig
from vae_tutorial.elbo import kl_per_dimension, kl_to_standard_normal
from vae_tutorial.objective import free_bits_kl
from vae_tutorial.train import fit

SMALL = ModelConfig(latent_dim=8, hidden_dim=64)
TINY = TrainConfig(epochs=2, train_size=512, batch_size=128)
CPU = "cpu"

pytestmark = pytest.mark.usefixtures("one_thread")


def encoder_outputs(b: int = 6, d: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """mu, logvar (b, d) with KLs from near 0 to a few nats per dimension."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.01, 2.0, d)  # dimension j spreads its codes by scale[j]
    return scale * torch.randn(b, d, generator=g), scale * torch.randn(b, d, generator=g)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    pa, pb = a.state_dict(), b.state_dict()
    return pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)


def brute_force(mu: torch.Tensor, logvar: torch.Tensor, kappa: float) -> float:
    """sum_j max(kappa, mean_b KL_bj), element by element in float64 Python."""
    b, d = mu.shape
    total = 0.0
    for j in range(d):
        mean = 0.0
        for i in range(b):
            m, v = float(mu[i, j]), float(logvar[i, j])
            mean += (m * m + math.exp(v) - v - 1) / 2 / b
        total += mean if mean > kappa else kappa
    return total


@pytest.mark.parametrize("kappa", [0.0, 0.05, 0.3, 1.0, 50.0])
def test_free_bits_kl_matches_a_float64_brute_force(kappa):
    mu, logvar = (t.double() for t in encoder_outputs())  # float64, as the brute force
    got = free_bits_kl(kl_per_dimension(mu, logvar), kappa)
    # float64 sums of 30 terms of a few nats: 30 * 2^-52 relative < 1e-14
    assert got.item() == pytest.approx(brute_force(mu, logvar, kappa), rel=1e-12)


def test_kappa_between_the_dimensions_clamps_some_and_keeps_others():
    """The test above is only sharp if kappa splits the dimensions: check that 0.3 does."""
    mean_kl = kl_per_dimension(*encoder_outputs()).mean(0)
    assert (mean_kl < 0.3).any() and (mean_kl > 0.3).any()


def test_no_free_bits_is_the_batch_mean_kl_of_the_elbo():
    mu, logvar = (t.double() for t in encoder_outputs())  # float64, as the reference
    expected = kl_to_standard_normal(mu, logvar).mean()
    torch.testing.assert_close(free_bits_kl(kl_per_dimension(mu, logvar), 0.0), expected)


def test_dimensions_below_kappa_get_no_gradient_and_the_others_the_kls():
    """d/dmu_bj of mean_b KL_bj is mu_bj / B and d/dlogvar_bj is (e^logvar_bj - 1) / (2B)."""
    mu, logvar = (t.double().requires_grad_() for t in encoder_outputs())
    kappa = 0.3
    free_bits_kl(kl_per_dimension(mu, logvar), kappa).backward()
    b = len(mu)
    with torch.no_grad():
        above = kl_per_dimension(mu, logvar).mean(0) > kappa  # (D,)
        want_mu = torch.where(above, mu / b, 0.0)
        want_logvar = torch.where(above, (logvar.exp() - 1) / (2 * b), 0.0)
    torch.testing.assert_close(mu.grad, want_mu)
    torch.testing.assert_close(logvar.grad, want_logvar)
    assert (mu.grad[:, ~above] == 0).all() and (mu.grad[:, above] != 0).all()


@pytest.mark.parametrize(
    ("kappa", "message"),
    [
        (-0.5, "free_bits_kl: free_bits: expected a finite number in [0, inf), got -0.5 (a float)"),
        (math.nan, "expected a finite number in [0, inf), got nan (a float)"),
        (math.inf, "expected a finite number in [0, inf), got inf (a float)"),
        (True, "got True (a bool); kappa in nats per latent dimension"),
        ("0.5", "got '0.5' (a str)"),
    ],
)
def test_bad_kappa_is_refused(kappa, message):
    with pytest.raises(ValueError) as error:
        free_bits_kl(torch.zeros(4, 3), kappa)
    assert message in str(error.value)


def test_a_kl_summed_over_dimensions_is_refused():
    """Free bits act per latent dimension: a (B,) total KL is the common mistake."""
    with pytest.raises(ValueError) as error:
        free_bits_kl(kl_to_standard_normal(*encoder_outputs()), 0.5)
    message = str(error.value)
    assert "expected the KL per example and latent dimension, (B, D), got shape (6,)" in message
    assert "pass kl_per_dimension(mu, logvar), not a KL summed over dimensions" in message


def test_non_finite_or_integer_kls_are_refused():
    with pytest.raises(ValueError, match=r"free_bits_kl: kl: expected finite values, got 1"):
        free_bits_kl(torch.tensor([[0.1, math.nan]]), 0.5)
    free_bits_kl(torch.tensor([[0.1, math.nan]]), 0.5, check=False)  # the training loop's call
    with pytest.raises(ValueError, match="free_bits_kl: kl: expected a floating-point tensor"):
        free_bits_kl(torch.zeros(2, 3, dtype=torch.long), 0.5)


@pytest.mark.parametrize("kappa", [-1.0, math.inf, None])
def test_train_config_refuses_bad_free_bits(kappa):
    with pytest.raises(ValueError, match=r"TrainConfig.free_bits: expected a finite number in \[0"):
        TrainConfig(free_bits=kappa)


def test_the_cli_refuses_bad_free_bits_in_one_line(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--free-bits", "-1", "--out", str(tmp_path / "run"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert "TrainConfig.free_bits: expected a finite number in [0, 1e+06], got -1.0" in err


def test_the_cli_passes_free_bits_to_the_train_config(monkeypatch, tmp_path):
    seen = {}

    def fake_fit(model_config, train_config, **_):
        seen["config"] = train_config
        raise ValueError("stop here")

    monkeypatch.setattr("vae_tutorial.commands.fit", fake_fit)
    with pytest.raises(SystemExit):
        main(["train", "--free-bits", "0.25", "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert seen["config"].free_bits == 0.25


@pytest.fixture(scope="module")
def plain():
    return fit(SMALL, TINY, device=CPU, progress=False)


def test_without_free_bits_the_objective_is_the_negative_elbo(plain):
    h = plain.history
    assert len(h.train_objective) == h.epochs_done == 2
    assert h.train_objective == pytest.approx(h.train_neg_elbo, rel=1e-6)


def test_with_beta_and_warmup_the_objective_is_reconstruction_plus_beta_e_kl():
    h = fit(SMALL, replace(TINY, beta=3.0, warmup_epochs=2), device=CPU, progress=False).history
    betas = [3.0 / 2, 3.0]  # beta * min(1, (epoch + 1) / 2)
    want = [r + b * k for r, b, k in zip(h.train_reconstruction, betas, h.train_kl, strict=True)]
    assert h.train_objective == pytest.approx(want, rel=1e-6)
    assert h.train_neg_elbo == pytest.approx(
        [r + k for r, k in zip(h.train_reconstruction, h.train_kl, strict=True)], rel=1e-9
    )  # the true -ELBO: beta = 1


def test_free_bits_above_every_kl_remove_the_kl_gradient_and_add_d_kappa():
    """With kappa above every dimension's KL the KL term is the constant D kappa: the run has
    the weights of beta = 0, and its objective is reconstruction + beta D kappa."""
    kappa, beta = 40.0, 2.0
    free = fit(SMALL, replace(TINY, free_bits=kappa, beta=beta), device=CPU, progress=False)
    no_kl = fit(SMALL, replace(TINY, beta=0.0), device=CPU, progress=False)
    assert same_weights(free.model, no_kl.model)
    h = free.history
    assert max(h.train_kl) < kappa  # so every dimension's KL, in every batch, is below kappa
    want = [r + beta * SMALL.latent_dim * kappa for r in h.train_reconstruction]
    assert h.train_objective == pytest.approx(want, rel=1e-6)
    assert h.train_neg_elbo != pytest.approx(h.train_objective, rel=1e-3)


def test_free_bits_between_the_kls_change_the_weights(plain):
    """kappa = 0.05 nats lies inside the range of the dimensions' KLs after one epoch."""
    free = fit(SMALL, replace(TINY, free_bits=0.05), device=CPU, progress=False)
    h = free.history
    assert h.train_objective[-1] > h.train_neg_elbo[-1]  # some dimension sat below kappa
    assert not same_weights(free.model, plain.model)


def test_a_version_1_checkpoint_loads_with_its_objective_and_resumes(plain, tmp_path):
    """A file from before free bits: no free_bits in its config, no train_objective."""
    path = tmp_path / "v1.pt"
    config = replace(TINY, beta=2.0, warmup_epochs=2)
    fit(SMALL, config, device=CPU, checkpoint_path=path, progress=False)
    state = torch.load(path, weights_only=True)
    state["version"] = 1
    del state["train_config"]["free_bits"], state["history"]["train_objective"]
    torch.save(state, path)

    loaded = checkpoint.load_checkpoint(path, CPU)
    h = loaded.history
    want = [
        r + 2.0 * min(1, (e + 1) / 2) * k
        for e, (r, k) in enumerate(zip(h.train_reconstruction, h.train_kl, strict=True))
    ]
    assert h.train_objective == pytest.approx(want, rel=1e-12)
    assert loaded.train_config.free_bits == 0.0
    resumed = fit(
        SMALL,
        replace(config, epochs=3),
        device=CPU,
        checkpoint_path=path,
        resume=True,
        progress=False,
    )
    assert len(resumed.history.train_objective) == resumed.history.epochs_done == 3
    assert torch.load(path, weights_only=True)["version"] == checkpoint.CHECKPOINT_VERSION == 3


def test_a_current_checkpoint_keeps_the_objective(plain, tmp_path):
    path = checkpoint.save_checkpoint(tmp_path / "run.pt", plain.model, plain.history, TINY)
    assert checkpoint.load_checkpoint(path, CPU).history.train_objective == (
        plain.history.train_objective
    )
