"""The conditional VAE: its ELBO and L_k against float64 references, the label's effect, fit,
checkpoints, the cache, sampling with chosen digits, the CLI, and refused labels."""

import json
import math
from dataclasses import replace

import matplotlib.image
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from vae_tutorial import commands
from vae_tutorial.cache import trained_model
from vae_tutorial.checkpoint import load_checkpoint
from vae_tutorial.cli import main
from vae_tutorial.config import ModelConfig, TrainConfig
from vae_tutorial.data import load_mnist
from vae_tutorial.evaluate import active_units, encode_dataset, evaluate_elbo, kl_per_latent
from vae_tutorial.iwae import importance_weighted_bound
from vae_tutorial.models import CVAE, build_model
from vae_tutorial.sampling import reconstruct, sample_prior
from vae_tutorial.test_set import TEST_SEED
from vae_tutorial.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ModelConfig(kind="cvae", latent_dim=3, hidden_dim=16)
TINY_CLI = ["--epochs", "1", "--train-size", "512", "--latent-dim", "2", "--hidden-dim", "32"]


def _model(arch: str = "mlp", seed: int = 0) -> CVAE:
    """An untrained tiny CVAE in float64."""
    torch.manual_seed(seed)
    return build_model(ModelConfig(kind="cvae", arch=arch, latent_dim=3, hidden_dim=16)).double()


