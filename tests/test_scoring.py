"""Each model scored on its own terms: the likelihood it was trained with, on the data it models.

fit's per-epoch test scores, the CLI's evaluate and L_k use grey test images for a model of grey
pixels (binarize="none") and the static-binarized test set for a Bernoulli one, and record which.
"""

import json

import pytest
import torch
from torch.distributions import ContinuousBernoulli, Normal

from vae_tutorial.checkpoint import CheckpointError, load_checkpoint
from vae_tutorial.cli import main
from vae_tutorial.config import ModelConfig, TrainConfig
from vae_tutorial.data import load_mnist
from vae_tutorial.evaluate import evaluate_elbo
from vae_tutorial.iwae import importance_weighted_bound
from vae_tutorial.test_set import TEST_SEED, load_test_set
from vae_tutorial.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_MODEL = {"latent_dim": 2, "hidden_dim": 32}
TINY_TRAIN = {"epochs": 1, "train_size": 256}
# (binarize, likelihood) -> the test data that model is scored on
TERMS = [
    ("dynamic", "bernoulli", "binarized"),
    ("none", "continuous_bce", "grey"),
    ("none", "continuous_bernoulli", "grey"),
]


@pytest.fixture(scope="module")
def test_sets() -> dict[str, torch.Tensor]:
    """The two test sets, loaded independently of load_test_set."""
    grey, _ = load_mnist("test")
    binary, _ = load_mnist("test", binarize="static", seed=TEST_SEED)
    return {"grey": grey, "binarized": binary}


@pytest.mark.parametrize(("binarize", "likelihood", "data"), TERMS)
def test_load_test_set_gives_the_data_the_model_models(binarize, likelihood, data, test_sets):
    config = TrainConfig(binarize=binarize, likelihood=likelihood)
    assert config.test_data == data
    images, labels = load_test_set(config)
    assert torch.equal(images, test_sets[data]) and labels.shape == (10_000,)


@pytest.mark.parametrize("kind", ["vae", "ae"])
@pytest.mark.parametrize(("binarize", "likelihood", "data"), TERMS)
def test_fit_scores_each_epoch_on_the_models_own_terms(kind, binarize, likelihood, data, test_sets):
    config = TrainConfig(**TINY_TRAIN, binarize=binarize, likelihood=likelihood)
    result = fit(ModelConfig(kind=kind, **TINY_MODEL), config, device="cpu", progress=False)
    history, model = result.history, result.model
    assert (history.test_likelihood, history.test_data) == (likelihood, data)
    own = test_sets[data]
    if kind == "vae":  # the same seeded computation: equal to the last bit
        expected = evaluate_elbo(model, own, seed=TEST_SEED, likelihood=likelihood)["neg_elbo"]
        assert history.test_neg_elbo[-1] == pytest.approx(expected, rel=1e-12)
    else:  # an autoencoder: -log p(x | z), z = e(x), with its own likelihood, written out here
        with torch.no_grad():
            logits = model(own).double()
        x = own.double()
        # $\log\lambda = -\mathrm{softplus}(-\ell)$, $\log(1 - \lambda) = -\mathrm{softplus}(\ell)$
        log_p = -(x * torch.nn.functional.softplus(-logits))
        log_p -= (1 - x) * torch.nn.functional.softplus(logits)
        if likelihood == "continuous_bernoulli":
            log_p += ContinuousBernoulli(logits=logits)._cont_bern_log_norm()
        expected = -log_p.sum(-1).mean().item()
        # fit sums 10,000 x 784 same-signed terms in float32: relative error <= log2(7.84e6) *
        # 2^-24 = 1.4e-6 (pairwise summation); its logits, from other batch shapes, differ by a
        # few ulp, moving the sum by ~1e-6 relative: rel=1e-5 bounds both, with a margin of 4
        assert history.test_neg_elbo[-1] == pytest.approx(expected, rel=1e-5)
    if kind == "vae" and data == "grey":
        # The binarized test set gives another number, though not by much for a fixed model: the
        # log-likelihood is linear in x, so only the encoder's response to binarization moves it
        # (measured: 0.004 and 0.005 nats for this tiny model).
        binary = test_sets["binarized"]
        on_binary = evaluate_elbo(model, binary, seed=TEST_SEED, likelihood=likelihood)
        assert abs(on_binary["neg_elbo"] - history.test_neg_elbo[-1]) > 1e-3


