"""Starting a run, afresh or from its checkpoint: the refusal to overwrite, the state to resume.

A checkpoint at the run's path is continued only when asked (resume), replaced only when asked
(overwrite), and otherwise refused, in one wording for the API and the command line. A resumed
run restores the weights, Adam's state and every random stream (`capture_rng`), so on a CPU it ends
with the same weights as an uninterrupted one; only `epochs` may differ from the saved configs.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vae_tutorial import schedule
from vae_tutorial.checkpoint import (
    CheckpointError,
    ensure_writable,
    parse_checkpoint,
    read_checkpoint,
)
from vae_tutorial.config import ModelConfig, TrainConfig
from vae_tutorial.history import History
from vae_tutorial.models import build_model


def open_checkpoint(
    path: str | Path | None,
    resume: bool,
    overwrite: bool,
    *,
    name: str = "checkpoint_path",
    flags: tuple[str, str] = ("resume=True", "overwrite=True"),
) -> tuple[Path | None, dict[str, Any] | None]:
    """The checked checkpoint path, and the checkpoint to resume (None: start afresh).

    An existing checkpoint without resume or overwrite raises CheckpointError naming the argument
    (`name`) and the two ways on (`flags`, as the caller spells them).
    """
    if path is None:
        return None, None
    path = ensure_writable(path, name)
    if path.exists() and not (resume or overwrite):
        raise CheckpointError(
            f"{name}: expected a path without a checkpoint, got {str(path)!r}, which holds one; "
            f"pass {flags[0]} to continue it (same settings), {flags[1]} to replace it, or "
            f"another {name}"
        )
    resuming = resume and path.exists()
    return path, read_checkpoint(path) if resuming else None


def start_run(
    model_config: ModelConfig,
    config: TrainConfig,
    device: torch.device,
    checkpoint_path: Path | None,
    saved: dict[str, Any] | None,
) -> tuple[nn.Module, torch.optim.Optimizer, History, dict[str, Any] | None]:
    """The seeded initial model and its optimizer, or the state of `saved`, the run to resume."""
    torch.manual_seed(config.seed)
    model = build_model(model_config).to(device)
    # fused: the whole Adam update in one pass over each parameter (CPU and CUDA kernels)
    fused = device.type in ("cpu", "cuda")
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, eps=config.adam_eps, fused=fused)
    scoring = {"test_likelihood": model_config.likelihood, "test_data": config.test_data}
    if saved is None:
        return model, optimizer, History(**scoring), None
    check_resumable(saved, model_config, config)
    weights, history = parse_checkpoint(saved, checkpoint_path)
    was = {name: getattr(history, name) for name in scoring}
    if history.epochs_done < config.epochs and was != scoring:  # a file from an older package
        raise CheckpointError(
            f"checkpoint: expected a history scored as {scoring}, got {was} in "
            f"{str(checkpoint_path)!r}; its epochs cannot be continued on other terms: pass "
            "overwrite=True (or delete the file) to train again"
        )
    model.load_state_dict(weights.state_dict())
    optimizer.load_state_dict(saved["optimizer_state"])
    return model, optimizer, history, saved


def start_schedule(
    optimizer: torch.optim.Optimizer, config: TrainConfig, saved: dict[str, Any] | None
) -> torch.optim.lr_scheduler.LambdaLR:
    """The run's learning-rate schedule (`schedule`), at the epoch the optimizer resumes from.

    Built after the optimizer and before any step; a checkpoint's `scheduler_state` restores its
    epoch. A file without one (written before schedules existed) ran at a constant rate, so its
    epoch is the epochs it holds.
    """
    scheduler = schedule.scheduler(optimizer, config.lr_schedule)  # sets lr to epoch 0's
    if saved is not None:
        state = saved.get("scheduler_state")
        scheduler.load_state_dict(state or {**scheduler.state_dict(), "last_epoch": saved["epoch"]})
        for group, lr in zip(optimizer.param_groups, scheduler.get_last_lr(), strict=True):
            group["lr"] = lr  # the rate of the epoch it resumes at, not epoch 0's
    return scheduler


def capture_rng(batches: torch.Generator, device: torch.device) -> dict[str, Tensor]:
    """Every random stream training draws from: z ~ q(z|x) (torch's), and the batches' generator."""
    state = {"torch": torch.get_rng_state(), "batches": batches.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    if device.type == "mps":
        state["mps"] = torch.mps.get_rng_state()
    return state


def restore_rng(
    state: dict[str, Tensor], batches: torch.Generator, device: torch.device, *, seed: int
) -> None:
    """Inverse of `capture_rng`. On another device type (the generators differ) `seed` reseeds."""
    saved_on = "cuda" if "cuda" in state else "mps" if "mps" in state else "cpu"
    torch.set_rng_state(state["torch"])
    if saved_on == device.type:
        batches.set_state(state["batches"])
        if device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda"], device)
        if device.type == "mps":
            torch.mps.set_rng_state(state["mps"])
        return
    warnings.warn(
        f"resuming on {device.type} a run checkpointed on {saved_on}: their random generators "
        "differ, so shuffling, binarization and z continue from fresh seeds; the run will not "
        "repeat an uninterrupted one bit for bit",
        stacklevel=3,
    )
    batches.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)
    if device.type == "mps":
        torch.mps.manual_seed(seed)


def check_resumable(saved: dict[str, Any], model_config: ModelConfig, config: TrainConfig) -> None:
    """Raise CheckpointError unless the checkpoint's configs match ours (only `epochs` may grow)."""
    want = {**asdict(model_config), **asdict(config), "epochs": None}
    got = {**saved["model_config"], **saved["train_config"], "epochs": None}
    if want != got:
        diff = {k: (want[k], got.get(k)) for k in want if want[k] != got.get(k)}
        raise CheckpointError(
            f"resume: expected a checkpoint with the same configs, got (requested, saved) {diff}; "
            "resume with the saved configs, or start a new run elsewhere or with overwrite"
        )
    if saved["optimizer_state"] is None or saved["rng_state"] is None:
        raise CheckpointError(
            "resume: expected a checkpoint written by fit (with optimizer and RNG states), "
            "got one without them"
        )
    if saved["epoch"] > config.epochs:
        raise CheckpointError(
            f"resume: expected at most {config.epochs} finished epochs, the checkpoint has "
            f"{saved['epoch']}"
        )
