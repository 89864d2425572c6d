"""Committed checkpoints of each format version load, evaluate and resume as their package did."""

import math
import shutil
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from vae_tutorial.checkpoint import CHECKPOINT_VERSION, load_checkpoint, read_checkpoint
from vae_tutorial.config import ModelConfig, TrainConfig
from vae_tutorial.evaluate import evaluate_elbo
from vae_tutorial.test_set import load_test_set
from vae_tutorial.train import fit

FIXTURES = Path(__file__).parent / "fixtures"
# what each file was trained with (tests/fixtures/make_checkpoints.py)
RUNS = {
    "v1": ({}, {}),
    "v2": (
        {"likelihood": "continuous_bernoulli"},
        {"free_bits": 0.5, "warmup_epochs": 2, "binarize": "none"},
    ),
    "v3": ({}, {"iwae_k": 2}),
}


def configs(version: str, epochs: int) -> tuple[ModelConfig, TrainConfig]:
    model, train = RUNS[version]
    options = {"epochs": epochs, "train_size": 64, "batch_size": 32, "seed": 3, **train}
    return ModelConfig(latent_dim=2, hidden_dim=4, **model), TrainConfig(**options)


@pytest.mark.parametrize("version", RUNS)
def test_each_version_loads_in_the_current_layout_and_evaluates(version):
    raw = torch.load(FIXTURES / f"{version}-epoch1.pt", weights_only=True)
    assert raw.get("version", 1) == int(version[1])  # the file is what its name says
    saved = load_checkpoint(FIXTURES / f"{version}-epoch1.pt", "cpu")
    model_config, train_config = configs(version, 1)
    assert saved.model.config == model_config  # the likelihood on the model, whatever the version
    assert saved.train_config == train_config
    assert saved.history.epochs_done == 1
    images, _ = load_test_set(train_config)
    scores = evaluate_elbo(saved.model, images[:200])
    assert saved.history.test_likelihood == model_config.likelihood
    assert all(torch.isfinite(torch.tensor(list(scores.values()))))


@pytest.mark.parametrize("version", RUNS)
def test_each_version_resumes_to_the_weights_its_own_package_reached(version, tmp_path):
    path = tmp_path / "run.pt"
    shutil.copy(FIXTURES / f"{version}-epoch1.pt", path)
    resumed = fit(
        *configs(version, 2), device="cpu", checkpoint_path=path, resume=True, progress=False
    )
    reference = load_checkpoint(FIXTURES / f"{version}-epoch2.pt", "cpu")
    # Bit for bit on the kernels that wrote the files; another CPU's kernels round otherwise. The
    # longest reduction in a gradient has P = 784 terms, so a gradient moves by at most P u
    # (u = 2^-24) relative; Adam's normalised step, at most 4 lr in its first steps, by as much:
    # over the 2 steps of epoch 2, |dw| <= 2 * 4 lr * P u = 3.7e-7.
    bound = 2 * 4 * 1e-3 * 784 * 2.0**-24
    for name, weight in reference.model.state_dict().items():
        assert torch.allclose(resumed.model.state_dict()[name], weight, rtol=0, atol=bound), name
    got, want = resumed.history.to_dict(), reference.history.to_dict()
    for key in ("train_seconds", "test_seconds"):  # wall clock
        got.pop(key), want.pop(key)
    # the epoch-1 files predate the lr column (NaN); the resumed epoch records its rate
    for lr in (got.pop("lr"), want.pop("lr")):
        assert math.isnan(lr[0]) and lr[1:] == [1e-3]
    if version == "v1":  # its file has no train_objective: the upgrade computes rec + beta_e KL
        # the loss minimised is a float32 mean (eps 6e-8 of ~555 nats: 3.3e-5 per step)
        assert got.pop("train_objective") == pytest.approx(want.pop("train_objective"), abs=1e-4)
    assert got.keys() == want.keys()
    for key, values in want.items():
        assert got[key][:1] == values[:1], key  # epoch 1 comes from the file: exactly
        # epoch 2 is computed here: its sums of P terms round by P u = 4.7e-5 relative, and the
        # weights above differ by 3.7e-7: 1e-4 of the ~550 nats
        later = values[1:]
        if all(isinstance(value, float) for value in later):  # not the likelihood's name
            later = pytest.approx(later, rel=1e-4)
        assert got[key][1:] == later, key
    assert torch.load(path, weights_only=True)["version"] == CHECKPOINT_VERSION


def test_a_version_3_file_without_a_field_added_later_reads_it_at_its_default(tmp_path):
    state = torch.load(FIXTURES / "v3-epoch1.pt", weights_only=True)
    dropped = {"model_config": "likelihood", "train_config": "free_bits"}
    for key, name in dropped.items():  # as a file written before these fields existed would be
        del state[key][name]
    torch.save(state, tmp_path / "old.pt")
    read = read_checkpoint(tmp_path / "old.pt")
    for (key, name), config in zip(dropped.items(), (ModelConfig, TrainConfig), strict=True):
        default = next(f.default for f in fields(config) if f.name == name)
        assert read[key][name] == default
    assert load_checkpoint(tmp_path / "old.pt", "cpu").model.config == configs("v3", 1)[0]
