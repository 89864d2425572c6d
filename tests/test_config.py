"""The configs: one home per option, the CLI built from their fields, rules wherever fit runs."""

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import pytest
import torch
from torch.distributions import ContinuousBernoulli

from vae_tutorial import cli, commands, device, models
from vae_tutorial.cli import build_parser, main
from vae_tutorial.config import ModelConfig, TrainConfig, option
from vae_tutorial.distributed import join
from vae_tutorial.explorer import decode_numpy, explorer_asset, read_explorer_asset
from vae_tutorial.explorer_widget import LatentExplorer
from vae_tutorial.models import build_model
from vae_tutorial.sampling import decode_grid, interpolate, latent_grid, reconstruct, sample_prior
from vae_tutorial.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = ["--epochs", "1", "--train-size", "256", "--latent-dim", "2", "--hidden-dim", "8"]


@dataclass
class Wider(ModelConfig):
    """A model config that gains a field, as the next model option will."""

    activation: Literal["relu", "tanh"] = option("relu", "the hidden layers' nonlinearity")
    layers: int = option(1, "hidden layers on each side", low=1, high=4)
    skip: bool = option(False, "a residual connection")


def test_a_field_added_to_a_config_is_an_option_of_train_with_its_type_default_and_help(capsys):
    parser = build_parser((Wider, TrainConfig))
    train = parser.parse_args(["train"])
    assert (train.activation, train.layers, train.skip) == ("relu", 1, False)
    args = parser.parse_args(["train", "--activation", "tanh", "--layers", "3", "--skip"])
    assert (args.activation, args.layers, args.skip) == ("tanh", 3, True)
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--activation", "gelu"])  # choices from the Literal
    assert "invalid choice: 'gelu'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    help = " ".join(capsys.readouterr().out.split())
    assert "--activation {relu,tanh} the hidden layers' nonlinearity (default: relu)" in help
    assert "--layers LAYERS hidden layers on each side (range: [1, 4]) (default: 1)" in help


def test_the_new_field_reaches_the_config_train_builds(monkeypatch, tmp_path):
    built = []
    monkeypatch.setattr(cli, "ModelConfig", Wider)  # build_parser's default configs
    monkeypatch.setattr(commands, "check_run", lambda m, t: built.append(m) or (ModelConfig(), t))
    monkeypatch.setattr(commands, "fit", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    parser = build_parser((Wider, TrainConfig))
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    argv = ["train", "--layers", "2", "--out", str(tmp_path / "run"), "--device", "cpu"]
    assert main(argv) == 130
    assert built == [Wider(layers=2)]


def test_every_field_has_help_and_the_train_options_are_the_fields(capsys):
    for config in (ModelConfig, TrainConfig):
        for f in dataclasses.fields(config):
            assert f.metadata["help"], f.name
    args = build_parser().parse_args(["train"])
    for f in dataclasses.fields(ModelConfig):
        assert getattr(args, f.name) == f.default  # every default from the dataclass itself
    assert not hasattr(args, "likelihood") or args.likelihood == ModelConfig.likelihood


@pytest.mark.parametrize(
    ("model", "train", "message"),
    [
        ({"kind": "ae"}, {"iwae_k": 2}, r"fit: TrainConfig.iwae_k=2 needs a VAE's q\(z\|x\)"),
        ({"likelihood": "continuous_bce"}, {"iwae_k": 2, "binarize": "none"}, "not a likelihood"),
        ({}, {"binarize": "none"}, "likelihood='bernoulli' expects binary x"),
        ({"likelihood": "continuous_bernoulli"}, {}, "a density for grey x"),
        ({"likelihood": "continuous_bce"}, {"likelihood": "bernoulli"}, "conflicts with"),
    ],
)
def test_fit_refuses_a_pair_of_configs_no_run_can_honour_before_any_work(model, train, message):
    with pytest.raises(ValueError, match=message):
        fit(ModelConfig(**model), TrainConfig(epochs=0, **train), device="cpu", progress=False)


@pytest.mark.parametrize(
    ("field", "value"), [("beta", 1e6 * (1 + 1e-9)), ("free_bits", 2e6), ("seed", 2**32)]
)
def test_numeric_options_have_an_upper_bound_a_run_can_honour(field, value):
    with pytest.raises(ValueError, match=f"TrainConfig.{field}"):
        TrainConfig(**{field: value})
    TrainConfig(**{field: type(value)(1)})


def test_fit_takes_a_device_or_a_world_not_both():
    world = join(torch.device("cpu"))
    with pytest.raises(ValueError, match="expected a device or a world, got both"):
        fit(ModelConfig(), TrainConfig(epochs=0), device="cpu", world=world, progress=False)


def counting(monkeypatch) -> dict[str, int]:
    """Counts of device resolutions and of weight checks, from here on."""
    counts = {"pick_device": 0, "check_weights": 0}
    for module, name in ((device, "pick_device"), (models, "check_weights")):
        real = getattr(module, name)

        def counted(*args, real=real, name=name, **kwargs):
            counts[name] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)
    return counts


