"""Burda et al.'s recipe through the package: deeper MLPs, Glorot init, Adam's eps, the schedule
as fit runs it, the decoder bias from the mean, the two-layer model in fit, checkpoints and CLI."""

import math
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from torch import nn

from vae_tutorial.checkpoint import load_checkpoint
from vae_tutorial.config import ModelConfig, TrainConfig
from vae_tutorial.data import load_mnist
from vae_tutorial.hierarchical import HierarchicalVAE
from vae_tutorial.models import build_model
from vae_tutorial.objective import batch_losses
from vae_tutorial.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")

HVAE = ModelConfig(
    kind="hvae",
    hidden=(16, 12),
    latent_dim=6,
    latent_dim2=3,
    hidden2=(8,),
    activation="tanh",
    init="glorot_uniform",
)
RECIPE = TrainConfig(
    epochs=5,
    train_size=60,
    batch_size=20,
    lr_schedule="burda",
    adam_eps=1e-4,
    output_bias_from_mean=True,
    iwae_k=3,
)


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    pa, pb = a.state_dict(), b.state_dict()
    return pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)


def test_deeper_mlp_with_tanh_and_glorot_weights():
    model = build_model(
        ModelConfig(hidden=(30, 20), latent_dim=5, activation="tanh", init="glorot_uniform")
    )
    encoder = [m for m in model.encoder if isinstance(m, nn.Linear)]
    decoder = [m for m in model.decoder if isinstance(m, nn.Linear)]
    shapes = [tuple(m.weight.shape) for m in encoder + [model.to_mu] + decoder]
    assert shapes == [(30, 784), (20, 30), (5, 20), (20, 5), (30, 20), (784, 30)]
    assert sum(isinstance(m, nn.Tanh) for m in model.modules()) == 4
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert isinstance(model.decoder[-1], nn.Linear)  # logits: no activation after the last layer
    for m in encoder + decoder + [model.to_mu, model.to_logvar]:
        fan_out, fan_in = m.weight.shape
        bound = math.sqrt(6 / (fan_in + fan_out))  # Glorot and Bengio (2010)
        assert m.weight.abs().max() <= bound and m.weight.abs().max() > 0.9 * bound
        assert torch.count_nonzero(m.bias) == 0


def test_the_default_mlp_is_one_relu_layer_of_hidden_dim():
    model = build_model(ModelConfig(hidden_dim=40, latent_dim=5))
    shapes = [tuple(m.weight.shape) for m in model.modules() if isinstance(m, nn.Linear)]
    assert shapes == [(40, 784), (5, 40), (5, 40), (40, 5), (784, 40)]
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 2


def test_hvae_losses_are_its_bounds_on_the_same_draws():
    model = build_model(HVAE).double()
    x = torch.bernoulli(
        torch.full((4, 784), 0.3, dtype=torch.float64), generator=torch.Generator().manual_seed(1)
    )
    torch.manual_seed(3)
    loss = batch_losses(model, x, torch.zeros(4), replace(RECIPE, iwae_k=3), 0).loss
    torch.manual_seed(3)
    expected = -model.importance_weighted_bound(x, 3).mean()
    torch.testing.assert_close(loss, expected.float(), rtol=1e-6, atol=0)
    torch.manual_seed(3)
    loss = batch_losses(model, x, torch.zeros(4), replace(RECIPE, iwae_k=1), 0).loss
    torch.manual_seed(3)
    torch.testing.assert_close(loss, -model.elbo_terms(x).elbo.mean().float(), rtol=1e-6, atol=0)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    path = tmp_path_factory.mktemp("recipe") / "checkpoint.pt"
    return fit(HVAE, RECIPE, device="cpu", checkpoint_path=path, progress=False), path


