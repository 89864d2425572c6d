r"""Training: one `fit` for every chapter, the CLI and the benchmark.

`fit` minimises the negative ELBO with Adam, in nats per example (a mean over the batch):

$$\mathcal L(\theta, \phi) = \frac1B \sum_b \Big[-\log p_\theta(x_b \mid z_b)
+ \beta\, \mathrm{KL}\big(q_\phi(z \mid x_b) \,\|\, p(z)\big)\Big],
\qquad z_b \sim q_\phi(z \mid x_b).$$

$\beta$ may warm up over the first epochs (`kl_warmup`), and with free bits $\kappa > 0$ the KL
term becomes $\sum_j \max(\kappa, \frac1B \sum_b \mathrm{KL}_{bj})$ (`objective.free_bits_kl`). The
history records that objective (`train_objective`) beside the true negative ELBO (`train_neg_elbo`).

The whole training set lives on the device and `data.Batches` shuffles it there, so an epoch has no
DataLoader, no host copies and no host synchronisation: the per-step sums stay on the device and are
read once, at the end of the epoch. After each epoch the model is scored on its own terms, with
$z$ sampled (`evaluate.evaluate_elbo`): with the likelihood it is trained with, on the test images
it models (`load_test_set`: grey for `binarize="none"`, else the static-binarized test set); the
history records both. Then a checkpoint is written atomically with
everything needed to resume (`checkpoint`): on a CPU a resumed run ends with the same weights as an
uninterrupted one (`resume`). The per-batch loss is `objective`'s; the test set is `test_set`'s.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vae_tutorial import device as devices
from vae_tutorial import moved, resources
from vae_tutorial.checkpoint import save_checkpoint
from vae_tutorial.config import ModelConfig, TrainConfig, check_run
from vae_tutorial.data import Batches, load_mnist
from vae_tutorial.device import autocast, compiled, progress_bar
from vae_tutorial.distributed import World, join, rank_seed
from vae_tutorial.history import History
from vae_tutorial.layers import init_output_bias_
from vae_tutorial.objective import batch_losses
from vae_tutorial.resume import capture_rng, open_checkpoint, restore_rng, start_run, start_schedule
from vae_tutorial.test_set import load_test_set, score_test_set

__all__ = ["FitResult", "TrainingDiverged", "fit"]
moved.keep_old_names(__name__)  # TrainConfig, History, load_test_set ...: see `moved`


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
    world: World = field(default_factory=World)  # the processes that trained it (torchrun's)


def _train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Batches,
    config: TrainConfig,
    epoch: int,
    forward: Callable[..., Any],
    amp: torch.autocast,
) -> Tensor:
    """One pass; per step [sum -log p(x|z), sum KL, B * loss], on the device: (steps, 3)."""
    rows = []
    for x, y in batches:  # x (B, 784), y (B,) on the device
        losses = batch_losses(model, x, y, config, epoch, forward=forward, amp=amp)
        optimizer.zero_grad(set_to_none=True)
        losses.loss.backward()
        optimizer.step()
        sums = (losses.reconstruction.sum(), losses.kl.sum(), losses.loss * len(x))
        rows.append(torch.stack(sums).detach())
    return torch.stack(rows)  # (steps, 3), still on the device: no sync so far


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


def _training_images(
    config: TrainConfig, data_root: str | Path | None, device: torch.device
) -> tuple[Tensor, Tensor]:
    """The first train_size training images and labels (all 60,000 if None): (N, 784), (N,)."""
    images, labels = load_mnist("train", root=data_root, device=device)  # (60000, 784), (60000,)
    n = len(images) if config.train_size is None else config.train_size
    if n > len(images):
        raise ValueError(f"TrainConfig.train_size: expected at most {len(images)}, got {n}")
    return images[:n], labels[:n]


@resources.reported
def fit(
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    device: str | torch.device | None = None,
    world: World | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    data_root: str | Path | None = None,
) -> FitResult:
    """Train a model on MNIST, scoring the test set and checkpointing after every epoch.

    The configs are checked together first (`config.check_run`). device: None picks CUDA, then MPS,
    then CPU; or world: the processes to train with, joined by the caller (`distributed.join`),
    whose device is used; not both. checkpoint_path: rewritten atomically after each
    epoch (with 0 epochs, the initial model is written, its output bias already started from
    the mean when output_bias_from_mean: where training starts); an existing checkpoint there is
    continued with resume=True, replaced with overwrite=True, and otherwise refused
    (CheckpointError). Its folder is checked for writing before any training. progress: None or
    True = a tqdm bar over epochs (two lines where output is captured), False = silent. Seeds
    torch's global RNG with train_config.seed. A NaN or infinite loss raises TrainingDiverged.

    Under torchrun (`distributed.join`) the N ranks train one model with DistributedDataParallel:
    batch_size is the global batch (N must divide it), each rank takes its B/N rows of it, the last
    partial batch is dropped, rank 0 scores the test set and writes the checkpoint, and each rank
    draws z from its own seed per epoch. A resumed run may have another N: the data order is global.
    Free bits clamp each rank's shard mean of the KL (B/N examples), not the global batch's.
    """
    start = time.perf_counter()
    try:
        model_config, config = check_run(model_config, train_config)
    except ValueError as error:
        raise ValueError(f"fit: {error}") from None
    if resume and overwrite:
        raise ValueError("fit: expected resume=True or overwrite=True, got both; pick one")
    if world is not None and device is not None:
        raise ValueError(
            f"fit: expected a device or a world, got both (device={device!r}, world on "
            f"{world.device}); pass the world alone: it trains on its device"
        )
    if world is None:  # under torchrun: this rank of the process group; else a world of one
        world = join(devices.pick_device(device))
    device = world.device  # on CUDA under torchrun: cuda:LOCAL_RANK
    rows = config.iwae_k * -(-config.batch_size // world.size)  # k B images decoded per step
    data = resources.FLOAT32 * 70_000 * resources.PIXELS  # MNIST's images, on the device
    fix = "use a smaller --batch-size or --iwae-k"
    resources.check_rows("fit", rows, model_config, device, fix, copies=3, extra=data)
    if (config.iwae_k > 1 or model_config.kind == "hvae") and world.size > 1:
        raise ValueError(
            f"fit: TrainConfig.iwae_k={config.iwae_k}, ModelConfig.kind={model_config.kind!r} "
            f"trains in one process, got {world.size} "
            "ranks under torchrun (its loss does not pass through DistributedDataParallel); run "
            "it without torchrun, or with iwae_k=1"
        )
    # rank 0 checks the path and reads the checkpoint; every rank gets its answer or its error
    checkpoint_path, saved = world.from_main(open_checkpoint, checkpoint_path, resume, overwrite)
    model, optimizer, history, saved = start_run(
        model_config, config, device, checkpoint_path, saved
    )
    scheduler = start_schedule(optimizer, config, saved)  # stepped after each epoch
    images = None
    if config.output_bias_from_mean and saved is None:  # a fresh run: a resumed one has its own
        images, labels = _training_images(config, data_root, device)  # (N, 784), (N,)
        init_output_bias_(model.decoder[-1], images.float().mean(0))  # $\bar x$, (784,)
    if history.epochs_done == config.epochs:  # nothing left to train
        if checkpoint_path is not None and saved is None and world.is_main:  # 0 epochs
            rng = capture_rng(torch.Generator(device).manual_seed(config.seed), device)
            save_checkpoint(
                checkpoint_path, model, history, config, optimizer=optimizer, rng_state=rng
            )
        return FitResult(model.eval(), history, time.perf_counter() - start, world)

    if images is None:
        images, labels = _training_images(config, data_root, device)  # (N, 784), (N,)
    n = len(images)
    batches = Batches(
        images,
        labels,
        config.batch_size,
        seed=config.seed,
        binarize=config.binarize,
        drop_last=world.size > 1,
        rank=world.rank,
        world_size=world.size,
    )  # under DDP: this rank's shard of each global batch; the last partial batch is dropped
    seen = len(batches) * config.batch_size if world.size > 1 else n  # examples per epoch
    test_images, test_labels = load_test_set(config, root=data_root, device=device)
    if saved is not None:
        # on another device type the generators differ: reseed from the run's seed and epoch
        reseed = config.seed * 100_003 + history.epochs_done
        restore_rng(saved["rng_state"], batches.generator, device, seed=reseed)
    trained = world.wrap(model)  # DistributedDataParallel under torchrun: gradients all-reduced
    forward = compiled(trained, device) if config.compile else trained
    amp = autocast(device, config.bf16)

    model.train()
    progress = progress if world.is_main else False
    bar = progress_bar(range(history.epochs_done, config.epochs), config.epochs, progress)
    for epoch in bar:
        if world.size > 1:  # each rank its own z ~ q(z|x) draws, fixed by (seed, epoch, rank)
            torch.manual_seed(rank_seed(config.seed, epoch, world.rank))
        tick = time.perf_counter()
        sums = _train_epoch(model, optimizer, batches, config, epoch, forward, amp)
        sums = world.sum(sums, "the epoch's loss sums")  # over the ranks' shards
        sums = sums.double().cpu()  # the epoch's one host sync, (steps, 3)
        train_seconds = time.perf_counter() - tick
        finite = torch.isfinite(sums).all(1)  # (steps,)
        if not finite.all():
            step = int((~finite).nonzero()[0]) + 1
            raise _diverged(config, epoch + 1, step, len(batches), checkpoint_path)
        reconstruction, kl, objective = (sums.sum(0) / seen).tolist()  # nats per example

        tick = time.perf_counter()
        model.eval()
        # rank 0 scores the whole test set (as one process would); the other ranks get its scores
        test = world.from_main(score_test_set, model, test_images, test_labels)
        model.train()
        if not all(map(math.isfinite, test)):  # the last step's update broke the weights
            raise _diverged(config, epoch + 1, len(batches), len(batches), checkpoint_path)
        history.append(
            train_reconstruction=reconstruction,
            train_kl=kl,
            train_neg_elbo=reconstruction + kl,  # $-\mathrm{ELBO} = -\log p(x|z) + \mathrm{KL}$
            train_objective=objective,  # what was minimised: with beta_e and free bits
            test_reconstruction=test[0],
            test_kl=test[1],
            test_neg_elbo=test[2],
            train_seconds=train_seconds,
            test_seconds=time.perf_counter() - tick,
            lr=optimizer.param_groups[0]["lr"],  # the rate this epoch trained at
        )
        scheduler.step()  # the next epoch's rate
        if checkpoint_path is not None and world.is_main:  # only rank 0 writes
            rng = capture_rng(batches.generator, device)
            save_checkpoint(
                checkpoint_path,
                model,
                history,
                config,
                optimizer=optimizer,
                rng_state=rng,
                scheduler=scheduler,
            )
        if hasattr(bar, "set_postfix"):  # a tqdm bar, not the plain range of progress=False
            bar.set_postfix(
                train=f"{reconstruction + kl:.1f}",
                test=f"{test[2]:.1f}",
                kl=f"{test[1]:.1f}",
                refresh=False,
            )
    return FitResult(model.eval(), history, time.perf_counter() - start, world)