def test_a_cli_run_resolves_its_device_once_and_checks_the_weights_once(
    tmp_path, monkeypatch, capsys
):
    counts = counting(monkeypatch)
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out), "--device", "cpu", "--samples", "4"]) == 0
    assert counts["pick_device"] == 1
    counts.update(pick_device=0, check_weights=0)
    argv = ["evaluate", str(out / "checkpoint.pt"), "--k", "3", "--iwae-images", "250"]
    assert main([*argv, "--device", "cpu"]) == 0  # three batches of L_k and one of the ELBO
    assert counts == {"pick_device": 1, "check_weights": 1}
    counts.update(pick_device=0, check_weights=0)
    argv = ["sample", str(out / "checkpoint.pt"), "--out", str(tmp_path / "s.png")]
    assert main([*argv, "--n", "4", "--device", "cpu"]) == 0
    assert counts == {"pick_device": 1, "check_weights": 1}


def reference_mean(likelihood: str, logits: torch.Tensor) -> torch.Tensor:
    """E[x|z] by torch.distributions: the continuous Bernoulli's own mean, else sigmoid."""
    if likelihood == "continuous_bernoulli":
        return ContinuousBernoulli(logits=logits.double()).mean
    return torch.sigmoid(logits.double())


@pytest.mark.parametrize("likelihood", ["bernoulli", "continuous_bce", "continuous_bernoulli"])
def test_every_picture_shows_the_models_mean_image_for_the_same_z(likelihood, tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=2, hidden_dim=8, likelihood=likelihood)).eval()
    with torch.no_grad():
        model.decoder[-1].bias.add_(3.0)  # logits far from 0, where lambda and E[x] part
        x = torch.rand(2, 784)
        grid = latent_grid(3)
        pictures = {
            "decode_grid": (decode_grid(model, 3), grid),
            "sample_prior": (
                sample_prior(model, 4, seed=5),
                torch.randn(4, 2, generator=torch.Generator().manual_seed(5)),
            ),
            "reconstruct": (reconstruct(model, x), model.encode(x)[0]),
            "interpolate": (interpolate(model, x[0], x[1], steps=3), None),
        }
        mu = model.encode(x)[0]
        t = torch.linspace(0, 1, 3)[:, None]
        pictures["interpolate"] = (pictures["interpolate"][0], (1 - t) * mu[0] + t * mu[1])
        for name, (shown, z) in pictures.items():
            want = reference_mean(likelihood, model.decode(z))
            torch.testing.assert_close(shown.double(), want, rtol=0, atol=1e-6, msg=name)
        want = reference_mean(likelihood, model.decode(grid))  # (9, 784), the grid's means
    if likelihood == "continuous_bernoulli":
        assert (reference_mean("bernoulli", model.decode(grid)) - want).abs().max() > 0.05
        for refused in (lambda: explorer_asset(model, grid, torch.zeros(9, dtype=torch.long)),):
            with pytest.raises(ValueError, match="likelihood='continuous_bernoulli'"):
                refused()
        return
    asset = read_explorer_asset(explorer_asset(model, grid, torch.zeros(9, dtype=torch.long)))
    page = decode_numpy(
        asset, grid.numpy().astype("float64")
    )  # the page's formula, float16 weights
    torch.testing.assert_close(torch.from_numpy(page), want.detach(), rtol=0, atol=2e-2)
    widget = LatentExplorer(model, grid, torch.zeros(9, dtype=torch.long))
    shown = torch.from_numpy(widget.decode((float(grid[4, 0]), float(grid[4, 1]))).reshape(784))
    torch.testing.assert_close(shown.double(), want[4], rtol=0, atol=1e-6)
    assert math.isfinite(float(page.sum()))