def test_fit_trains_at_the_schedules_rates(uninterrupted):
    # Burda et al.: stage i lasts 3^i passes at 1e-3 * 10^(-i/7): passes 0 | 1 2 3 | 4 ...
    stages = [0, 1, 1, 1, 2]
    expected = [1e-3 * 10 ** (-i / 7) for i in stages]
    assert uninterrupted[0].history.lr == pytest.approx(expected, rel=1e-12)


def test_adam_gets_the_configs_eps(uninterrupted):
    state = torch.load(uninterrupted[1], weights_only=True)["optimizer_state"]
    assert state["param_groups"][0]["eps"] == 1e-4


def test_a_resumed_hvae_run_repeats_the_uninterrupted_one(uninterrupted, tmp_path):
    path = tmp_path / "checkpoint.pt"
    fit(HVAE, replace(RECIPE, epochs=2), device="cpu", checkpoint_path=path, progress=False)
    resumed = fit(HVAE, RECIPE, device="cpu", checkpoint_path=path, resume=True, progress=False)
    assert isinstance(resumed.model, HierarchicalVAE)
    assert same_weights(resumed.model, uninterrupted[0].model)  # the bias not set again on resume
    assert resumed.history.lr == uninterrupted[0].history.lr
    assert resumed.history.test_neg_elbo == uninterrupted[0].history.test_neg_elbo
    assert load_checkpoint(path).model.config == HVAE


def test_the_output_bias_starts_at_the_logit_of_the_mean_training_image(tmp_path):
    config = ModelConfig(hidden=(12,), latent_dim=4)
    train = TrainConfig(
        epochs=1, train_size=40, batch_size=40, lr=1e-30, output_bias_from_mean=True
    )
    model = fit(config, train, device="cpu", progress=False).model  # one step of lr 1e-30: unmoved
    images, _ = load_mnist("train")
    mean = images[:40].double().mean(0).clamp(1e-4, 1 - 1e-4)
    expected = torch.log(mean / (1 - mean))  # logit
    torch.testing.assert_close(model.decoder[-1].bias.double(), expected, rtol=0, atol=1e-5)
    plain = fit(config, replace(train, output_bias_from_mean=False), device="cpu", progress=False)
    assert (plain.model.decoder[-1].bias.double() - expected).abs().max() > 1


def test_cli_reads_hidden_sizes_as_a_comma_list(tmp_path):
    argv = [
        "train",
        "--hidden",
        "24,12",
        "--latent-dim",
        "3",
        "--epochs",
        "0",
        "--out",
        str(tmp_path),
    ]
    subprocess.run([sys.executable, "-m", "vae_tutorial", *argv], check=True, capture_output=True)
    config = load_checkpoint(tmp_path / "checkpoint.pt").model.config
    assert config.hidden == (24, 12) and config.widths == (24, 12)
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "vae_tutorial",
            "train",
            "--hidden",
            "24,x",
            "--out",
            str(tmp_path / "b"),
        ],
        capture_output=True,
        text=True,
    )
    assert (
        bad.returncode == 2
        and "ModelConfig.hidden[1]" in bad.stderr
        and "Traceback" not in bad.stderr
    )


def test_zero_epochs_start_the_output_bias_and_a_run_resumed_from_them_is_one_run(tmp_path):
    config = ModelConfig(hidden=(12,), latent_dim=4)
    train = TrainConfig(epochs=1, train_size=40, batch_size=20, output_bias_from_mean=True)
    path = tmp_path / "checkpoint.pt"
    start = fit(config, replace(train, epochs=0), device="cpu", checkpoint_path=path)
    images, _ = load_mnist("train")
    mean = images[:40].double().mean(0).clamp(1e-4, 1 - 1e-4)
    expected = torch.log(mean / (1 - mean))  # logit of the mean of the training images
    torch.testing.assert_close(start.model.decoder[-1].bias.double(), expected, rtol=0, atol=1e-5)
    resumed = fit(config, train, device="cpu", checkpoint_path=path, resume=True, progress=False)
    assert same_weights(resumed.model, fit(config, train, device="cpu", progress=False).model)
