"""Checkpoint files: round trip, atomic writes, permissions, versions, and every broken file."""

import os
import stat
import subprocess
import sys
import textwrap
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from vae_tutorial import checkpoint, resume
from vae_tutorial.checkpoint import CHECKPOINT_VERSION, CheckpointError, ensure_writable
from vae_tutorial.config import ModelConfig, TrainConfig
from vae_tutorial.history import History
from vae_tutorial.models import build_model

SMALL = ModelConfig(latent_dim=8, hidden_dim=64)
TINY = TrainConfig(epochs=1, train_size=2000, batch_size=128)
CPU = torch.device("cpu")


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    pa, pb = a.state_dict(), b.state_dict()
    return pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)


@pytest.fixture
def saved(tmp_path) -> Path:
    """A checkpoint of an untrained SMALL model with one epoch of made-up history."""
    history = History()
    history.append(**{name: 1.0 for name in History().to_dict()})
    return checkpoint.save_checkpoint(tmp_path / "run.pt", build_model(SMALL), history, TINY)


def rewrite(path: Path, change) -> Path:
    """Load the raw dict, let `change` edit it, save it back."""
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)
    return path


def test_round_trip(tmp_path):
    torch.manual_seed(0)
    model, history = build_model(SMALL), History()
    history.append(**{name: 2.5 for name in history.to_dict()})
    path = tmp_path / "sub" / "model.pt"
    optimizer = torch.optim.Adam(model.parameters(), lr=0.5)
    rng = {"torch": torch.get_rng_state()}
    checkpoint.save_checkpoint(path, model, history, TINY, optimizer=optimizer, rng_state=rng)
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary file left
    assert torch.load(path, weights_only=True)["version"] == CHECKPOINT_VERSION
    loaded = checkpoint.load_checkpoint(path, CPU)
    assert same_weights(loaded.model, model)
    assert loaded.model.config == SMALL and not loaded.model.training
    assert loaded.history == history and loaded.train_config == TINY
    assert loaded.optimizer_state["param_groups"][0]["lr"] == 0.5
    assert torch.equal(loaded.rng_state["torch"], rng["torch"])


def test_a_file_from_before_versions_is_read_as_version_1(saved):
    rewrite(saved, lambda state: state.pop("version"))
    assert checkpoint.load_checkpoint(saved, CPU).model.config == SMALL


def test_another_version_is_refused_naming_both_versions(saved):
    rewrite(saved, lambda state: state.update(version=CHECKPOINT_VERSION + 1))
    with pytest.raises(CheckpointError) as error:
        checkpoint.load_checkpoint(saved, CPU)
    message = str(error.value)
    assert (
        f"expected format version {CHECKPOINT_VERSION} (the one this vae_tutorial reads)" in message
    )
    assert f"got version {CHECKPOINT_VERSION + 1}" in message
    assert "the vae_tutorial release that wrote it, or train the model again" in message


class Foreign:
    """Any class: weights_only=True refuses to unpickle it."""


def broken(kind: str, folder: Path, good: Path) -> Path:
    """A file that is not a checkpoint, of the given kind."""
    path = folder / f"{kind.replace(' ', '_')}.pt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "random bytes":
        path.write_bytes(torch.randint(0, 256, (5000,), dtype=torch.uint8).numpy().tobytes())
    elif kind == "foreign":
        torch.save({"model": Foreign()}, path)
    elif kind == "bare state_dict":
        torch.save(build_model(SMALL).state_dict(), path)
    elif kind == "a list":
        torch.save([1, 2, 3], path)
    elif kind == "missing keys":
        torch.save({"version": CHECKPOINT_VERSION, "model_state": {}}, path)
    elif kind == "folder":
        path.mkdir()
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("empty", r"expected a vae_tutorial checkpoint, got an empty file '.*empty.pt'"),
        ("truncated", r"got '.*truncated.pt', which torch.load cannot read \(.*\): truncated"),
        (
            "random bytes",
            r"got '.*random_bytes.pt', which torch.load cannot read \(.*\): truncated",
        ),
        ("foreign", r"got '.*foreign.pt', which holds Python objects \(.*Foreign\), not only"),
        (
            "bare state_dict",
            r"got a bare state_dict of 10 tensors \(no configs\); load it with build",
        ),
        ("a list", r"got '.*a_list.pt', which holds a list"),
        ("missing keys", r"got a dict without model_config, train_config, optimizer_state"),
        ("folder", r"checkpoint: expected a file, got '.*folder.pt' \(a folder\)"),
        ("missing", r"checkpoint: expected a file, got '.*missing.pt' \(no such file\)"),
    ],
)
def test_a_file_that_is_not_a_checkpoint_says_what_came(kind, message, saved, tmp_path):
    path = broken(kind, tmp_path, saved)
    with pytest.raises(CheckpointError, match=message) as error:
        checkpoint.load_checkpoint(path, CPU)
    assert isinstance(error.value, ValueError)
    assert str(error.value).count("\n") == 0


