r"""Training: one `fit` for every chapter, the CLI and the benchmark.

`fit` minimises the negative ELBO with Adam, in nats per example (a mean over the batch):

$$\mathcal L(\theta, \phi) = \frac1B \sum_b \Big[-\log p_\theta(x_b \mid z_b)
+ \beta\, \mathrm{KL}\big(q_\phi(z \mid x_b) \,\|\, p(z)\big)\Big],
\qquad z_b \sim q_\phi(z \mid x_b).$$

The whole training set lives on the device and `data.Batches` shuffles it there, so an epoch has no
DataLoader, no host copies and no host synchronisation: the per-step sums stay on the device and are
read once, at the end of the epoch. After each epoch the model is scored on the static-binarized
test set with $z$ sampled (`evaluate.evaluate_elbo`), and a checkpoint is written atomically with
everything needed to resume (`checkpoint`): on a CPU a resumed run ends with the same weights as an
uninterrupted one. `TrainConfig` and `History` are defined in `run` and re-exported here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vae_tutorial.checkpoint import (
    CheckpointError,
    capture_rng,
    check_resumable,
    ensure_writable,
    parse_checkpoint,
    read_checkpoint,
    restore_rng,
    save_checkpoint,
)
from vae_tutorial.data import Batches, load_mnist
from vae_tutorial.device import autocast, compiled, pick_device, progress_bar
from vae_tutorial.elbo import bernoulli_log_likelihood, continuous_bce, elbo_terms, kl_warmup
from vae_tutorial.evaluate import evaluate_elbo
from vae_tutorial.models import ModelConfig, build_model
from vae_tutorial.run import History, TrainConfig

__all__ = ["FitResult", "History", "TrainConfig", "TrainingDiverged", "fit"]

TEST_BATCH = 1000  # images per forward pass when scoring the test set
TEST_SEED = 0  # the static binarization of the test set and its z draws: one fixed test set


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; `epoch` and `step` (1-based) say where."""

    def __init__(self, message: str, *, epoch: int, step: int) -> None:
        super().__init__(message)
        self.epoch, self.step = epoch, step


@dataclass
class FitResult:
    """What `fit` returns."""

    model: nn.Module  # the trained model, in eval mode, on the training device
    history: History  # per-epoch losses, including epochs from a resumed checkpoint
    seconds: float  # wall clock of this call


def _losses(
    forward: Callable[..., Any],
    x: Tensor,
    kind: str,
    likelihood: str,
    amp: torch.autocast,
) -> tuple[Tensor, Tensor]:
    """-log p(x|z) and KL(q(z|x) || p(z)) per example, (B,) each; an autoencoder's KL is 0."""
    with amp:
        out = forward(x, check=False)  # no range check: it would sync with the host every step
    if kind == "ae":
        log_lik = bernoulli_log_likelihood if likelihood == "bernoulli" else continuous_bce
        reconstruction = -log_lik(out.float(), x, check=False)  # $-\log p(x \mid z)$, (B,)
        return reconstruction, torch.zeros_like(reconstruction)
    logits, mu, logvar, _ = out  # (B, 784), (B, D), (B, D), (B, D)
    terms = elbo_terms(
        logits.float(), x, mu.float(), logvar.float(), likelihood=likelihood, check=False
    )
    return -terms.reconstruction, terms.kl


def _train_epoch(
    forward: Callable[..., Any],
    optimizer: torch.optim.Optimizer,
    batches: Batches,
    beta: float,
    kind: str,
    likelihood: str,
    amp: torch.autocast,
) -> Tensor:
    """One pass over batches; per step [sum -log p(x|z), sum KL, loss] on the device: (steps, 3)."""
    rows = []
    for x, _ in batches:  # x (B, 784) on the device
        reconstruction, kl = _losses(forward, x, kind, likelihood, amp)  # (B,) each
        # $\mathcal L = \frac1B \sum_b [-\log p(x_b \mid z_b) + \beta\, \mathrm{KL}_b]$
        loss = (reconstruction + beta * kl).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        rows.append(torch.stack((reconstruction.sum(), kl.sum(), loss)).detach())
    return torch.stack(rows)  # (steps, 3), still on the device: no sync so far


