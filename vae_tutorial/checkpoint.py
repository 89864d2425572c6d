"""Checkpoints: one file with the configs, weights, optimizer and RNG states and the history.

`save_checkpoint` writes `.<name>.<pid>.tmp` beside the target and renames it over the target, so a
reader sees the old checkpoint or the new one, never half of one; a temporary file left by a killed
writer is removed at the next save. The file gets the user's usual permissions (the umask).
`load_checkpoint` reads it back with `torch.load(weights_only=True)`: tensors and plain Python
values only, never code. Every file that is not a checkpoint this package can read raises
`CheckpointError` (a ValueError) saying what came and what to do.

Each checkpoint carries `version`, the layout of the file. A file without it was written before the
field existed, in the layout of version 1, and is read as version 1; any version other than 1 and
`READS` is refused, and every file is read in the current layout. Version 2 added fields to the
configs (each off by default) and `train_objective` to the history: a version-1 file's missing
fields take their defaults, which is how it was trained, and its `train_objective` is computed
from what shaped the loss then, reconstruction + beta_e KL per epoch. Version 3 moved the
likelihood from the train config to the model config (it is part of p_theta(x|z)). From version 3
on, a config field added later is read at its default when a file lacks it, so a new option off
by default needs no new version.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from vae_tutorial import device as devices
from vae_tutorial import moved, resources
from vae_tutorial.config import ModelConfig, TrainConfig, with_defaults
from vae_tutorial.history import History
from vae_tutorial.models import build_model
from vae_tutorial.objective import kl_warmup

moved.keep_old_names(__name__)  # capture_rng, restore_rng, check_resumable: see `moved`
CHECKPOINT_VERSION = 3  # the layout below; bump it when a field is renamed, moved or redefined
READS = (1, 2, CHECKPOINT_VERSION)  # the versions this package reads, in the current layout
KEYS = (  # what every checkpoint (versions 1 to 3) holds besides `version`
    "model_config",
    "train_config",
    "model_state",
    "optimizer_state",
    "epoch",
    "rng_state",
    "history",
)


class CheckpointError(ValueError):
    """A file that is not a checkpoint this package can read, or one that does not fit a run."""


class Checkpoint(NamedTuple):
    """What `load_checkpoint` returns."""

    model: nn.Module
    history: History
    train_config: TrainConfig
    optimizer_state: dict[str, Any] | None
    rng_state: dict[str, Tensor] | None


def _temporary(path: Path) -> Path:
    """The temporary file a save writes before renaming it over `path`."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def ensure_writable(path: str | Path, name: str) -> Path:
    """Create the folder of the file `path` and prove a file can be written there, before any work.

    Removes temporary files left beside `path` by a killed save. Raises ValueError naming `name`
    (the argument, e.g. "--out") if the folder cannot be created or written, or `path` is a folder.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{name}: expected a file path, got {str(path)!r}, which is a folder")
    probe = _temporary(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stray in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            stray.unlink(missing_ok=True)  # left by a save that was killed mid-write
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666))
        probe.unlink()
    except OSError as error:
        blocker = next((p for p in path.parents if p.exists()), None)
        why = error.strerror or type(error).__name__
        if blocker is not None and not blocker.is_dir():
            why = f"{str(blocker)!r} is a file, not a folder"
        raise ValueError(
            f"{name}: expected a path in a folder that can be written, got {str(path)!r} ({why}); "
            f"pick another {name}"
        ) from None
    return path


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    history: History,
    train_config: TrainConfig,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    rng_state: dict[str, Tensor] | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> Path:
    """Write configs, weights, optimizer, schedule and RNG states, history: a temp file, then
    os.replace. A file without `scheduler_state` (none given, or an older file) reads as None."""
    path = ensure_writable(path, "checkpoint")
    state = {
        "version": CHECKPOINT_VERSION,
        "model_config": asdict(model.config),
        "train_config": asdict(replace(train_config, likelihood=None)),  # the model's, in v3
        "model_state": model.state_dict(),
        "optimizer_state": None if optimizer is None else optimizer.state_dict(),
        "epoch": history.epochs_done,
        "rng_state": rng_state,
        "history": history.to_dict(),
        "scheduler_state": None if scheduler is None else scheduler.state_dict(),
    }
    tmp = _temporary(path)
    try:
        # 0o666 less the umask: the user's usual permissions (mkstemp would give 0o600)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # a reader sees the old file or the new one, never half of one
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        full = resources.exhausted(error, f"save_checkpoint: writing {path}")  # a full disk
        if full is None:
            raise
        raise full from error
    return path


def _refuse(got: str, fix: str = "") -> CheckpointError:
    """The error for a file that is not a checkpoint: what came, and what to pass instead."""
    fix = fix or "pass a checkpoint.pt written by `python -m vae_tutorial train` or by fit"
    return CheckpointError(f"checkpoint: expected a vae_tutorial checkpoint, got {got}; {fix}")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict, tensors on the CPU; CheckpointError for anything else."""
    path = Path(path)
    if not path.is_file():
        what = "a folder" if path.is_dir() else "no such file"
        raise CheckpointError(f"checkpoint: expected a file, got {str(path)!r} ({what})")
    if path.stat().st_size == 0:
        raise _refuse(f"an empty file {str(path)!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, random bytes, not a PyTorch file, pickled objects
        text = " ".join(str(error).split())
        pickled = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if pickled:  # weights_only refuses to build classes: a whole model, a foreign object
            got = f"{str(path)!r}, which holds Python objects ({pickled[1]}), not only tensors"
            raise _refuse(got) from None
        reason = (text.partition("WeightsUnpickler error: ")[2] or text).split(" Check the doc")[0]
        got = f"{str(path)!r}, which torch.load cannot read ({reason[:80]}): truncated or not one"
        raise _refuse(got) from None
    if isinstance(state, dict) and state and all(isinstance(v, Tensor) for v in state.values()):
        fix = (
            "load it with build_model(config).load_state_dict(torch.load(path)), or save_checkpoint"
        )
        raise _refuse(f"a bare state_dict of {len(state)} tensors (no configs)", fix)
    if not isinstance(state, dict):
        raise _refuse(f"{str(path)!r}, which holds a {type(state).__name__}")
    version = state.get("version", 1)
    if version not in READS:
        raise CheckpointError(
            f"checkpoint: expected format version {CHECKPOINT_VERSION} (the one this vae_tutorial "
            f"reads) or one of {READS[:-1]} (which it upgrades), got version {version!r} in "
            f"{str(path)!r}; load it with the vae_tutorial release that wrote it, or train the "
            "model again"
        )
    missing = [key for key in KEYS if key not in state]
    if missing:
        raise _refuse(f"a dict without {', '.join(missing)}")
    _upgrade(state, version)
    return state


def _upgrade(state: dict[str, Any], version: int) -> None:
    """A checkpoint of an older version in the current layout, in place (the module docstring)."""
    model, train = state["model_config"], state["train_config"]
    if not (isinstance(model, dict) and isinstance(train, dict)):
        return  # not configs: parse_checkpoint says so
    moved = train.pop("likelihood", None)  # on the model config since version 3
    if version < 3 and moved is not None:
        model["likelihood"] = moved
    state["model_config"] = with_defaults(ModelConfig, model)  # fields added since the file
    state["train_config"] = train = with_defaults(TrainConfig, train)
    history = state["history"]
    if version == 1 and isinstance(history, dict) and "train_objective" not in history:
        try:
            epochs = zip(history["train_reconstruction"], history["train_kl"], strict=True)
            history["train_objective"] = [
                # $-\log p(x \mid z) + \beta_e \mathrm{KL}$: the loss of a version-1 run
                rec + train["beta"] * kl_warmup(e, train["warmup_epochs"]) * kl
                for e, (rec, kl) in enumerate(epochs)
            ]
        except (KeyError, TypeError, ValueError):
            pass  # not a version-1 history: left as it came
    state["version"] = CHECKPOINT_VERSION


def load_weights(model: nn.Module, weights: dict[str, Tensor], path: str | Path) -> None:
    """model.load_state_dict(weights), as a CheckpointError naming the first misfit."""
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
        raise CheckpointError(
            f"checkpoint: expected weights that fit its model_config {asdict(model.config)}, got "
            f"{lines[0] if lines else error} in {str(path)!r}; the file was altered: train again"
        ) from None


def parse_checkpoint(state: dict[str, Any], path: str | Path) -> tuple[nn.Module, History]:
    """The model (its configured architecture, the saved weights, on the CPU) and the history."""
    try:
        model = build_model(ModelConfig(**state["model_config"]))
        history = History.from_dict(state["history"])
        TrainConfig(**state["train_config"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(
            f"checkpoint: expected valid configs and history, got {error} in {str(path)!r}"
        ) from None
    load_weights(model, state["model_state"], path)
    return model, history


def load_checkpoint(path: str | Path, device: str | torch.device | None = None) -> Checkpoint:
    """Model (eval mode, on `device`), history, train config, optimizer and RNG states.

    device: a torch.device is used as it is (resolved by the caller); else `pick_device` picks.
    """
    device = device if isinstance(device, torch.device) else devices.pick_device(device)
    state = read_checkpoint(path)
    model, history = parse_checkpoint(state, path)
    return Checkpoint(
        model.to(device).eval(),
        history,
        TrainConfig(**state["train_config"]),
        state["optimizer_state"],
        state["rng_state"],
    )
