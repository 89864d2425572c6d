"""The cache of trained models: keyed on both configs and the checkpoint version, checked early."""

from dataclasses import fields, replace

import pytest
import torch

from vae_tutorial import cache, checkpoint, data, train
from vae_tutorial.cache import config_key, trained_model
from vae_tutorial.checkpoint import CheckpointError, load_checkpoint
from vae_tutorial.config import ModelConfig, TrainConfig

SMALL = ModelConfig(latent_dim=8, hidden_dim=64)
TINY = TrainConfig(epochs=1, train_size=256, batch_size=128)
CPU = "cpu"

pytestmark = pytest.mark.usefixtures("one_thread")

# One other valid value for every field of both configs.
OTHER = {
    "kind": "ae",
    "arch": "conv",
    "latent_dim": 9,
    "hidden_dim": 65,
    "epochs": 2,
    "batch_size": 64,
    "lr": 2e-3,
    "seed": 1,
    "beta": 0.5,
    "warmup_epochs": 3,
    "free_bits": 0.25,
    "iwae_k": 3,
    "binarize": "none",
    "likelihood": "continuous_bce",
    "train_size": 512,
    "bf16": True,
    "compile": True,
    "hidden": (64, 32),
    "activation": "tanh",
    "init": "glorot_uniform",
    "adam_eps": 1e-4,
    "lr_schedule": "burda",
    "output_bias_from_mean": True,
    "latent_dim2": 4,
    "hidden2": (16,),
}
# fields that need others beside them to be valid (hidden replaces hidden_dim; z2 is hvae's)
ALONGSIDE = {
    "hidden": {"hidden_dim": ModelConfig.hidden_dim},
    "latent_dim2": {"kind": "hvae"},
    "hidden2": {"kind": "hvae", "latent_dim2": 4},
}


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    pa, pb = a.state_dict(), b.state_dict()
    return pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)


@pytest.fixture
def no_training(monkeypatch):
    """Any attempt to train fails: the data loader is gone."""
    monkeypatch.setattr(train, "load_mnist", None)


def test_every_field_of_both_configs_changes_the_key():
    assert OTHER.keys() == {f.name for f in fields(ModelConfig) + fields(TrainConfig)}
    key = config_key(SMALL, TINY)
    assert key == config_key(replace(SMALL), replace(TINY)) and len(key) == 16
    keys = {key}
    for name, value in OTHER.items():
        if name in {f.name for f in fields(ModelConfig)}:
            keys.add(config_key(replace(SMALL, **{name: value, **ALONGSIDE.get(name, {})}), TINY))
        else:  # grey x (binarize="none") needs the continuous BCE
            both = {name: value, "likelihood": "continuous_bce"} if name == "binarize" else {}
            keys.add(config_key(SMALL, replace(TINY, **{name: value, **both})))
    assert len(keys) == len(OTHER) + 1


def test_another_checkpoint_version_changes_the_key(monkeypatch):
    key = config_key(SMALL, TINY)
    monkeypatch.setattr(checkpoint, "CHECKPOINT_VERSION", checkpoint.CHECKPOINT_VERSION + 1)
    assert config_key(SMALL, TINY) != key


def test_another_draw_of_the_binary_images_changes_the_key(monkeypatch):
    key = config_key(SMALL, TINY)
    monkeypatch.setattr(data, "DYNAMIC_DRAW", "torch.bernoulli")
    assert config_key(SMALL, TINY) != key


def test_trained_model_trains_caches_and_then_only_loads(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "default_root", lambda: tmp_path)
    result = trained_model(SMALL, TINY, device=CPU, progress=False)
    path = tmp_path / "models" / f"{config_key(SMALL, TINY)}.pt"
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert same_weights(load_checkpoint(path, CPU).model, result.model)
    monkeypatch.setattr(train, "load_mnist", None)  # training again would need the data
    cached = trained_model(SMALL, TINY, device=CPU)
    assert same_weights(cached.model, result.model) and cached.history == result.history


def test_a_cache_file_of_another_version_is_not_read(tmp_path, monkeypatch):
    trained_model(SMALL, TINY, device=CPU, cache_dir=tmp_path, progress=False)
    old = tmp_path / f"{config_key(SMALL, TINY)}.pt"
    before = old.read_bytes()
    monkeypatch.setattr(checkpoint, "CHECKPOINT_VERSION", checkpoint.CHECKPOINT_VERSION + 1)
    trained_model(SMALL, TINY, device=CPU, cache_dir=tmp_path, progress=False)  # trains anew
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [old.name, f"{config_key(SMALL, TINY)}.pt"]
    )
    assert old.read_bytes() == before


def test_an_unwritable_cache_is_found_before_any_training(tmp_path, no_training):
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError) as error:
        trained_model(SMALL, TINY, device=CPU, cache_dir=tmp_path / "file" / "models")
    message = str(error.value)
    assert message.startswith("cache_dir: expected a path in a folder that can be written, got '")
    assert "file' is a file, not a folder); pick another cache_dir" in message


def test_a_broken_cache_file_says_to_delete_it(tmp_path, no_training):
    path = tmp_path / f"{config_key(SMALL, TINY)}.pt"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError) as error:
        trained_model(SMALL, TINY, device=CPU, cache_dir=tmp_path)
    message = str(error.value)
    assert f"trained_model: the cached run {str(path)!r} cannot be used (" in message
    assert "got an empty file" in message and message.endswith(
        "delete that file to train the model again"
    )


def test_config_key_refuses_configs_of_the_wrong_type():
    with pytest.raises(ValueError, match=r"expected a ModelConfig and a TrainConfig, got dict"):
        config_key({"kind": "vae"}, TINY)