@torch.no_grad()
def _test_losses(model: nn.Module, images: Tensor) -> tuple[float, float, float]:
    """-E log p(x|z), KL and -ELBO on the test images, z sampled: nats per example."""
    if model.config.kind == "vae":
        scores = evaluate_elbo(model, images, batch_size=TEST_BATCH, seed=TEST_SEED)
        return scores["reconstruction"], scores["kl"], scores["neg_elbo"]
    total = sum(-bernoulli_log_likelihood(model(x), x).sum() for x in images.split(TEST_BATCH))
    # $-\frac1N \sum_n \log p_\theta(x_n \mid z_n)$, z_n the code of x_n
    reconstruction = float(total) / len(images)
    return reconstruction, 0.0, reconstruction


def _diverged(
    config: TrainConfig, epoch: int, step: int, steps: int, checkpoint_path: Path | None
) -> TrainingDiverged:
    """The error for a non-finite loss, with where it happened and what to try."""
    kept = (
        f" The last good checkpoint, {checkpoint_path}, is untouched."
        if checkpoint_path is not None and checkpoint_path.exists()
        else ""
    )
    return TrainingDiverged(
        f"training diverged: non-finite loss at epoch {epoch} of {config.epochs}, step {step} "
        f"of {steps}. Try a lower learning rate (lr={config.lr:g} now, e.g. {config.lr / 10:g}), "
        f"check that the data lie in [0, 1] with no NaN, or turn bf16 off (bf16={config.bf16})."
        f"{kept}",
        epoch=epoch,
        step=step,
    )


def _start(
    model_config: ModelConfig,
    config: TrainConfig,
    device: torch.device,
    checkpoint_path: Path | None,
    resume: bool,
) -> tuple[nn.Module, torch.optim.Optimizer, History, dict[str, Any] | None]:
    """The seeded initial model and its optimizer, or the state of the checkpoint to resume."""
    torch.manual_seed(config.seed)
    model = build_model(model_config).to(device)
    # fused: the whole Adam update in one pass over each parameter (CPU and CUDA kernels)
    fused = device.type in ("cpu", "cuda")
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=fused)
    if not (resume and checkpoint_path is not None and checkpoint_path.exists()):
        return model, optimizer, History(), None
    saved = read_checkpoint(checkpoint_path)
    check_resumable(saved, model_config, config)
    weights, history = parse_checkpoint(saved, checkpoint_path)
    model.load_state_dict(weights.state_dict())
    optimizer.load_state_dict(saved["optimizer_state"])
    return model, optimizer, history, saved