def test_weights_that_disagree_with_the_config_are_named(saved):
    rewrite(saved, lambda state: state["model_config"].update(latent_dim=9))
    with pytest.raises(CheckpointError) as error:
        checkpoint.load_checkpoint(saved, CPU)
    message = str(error.value)
    assert "expected weights that fit its model_config {'kind': 'vae'" in message
    assert "'latent_dim': 9" in message and "got size mismatch for" in message
    assert "the file was altered: train again" in message


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s["model_config"].update(latent_dim=0), "ModelConfig.latent_dim"),
        (lambda s: s["model_config"].update(colour="red"), "unexpected keyword argument 'colour'"),
        (lambda s: s["train_config"].update(lr=-1.0), "TrainConfig.lr: expected a finite number"),
    ],
)
def test_invalid_configs_in_a_file_are_named(saved, change, message):
    rewrite(saved, change)
    with pytest.raises(CheckpointError, match=r"expected valid configs and history, got .*"):
        checkpoint.load_checkpoint(saved, CPU)
    with pytest.raises(CheckpointError, match=message):
        checkpoint.load_checkpoint(saved, CPU)


def test_a_failed_write_leaves_the_old_checkpoint_and_no_temporary_file(saved, monkeypatch):
    before = saved.read_bytes()

    def crash(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_checkpoint(saved, build_model(SMALL), History(), replace(TINY, epochs=5))
    assert saved.read_bytes() == before
    assert [p.name for p in saved.parent.iterdir()] == ["run.pt"]


KILLED_MID_WRITE = """
import os, signal, sys, torch
from vae_tutorial.checkpoint import save_checkpoint
from vae_tutorial.config import ModelConfig, TrainConfig
from vae_tutorial.history import History
from vae_tutorial.models import build_model

def killed(obj, f):
    f.write(b"the first half of a checkpoint")
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)

torch.save = killed
save_checkpoint(sys.argv[1], build_model(ModelConfig(latent_dim=8, hidden_dim=64)), History(),
                TrainConfig(epochs=1))
"""


def test_a_kill_mid_write_keeps_the_old_checkpoint_and_the_next_save_cleans_up(saved):
    before = saved.read_bytes()
    code = textwrap.dedent(KILLED_MID_WRITE)
    result = subprocess.run([sys.executable, "-c", code, str(saved)], capture_output=True)
    assert result.returncode == -9  # killed by SIGKILL inside the write
    strays = [p.name for p in saved.parent.iterdir() if p.name != "run.pt"]
    assert len(strays) == 1 and strays[0].startswith(".run.pt.") and strays[0].endswith(".tmp")
    assert (
        saved.read_bytes() == before
        and checkpoint.load_checkpoint(saved, CPU).model.config == SMALL
    )
    ensure_writable(saved, "checkpoint_path")  # what fit and the CLI do before training
    assert [p.name for p in saved.parent.iterdir()] == ["run.pt"]


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask-022", "umask-077"])
def test_checkpoints_get_the_usual_permissions(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = checkpoint.save_checkpoint(tmp_path / "run.pt", build_model(SMALL), History(), TINY)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_an_output_under_a_regular_file_is_refused_before_any_work(tmp_path):
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(ValueError) as error:
        ensure_writable(tmp_path / "notes.txt" / "run" / "checkpoint.pt", "--out")
    message = str(error.value)
    assert message.startswith("--out: expected a path in a folder that can be written, got '")
    assert "notes.txt' is a file, not a folder); pick another --out" in message


def test_an_output_that_is_a_folder_is_refused(tmp_path):
    with pytest.raises(
        ValueError, match=r"--out: expected a file path, got '.*', which is a folder"
    ):
        ensure_writable(tmp_path, "--out")


def test_an_unwritable_folder_is_refused(tmp_path, monkeypatch):
    # Tests may run as root, which ignores permission bits: refuse the write as the kernel would.
    real_open = os.open

    def read_only(path, *args, **kwargs):
        if Path(path).parent == tmp_path:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(
        ValueError, match=r"cache_dir: .* \(Permission denied\); pick another cache"
    ):
        ensure_writable(tmp_path / "model.pt", "cache_dir")


def test_rng_states_round_trip_on_one_device_type():
    generator = torch.Generator().manual_seed(5)
    state = resume.capture_rng(generator, CPU)
    expected = torch.rand(3), torch.rand(3, generator=generator)
    resume.restore_rng(state, generator, CPU, seed=99)
    again = torch.rand(3), torch.rand(3, generator=generator)
    assert all(torch.equal(a, b) for a, b in zip(expected, again, strict=True))


def test_rng_states_from_another_device_type_reseed_with_a_warning():
    generator = torch.Generator().manual_seed(5)
    state = resume.capture_rng(generator, CPU)
    state["cuda"] = torch.zeros(16, dtype=torch.uint8)  # as written on a GPU: Philox, 16 bytes
    state["batches"] = torch.zeros(16, dtype=torch.uint8)
    with pytest.warns(UserWarning, match=r"resuming on cpu a run checkpointed on cuda: .* fresh"):
        resume.restore_rng(state, generator, CPU, seed=7)
    assert torch.equal(
        torch.rand(3, generator=generator),
        torch.rand(3, generator=torch.Generator().manual_seed(7)),
    )


def test_read_checkpoint_returns_the_raw_dict(saved):
    state = checkpoint.read_checkpoint(saved)
    assert state["model_config"] == asdict(SMALL) and state["epoch"] == 1
    assert set(checkpoint.KEYS) | {"version", "scheduler_state"} == set(state)
