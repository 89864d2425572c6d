"""Resource exhaustion is one line: out of memory and a full disk, whichever exception PyTorch,
numpy or the OS raised, end the CLI with one line on stderr and status 1, nothing half-written, the
previous checkpoint kept; at the API, the package's OutOfMemory or DiskFull."""

import errno
import os

import pytest
import torch

from vae_tutorial import commands, resources, train
from vae_tutorial.checkpoint import save_checkpoint
from vae_tutorial.cli import main
from vae_tutorial.config import ModelConfig, TrainConfig
from vae_tutorial.history import History
from vae_tutorial.models import build_model
from vae_tutorial.train import TrainingDiverged, fit

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = ModelConfig(latent_dim=2, hidden_dim=8)
TINY_CLI = ["--latent-dim", "2", "--hidden-dim", "8", "--device", "cpu"]
# What PyTorch raises when torch.save's zip writer meets a full disk (torch 2.x)
FULL_DISK = "[enforce fail at inline_container.cc:672] . unexpected pos 8768 vs 8656"
FULL_DISK_2 = "PytorchStreamWriter failed writing file data/3: file write failed"
CPU_OOM = (
    "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you "
    "tried to allocate 137438953472 bytes. Error code 12 (Cannot allocate memory)"
)
CUDA_OOM = "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79 GiB"


def one_line(argv: list[str], capsys, status: int = 1) -> str:
    """Run the CLI expecting the exit status and one line on stderr; return that line."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == status, err
    assert err.count("\n") == 1 and err.startswith("python -m vae_tutorial"), err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("error", "kind", "text"),
    [
        (RuntimeError(FULL_DISK), resources.DiskFull, "f: the disk is full; free some space"),
        (RuntimeError(FULL_DISK_2), resources.DiskFull, "f: the disk is full"),
        (OSError(errno.ENOSPC, "No space left on device"), resources.DiskFull, "the disk is full"),
        (RuntimeError(CPU_OOM), resources.OutOfMemory, "f: out of memory (128.0 GiB asked); use"),
        (torch.OutOfMemoryError(CUDA_OOM), resources.OutOfMemory, "out of memory (2.00 GiB asked)"),
        (MemoryError("Unable to allocate 1.00 TiB"), resources.OutOfMemory, "(1.00 TiB asked)"),
        (MemoryError(), resources.OutOfMemory, "f: out of memory; use a smaller batch"),
    ],
)
def test_each_exhaustion_becomes_the_packages_error(error, kind, text):
    mapped = resources.exhausted(error, "f")
    assert type(mapped) is kind and text in str(mapped)


@pytest.mark.parametrize(
    "error",
    [RuntimeError("mat1 and mat2 shapes"), OSError(errno.EACCES, "denied"), ValueError("no")],
)
def test_other_errors_are_left_alone(error):
    assert resources.exhausted(error, "f") is None
    assert resources.exhausted(TrainingDiverged("diverged", epoch=1, step=2), "f") is None


def _full_disk_save(monkeypatch, message: str = FULL_DISK) -> None:
    """torch.save writes part of the file, then fails as it does on a full disk."""

    def save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise RuntimeError(message)

    monkeypatch.setattr(torch, "save", save)


def test_a_full_disk_keeps_the_previous_checkpoint_at_the_api(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    model = build_model(TINY)
    save_checkpoint(path, model, History(), TrainConfig(epochs=0))
    before = path.read_bytes()
    _full_disk_save(monkeypatch)
    with pytest.raises(resources.DiskFull, match=f"save_checkpoint: writing {path}: the disk"):
        save_checkpoint(path, model, History(), TrainConfig(epochs=0, seed=1))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no temporary file


@pytest.mark.parametrize("message", [FULL_DISK, FULL_DISK_2])
def test_a_full_disk_is_one_line_at_the_cli(message, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    argv = ["train", "--epochs", "0", "--out", str(out), *TINY_CLI]
    assert main(argv) == 0
    before = (out / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    _full_disk_save(monkeypatch, message)
    line = one_line([*argv, "--overwrite", "--seed", "1"], capsys)
    assert "train: error: save_checkpoint: writing" in line and "the disk is full" in line
    assert (out / "checkpoint.pt").read_bytes() == before
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_full_disk_leaves_no_half_written_file(tmp_path, monkeypatch, capsys):
    path = tmp_path / "metrics.json"
    path.write_bytes(b"old")

    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(resources.DiskFull, match=f"writing {path}: the disk is full"):
        resources.write_bytes(path, b"new" * 1000)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == [path.name]
    line = one_line(["train", "--epochs", "0", "--out", str(tmp_path / "run"), *TINY_CLI], capsys)
    assert "the disk is full" in line


def test_out_of_memory_in_training_is_the_packages_error_at_the_api(monkeypatch):
    def load(*args, **kwargs):
        raise RuntimeError(CPU_OOM)

    monkeypatch.setattr(train, "load_mnist", load)
    with pytest.raises(resources.OutOfMemory, match=r"fit: out of memory \(128.0 GiB asked\)"):
        fit(TINY, TrainConfig(epochs=1), device="cpu", progress=False)


@pytest.mark.parametrize(
    "error", [MemoryError(), RuntimeError(CPU_OOM), torch.OutOfMemoryError(CUDA_OOM)]
)
def test_out_of_memory_is_one_line_at_the_cli(error, tmp_path, monkeypatch, capsys):
    def fit(*args, **kwargs):
        raise error

    monkeypatch.setattr(commands, "fit", fit)  # below the API: the CLI names it itself
    line = one_line(["train", "--out", str(tmp_path / "run"), *TINY_CLI], capsys)
    assert line.startswith("python -m vae_tutorial train: error: train: out of memory")
    assert "use a smaller batch (--batch-size)" in line