def test_a_history_from_before_the_labels_is_not_continued_on_other_terms(tmp_path):
    path = tmp_path / "run.pt"
    config = TrainConfig(**TINY_TRAIN, binarize="none", likelihood="continuous_bernoulli")
    fit(ModelConfig(**TINY_MODEL), config, device="cpu", checkpoint_path=path, progress=False)
    state = torch.load(path, weights_only=True)
    for name in ("test_likelihood", "test_data"):
        del state["history"][name]  # as an older package wrote it: scored on binarized images
    torch.save(state, path)
    history = load_checkpoint(path).history
    assert (history.test_likelihood, history.test_data) == ("bernoulli", "binarized")
    longer = TrainConfig(
        **{**TINY_TRAIN, "epochs": 2}, binarize="none", likelihood=config.likelihood
    )
    with pytest.raises(CheckpointError, match=r"expected a history scored as .*'grey'.*overwrite"):
        fit(ModelConfig(**TINY_MODEL), longer, device="cpu", checkpoint_path=path, resume=True)


def test_l_k_of_a_grey_model_uses_its_likelihood(test_sets):
    """L_1 by hand from torch.distributions: log p(x|z) + log p(z) - log q(z|x), one z."""
    torch.manual_seed(0)
    config = TrainConfig(**TINY_TRAIN, binarize="none", likelihood="continuous_bernoulli")
    model = fit(ModelConfig(**TINY_MODEL), config, device="cpu", progress=False).model.double()
    x = test_sets["grey"][:50].double()  # the package in float64, as the reference
    got = importance_weighted_bound(
        model, x, 1, generator=torch.Generator().manual_seed(3), likelihood=config.likelihood
    )
    with torch.no_grad():
        mu, logvar = model.encode(x)
        generator = torch.Generator().manual_seed(3)
        eps = torch.randn((1, *mu.shape), generator=generator, dtype=torch.float64)[0]
        z = mu + (0.5 * logvar).exp() * eps
        logits = model.decode(z)
    q = Normal(mu, (0.5 * logvar).exp())
    log_w = ContinuousBernoulli(logits=logits).log_prob(x).sum(-1)
    log_w += Normal(0.0, 1.0).log_prob(z).sum(-1) - q.log_prob(z).sum(-1)
    # 784 pixels x 1e-9, the package's tested log-normaliser accuracy (test_continuous_bernoulli),
    # plus float64 sums of 784 terms under 1e2 each (784 * 2^-52 * 1e2 < 2e-11): 8e-7 nats
    torch.testing.assert_close(got, log_w, rtol=0, atol=784 * 1e-9 + 2e-11)
    with pytest.raises(ValueError, match="binary values in {0, 1}.*the likelihood the model was"):
        importance_weighted_bound(model, x, 1, likelihood="bernoulli")  # on grey images: refused


def test_cli_train_and_evaluate_record_and_use_the_models_terms(tmp_path, capsys, test_sets):
    out = tmp_path / "grey"
    args = ["--epochs", "1", "--train-size", "256", "--latent-dim", "2", "--hidden-dim", "32"]
    grey = ["--binarize", "none", "--likelihood", "continuous_bernoulli"]
    assert main(["train", *args, *grey, "--out", str(out), "--device", "cpu"]) == 0
    test = json.loads((out / "metrics.json").read_text())["test"]
    assert (test["likelihood"], test["test_data"]) == ("continuous_bernoulli", "grey")
    capsys.readouterr()
    evaluate = ["evaluate", str(out / "checkpoint.pt"), "--k", "5", "--iwae-images", "20"]
    assert main([*evaluate, "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["likelihood"], printed["test_data"]) == ("continuous_bernoulli", "grey")
    assert printed["neg_elbo_nats"] == pytest.approx(test["neg_elbo_nats"], rel=1e-6)
    model = load_checkpoint(out / "checkpoint.pt").model
    bound = importance_weighted_bound(
        model,
        test_sets["grey"][:20],
        5,
        generator=torch.Generator().manual_seed(0),
        likelihood="continuous_bernoulli",
    )
    assert printed["neg_iwae_bound_nats"] == pytest.approx(-bound.mean().item(), rel=1e-6)