def _data(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary float64 images (n, 784) and labels (n,) covering several digits."""
    g = torch.Generator().manual_seed(seed)
    x = torch.bernoulli(torch.full((n, 784), 0.3, dtype=torch.float64), generator=g)
    return x, torch.arange(n) * 7 % 10


def _by_columns(model: CVAE, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor):
    """mu, logvar and logits with the one-hot written as a column pick, W e_y = W[:, y] (mlp)."""
    w1, b1 = model.encoder[0].weight, model.encoder[0].bias  # (H, 784 + 10)
    h = torch.relu(x @ w1[:, :784].T + w1[:, 784 + y].T + b1)  # (B, H)
    mu, logvar = model.to_mu(h), model.to_logvar(h)
    d = model.config.latent_dim
    w3, b3 = model.decoder[0].weight, model.decoder[0].bias  # (H, D + 10)
    logits = model.decoder[2](torch.relu(z @ w3[:, :d].T + w3[:, d + y].T + b3))  # (B, 784)
    return mu, logvar, logits


def _log_bernoulli(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum_i x_i log p_i + (1 - x_i) log(1 - p_i), p = sigmoid(logits), float64: (..., B)."""
    p = torch.sigmoid(logits)
    return (x * torch.log(p) + (1 - x) * torch.log1p(-p)).sum(-1)


@torch.no_grad()
def test_conditional_elbo_matches_a_float64_reference():
    model, (x, y) = _model(), _data()
    scores = evaluate_elbo(model, x, labels=y, seed=3)
    # the same z: evaluate_elbo draws eps from a generator seeded 3, in one batch
    eps = torch.randn((len(x), 3), generator=torch.Generator().manual_seed(3), dtype=x.dtype)
    mu, logvar = _by_columns(model, x, y, x.new_zeros(len(x), 3))[:2]
    std = torch.exp(0.5 * logvar)
    logits = _by_columns(model, x, y, mu + std * eps)[2]
    reconstruction = -_log_bernoulli(logits, x).mean()
    kl = kl_divergence(Normal(mu, std), Normal(0.0, 1.0)).sum(-1).mean()
    assert scores["reconstruction"] == pytest.approx(reconstruction.item(), rel=1e-10)
    assert scores["kl"] == pytest.approx(kl.item(), rel=1e-10)
    assert scores["neg_elbo"] == pytest.approx((reconstruction + kl).item(), rel=1e-10)


@torch.no_grad()
def test_conditional_iwae_bound_matches_a_float64_reference():
    model, (x, y) = _model(), _data()
    k = 7
    bound = importance_weighted_bound(
        model, x, k, labels=y, chunk=3, generator=torch.Generator().manual_seed(1)
    )
    generator = torch.Generator().manual_seed(1)  # the chunks draw 3, 3 and 1 eps per image
    eps = torch.cat(
        [torch.randn((n, len(x), 3), generator=generator, dtype=x.dtype) for n in (3, 3, 1)]
    )
    mu, logvar = _by_columns(model, x, y, x.new_zeros(len(x), 3))[:2]
    std = torch.exp(0.5 * logvar)
    z = mu + std * eps  # (k, B, D)
    log_px = torch.stack([_log_bernoulli(_by_columns(model, x, y, zi)[2], x) for zi in z])
    log_pz = Normal(0.0, 1.0).log_prob(z).sum(-1)  # (k, B)
    log_q = Normal(mu, std).log_prob(z).sum(-1)  # (k, B)
    log_w = log_px + log_pz - log_q
    # $\log \frac1k \sum_i w_i$, written with the largest weight factored out
    top = log_w.max(0).values
    reference = top + torch.log(torch.exp(log_w - top).mean(0))
    torch.testing.assert_close(bound, reference, rtol=1e-10, atol=1e-9)


@torch.no_grad()
@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_the_label_enters_as_a_one_hot_and_changes_both_networks(arch):
    model, (x, _) = _model(arch), _data(10)
    digits = torch.arange(10)
    z = torch.randn(1, 3, dtype=torch.float64).expand(10, 3)  # one z for all ten digits
    logits = model.decode(z, digits)
    one_hot = torch.eye(10, dtype=torch.float64)[digits]  # e_y, written independently
    torch.testing.assert_close(logits, model.decoder(torch.cat([z, one_hot], 1)), rtol=0, atol=0)
    assert torch.cdist(logits, logits).fill_diagonal_(math.inf).min() > 1e-3  # ten outputs
    same_x = x[:1].expand(10, 784)
    mu, _ = model.encode(same_x, digits)
    h = model.encoder(torch.cat([model.features(same_x), one_hot], 1))
    torch.testing.assert_close(mu, model.to_mu(h), rtol=0, atol=0)
    assert torch.cdist(mu, mu).fill_diagonal_(math.inf).min() > 1e-6  # q(z|x,y) moves with y


@torch.no_grad()
def test_sample_prior_draws_the_chosen_digits_from_one_z_per_seed():
    model = _model()
    digits = torch.tensor([3, 3, 8, 0])
    samples = sample_prior(model, 4, labels=digits, seed=5)
    z = torch.randn((4, 3), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    torch.testing.assert_close(samples, torch.sigmoid(model.decode(z, digits)), rtol=0, atol=0)
    other = sample_prior(model, 4, labels=torch.tensor([1, 2, 3, 4]), seed=5)
    assert not torch.allclose(samples, other)  # same z, other digits: other images


@torch.no_grad()
def test_reconstruct_and_encoders_use_the_labels():
    model, (x, y) = _model(), _data()
    mu = encode_dataset(model, x, labels=y)
    torch.testing.assert_close(mu, model.encode(x, y)[0])
    torch.testing.assert_close(reconstruct(model, x, labels=y), model.decode_mean(mu, y))
    assert not torch.allclose(mu, encode_dataset(model, x, labels=(y + 1) % 10))
    kl = kl_per_latent(model, x, labels=y)
    mu_, logvar = model.encode(x, y)
    torch.testing.assert_close(kl, (0.5 * (mu_**2 + logvar.exp() - logvar - 1)).mean(0))
    count, variances = active_units(model, x, labels=y)
    torch.testing.assert_close(variances, mu.var(0))
    assert count == int((variances > 0.01).sum())


BAD_LABELS = [
    (None, "got None"),
    (torch.arange(6, dtype=torch.int32), "expected dtype torch.int64"),
    (torch.arange(6.0), "expected dtype torch.int64"),
    (torch.arange(5), r"expected shape \(6,\)"),
    (torch.arange(6)[:, None], r"expected shape \(6,\)"),
    (torch.tensor([0, 1, 2, 3, 4, 10]), r"labels in 0..9, got min 0, max 10"),
    (torch.tensor([-1, 1, 2, 3, 4, 5]), r"labels in 0..9, got min -1"),
    ([0, 1, 2, 3, 4, 5], "expected a torch.Tensor"),
]


@pytest.mark.parametrize(("y", "message"), BAD_LABELS)
def test_bad_labels_are_refused_by_the_model(y, message):
    model, (x, _) = _model(), _data()
    for call in (lambda: model(x, y), lambda: model.decode(torch.zeros(6, 3).double(), y)):
        with pytest.raises(ValueError, match=message):
            call()


@pytest.mark.parametrize(("y", "message"), BAD_LABELS[1:])
def test_bad_labels_are_refused_by_evaluation(y, message):
    model, (x, _) = _model(), _data()
    with pytest.raises(ValueError, match=f"evaluate_elbo: labels: .*{message}"):
        evaluate_elbo(model, x, labels=y)


def test_missing_or_unwanted_labels_are_refused_by_name():
    cvae, (x, y) = _model(), _data()
    need = "expected digit labels for a conditional VAE"
    calls = {
        "evaluate_elbo": lambda: evaluate_elbo(cvae, x),
        "importance_weighted_bound": lambda: importance_weighted_bound(cvae, x, 2),
        "encode_dataset": lambda: encode_dataset(cvae, x),
        "sample_prior": lambda: sample_prior(cvae, 2),
        "reconstruct": lambda: reconstruct(cvae, x),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=f"{name}: {need}"):
            call()
    vae = build_model(ModelConfig(latent_dim=3, hidden_dim=16)).double()
    for call in (
        lambda: evaluate_elbo(vae, x, labels=y),
        lambda: sample_prior(vae, 6, labels=y),
        lambda: importance_weighted_bound(vae, x, 2, labels=y),
    ):
        with pytest.raises(ValueError, match="expected no labels for a model of kind='vae'"):
            call()


def test_a_vae_config_cannot_build_a_cvae():
    with pytest.raises(ValueError, match="expected a ModelConfig with kind='cvae'"):
        CVAE(ModelConfig())
    with pytest.raises(
        ValueError, match=r"ModelConfig.kind: expected one of \('vae', 'ae', 'cvae', 'hvae'\)"
    ):
        ModelConfig(kind="conditional")


def test_fit_feeds_each_image_its_own_label_and_scores_with_the_test_labels(tmp_path, monkeypatch):
    images, labels = load_mnist("train")
    seen = []
    forward = CVAE.forward

    def spy(self, x, y=None, *, check=True, generator=None):
        if self.training:
            seen.append((x.detach().clone(), y.clone()))
        return forward(self, x, y, check=check, generator=generator)

    monkeypatch.setattr(CVAE, "forward", spy)
    config = TrainConfig(epochs=1, train_size=300, binarize="none")
    model_config = replace(TINY, likelihood="continuous_bce")  # grey x: exact copies to find
    path = tmp_path / "cvae.pt"
    result = fit(model_config, config, device="cpu", checkpoint_path=path, progress=False)
    assert len(seen) == 3  # 300 images, batches of 128
    for x, y in seen:  # grey images are exact copies: find each one's index
        index = (x[:, None, :] == images[None, :300]).all(-1).float().argmax(1)
        assert torch.equal(y, labels[index])

    monkeypatch.setattr(CVAE, "forward", forward)
    saved = load_checkpoint(path, "cpu")
    assert isinstance(saved.model, CVAE) and saved.model.config == model_config
    for key, value in result.model.state_dict().items():
        assert torch.equal(saved.model.state_dict()[key], value)
    test_images, test_labels = load_mnist("test")
    scores = evaluate_elbo(
        saved.model,
        test_images,
        labels=test_labels,
        seed=TEST_SEED,
        likelihood="continuous_bce",
    )
    assert saved.history.test_neg_elbo[-1] == pytest.approx(scores["neg_elbo"], rel=1e-9)


def test_the_cache_stores_and_reloads_a_cvae(tmp_path):
    config = TrainConfig(epochs=1, train_size=256)
    first = trained_model(TINY, config, device="cpu", cache_dir=tmp_path, progress=False)
    again = trained_model(TINY, config, device="cpu", cache_dir=tmp_path, progress=False)
    assert isinstance(again.model, CVAE) and again.history == first.history
    vae = ModelConfig(latent_dim=3, hidden_dim=16)
    assert len(list(tmp_path.glob("*.pt"))) == 1
    trained_model(vae, TrainConfig(epochs=0), device="cpu", cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.pt"))) == 2  # another kind, another cache file


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """A tiny CVAE trained through the CLI; its output folder."""
    out = tmp_path_factory.mktemp("cvae")
    argv = ["train", "--kind", "cvae", *TINY_CLI, "--out", str(out), "--device", "cpu"]
    assert main([*argv, "--samples", "20"]) == 0
    return out


def test_cli_trains_and_evaluates_a_cvae_with_the_test_labels(cli_run, capsys):
    metrics = json.loads((cli_run / "metrics.json").read_text())
    assert metrics["model_config"]["kind"] == "cvae"
    assert matplotlib.image.imread(cli_run / "samples.png").ndim == 3
    capsys.readouterr()
    args = ["evaluate", str(cli_run / "checkpoint.pt"), "--k", "3", "--iwae-images", "150"]
    assert main([*args, "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["bound_on"] == "log p(x|y)"
    assert printed["neg_elbo_nats"] == pytest.approx(metrics["test"]["neg_elbo_nats"], rel=1e-6)
    model = load_checkpoint(cli_run / "checkpoint.pt", "cpu").model
    images, labels = load_mnist("test", binarize="static", seed=TEST_SEED)
    generator = torch.Generator().manual_seed(0)
    bounds = [
        importance_weighted_bound(model, x, 3, labels=y, generator=generator)
        for x, y in zip(images[:150].split(100), labels[:150].split(100), strict=True)
    ]
    # the CLI's batches of 100 (IWAE_BATCH) and draws: the same float32 operations, to the bit
    assert printed["neg_iwae_bound_nats"] == -torch.cat(bounds).mean().item()


@pytest.mark.parametrize(
    ("label_args", "n", "expected"),
    [([], 12, [d % 10 for d in range(12)]), (["3"], 4, [3] * 4), (["1", "7"], 5, [1, 7, 1, 7, 1])],
)
def test_cli_sample_draws_the_chosen_labels(
    cli_run, tmp_path, monkeypatch, label_args, n, expected
):
    drawn = {}
    real = commands.sample_prior

    def spy(model, n, *, labels=None, **kwargs):
        drawn["labels"] = labels
        return real(model, n, labels=labels, **kwargs)

    monkeypatch.setattr(commands, "sample_prior", spy)
    out = tmp_path / "s.png"
    label = ["--label", *label_args] if label_args else []
    assert (
        main(["sample", str(cli_run / "checkpoint.pt"), "--n", str(n), *label, "--out", str(out)])
        == 0
    )
    assert drawn["labels"].tolist() == expected
    assert matplotlib.image.imread(out).ndim == 3


def test_cli_refuses_a_label_for_an_unconditional_model_and_a_bad_digit(cli_run, tmp_path, capsys):
    vae_out = tmp_path / "vae"
    assert (
        main(["train", *TINY_CLI, "--epochs", "0", "--out", str(vae_out), "--device", "cpu"]) == 0
    )
    capsys.readouterr()
    cases = [
        (vae_out / "checkpoint.pt", ["--label", "3"], "--label: expected a conditional model"),
        (cli_run / "checkpoint.pt", ["--label", "10"], "expected a digit label 0..9, got '10'"),
        (cli_run / "checkpoint.pt", ["--label", "x"], "expected a digit label 0..9, got 'x'"),
    ]
    for checkpoint, label, message in cases:
        out = tmp_path / "refused.png"
        with pytest.raises(SystemExit) as exit_:
            main(["sample", str(checkpoint), *label, "--out", str(out)])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.count("\n") == 1 and message in err
        assert not out.exists()