def fit(
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    device: str | torch.device | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    data_root: str | Path | None = None,
) -> FitResult:
    """Train a model on MNIST, scoring the test set and checkpointing after every epoch.

    device: None picks CUDA, then MPS, then CPU. checkpoint_path: rewritten atomically after each
    epoch (with 0 epochs, the initial model is written); an existing checkpoint there is continued
    with resume=True, replaced with overwrite=True, and otherwise refused (CheckpointError). Its
    folder is checked for writing before any training. progress: None or True = a tqdm bar over
    epochs (two lines where output is captured), False = silent. Seeds torch's global RNG with
    train_config.seed. A NaN or infinite loss raises TrainingDiverged.
    """
    start = time.perf_counter()
    if not isinstance(model_config, ModelConfig) or not isinstance(train_config, TrainConfig):
        raise ValueError(
            "fit: expected a ModelConfig and a TrainConfig, "
            f"got {type(model_config).__name__} and {type(train_config).__name__}"
        )
    config, device = train_config, pick_device(device)
    if resume and overwrite:
        raise ValueError("fit: expected resume=True or overwrite=True, got both; pick one")
    if checkpoint_path is not None:
        checkpoint_path = ensure_writable(checkpoint_path, "checkpoint_path")
        if checkpoint_path.exists() and not (resume or overwrite):
            raise CheckpointError(
                "checkpoint_path: expected a path without a checkpoint, got "
                f"{str(checkpoint_path)!r}, which holds one; pass resume=True to continue it, "
                "overwrite=True to replace it, or another path"
            )
    model, optimizer, history, saved = _start(model_config, config, device, checkpoint_path, resume)
    if history.epochs_done == config.epochs:  # nothing left to do: no data needed
        if checkpoint_path is not None and saved is None:  # 0 epochs: save the initial model
            rng = capture_rng(torch.Generator(device).manual_seed(config.seed), device)
            save_checkpoint(
                checkpoint_path, model, history, config, optimizer=optimizer, rng_state=rng
            )
        return FitResult(model.eval(), history, time.perf_counter() - start)

    images, labels = load_mnist("train", root=data_root, device=device)  # (60000, 784), (60000,)
    n = len(images) if config.train_size is None else config.train_size
    if n > len(images):
        raise ValueError(f"TrainConfig.train_size: expected at most {len(images)}, got {n}")
    batches = Batches(
        images[:n], labels[:n], config.batch_size, seed=config.seed, binarize=config.binarize
    )
    test_images, _ = load_mnist(
        "test", root=data_root, device=device, binarize="static", seed=TEST_SEED
    )
    if saved is not None:
        # on another device type the generators differ: reseed from the run's seed and epoch
        reseed = config.seed * 100_003 + history.epochs_done
        restore_rng(saved["rng_state"], batches.generator, device, seed=reseed)
    forward = compiled(model, device) if config.compile else model
    amp = autocast(device, config.bf16)

    model.train()
    bar = progress_bar(range(history.epochs_done, config.epochs), config.epochs, progress)
    for epoch in bar:
        beta = config.beta * kl_warmup(epoch, config.warmup_epochs)  # $\beta_e$
        tick = time.perf_counter()
        sums = _train_epoch(
            forward, optimizer, batches, beta, model_config.kind, config.likelihood, amp
        )
        sums = sums.double().cpu()  # the epoch's one host sync, (steps, 3)
        train_seconds = time.perf_counter() - tick
        finite = torch.isfinite(sums).all(1)  # (steps,)
        if not finite.all():
            step = int((~finite).nonzero()[0]) + 1
            raise _diverged(config, epoch + 1, step, len(batches), checkpoint_path)
        reconstruction, kl = (sums[:, :2].sum(0) / n).tolist()  # nats per example

        tick = time.perf_counter()
        model.eval()
        test = _test_losses(model, test_images)
        model.train()
        if not all(map(math.isfinite, test)):  # the last step's update broke the weights
            raise _diverged(config, epoch + 1, len(batches), len(batches), checkpoint_path)
        history.append(
            train_reconstruction=reconstruction,
            train_kl=kl,
            train_neg_elbo=reconstruction + kl,  # $-\mathrm{ELBO} = -\log p(x|z) + \mathrm{KL}$
            test_reconstruction=test[0],
            test_kl=test[1],
            test_neg_elbo=test[2],
            train_seconds=train_seconds,
            test_seconds=time.perf_counter() - tick,
        )
        if checkpoint_path is not None:
            rng = capture_rng(batches.generator, device)
            save_checkpoint(
                checkpoint_path, model, history, config, optimizer=optimizer, rng_state=rng
            )
        if hasattr(bar, "set_postfix"):  # a tqdm bar, not the plain range of progress=False
            bar.set_postfix(
                train=f"{reconstruction + kl:.1f}",
                test=f"{test[2]:.1f}",
                kl=f"{test[1]:.1f}",
                refresh=False,
            )
    return FitResult(model.eval(), history, time.perf_counter() - start)
