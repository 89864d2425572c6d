r"""Training: one `fit` for every chapter, the CLI and the benchmark.

`fit` minimises the negative ELBO with Adam, in nats per example (a mean over the batch):

$$\mathcal L(\theta, \phi) = \frac1B \sum_b \Big[-\log p_\theta(x_b \mid z_b)
+ \beta\, \mathrm{KL}\big(q_\phi(z \mid x_b) \,\|\, p(z)\big)\Big],
\qquad z_b \sim q_\phi(z \mid x_b).$$

$\beta$ may warm up over the first epochs (`kl_warmup`), and with free bits $\kappa > 0$ the KL
term becomes $\sum_j \max(\kappa, \frac1B \sum_b \mathrm{KL}_{bj})$ (`elbo.free_bits_kl`). The
history records that objective (`train_objective`) beside the true negative ELBO (`train_neg_elbo`).

The whole training set lives on the device and `data.Batches` shuffles it there, so an epoch has no
DataLoader, no host copies and no host synchronisation: the per-step sums stay on the device and are
read once, at the end of the epoch. After each epoch the model is scored on its own terms, with
$z$ sampled (`evaluate.evaluate_elbo`): with the likelihood it is trained with, on the test images
it models (`load_test_set`: grey for `binarize="none"`, else the static-binarized test set); the
history records both. Then a checkpoint is written atomically with
everything needed to resume (`checkpoint`): on a CPU a resumed run ends with the same weights as an
uninterrupted one. `TrainConfig` and `History` are defined in `run` and re-exported here.
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
from vae_tutorial.distributed import World, join, rank_seed
from vae_tutorial.elbo import (
    elbo_terms,
    free_bits_kl,
    kl_per_dimension,
    kl_warmup,
    log_likelihood,
)
from vae_tutorial.evaluate import evaluate_elbo, log_importance_weights
from vae_tutorial.models import ModelConfig, build_model
from vae_tutorial.run import History, TrainConfig

__all__ = ["FitResult", "History", "TrainConfig", "TrainingDiverged", "fit", "load_test_set"]

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
    world: World = field(default_factory=World)  # the processes that trained it (torchrun's)


def _losses(
    forward: Callable[..., Any],
    x: Tensor,
    kind: str,
    likelihood: str,
    amp: torch.autocast,
    y: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """-log p(x|z) per example (B,), and KL(q(z_j|x) || p(z_j)) per latent (B, D); AE: (B, 0).

    A CVAE (kind "cvae") is given the labels y (B,): then p(x|z,y) and q(z|x,y).
    """
    conditions = (y,) if kind == "cvae" else ()  # a CVAE's label argument
    with amp:
        out = forward(x, *conditions, check=False)  # no range check: a host sync every step
    if kind == "ae":
        log_lik = log_likelihood(likelihood)
        reconstruction = -log_lik(out.float(), x, check=False)  # $-\log p(x \mid z)$, (B,)
        return reconstruction, reconstruction.new_zeros(len(x), 0)  # no latent, no KL
    logits, mu, logvar, _ = out  # (B, 784), (B, D), (B, D), (B, D)
    terms = elbo_terms(
        logits.float(), x, mu.float(), logvar.float(), likelihood=likelihood, check=False
    )
    # $\mathrm{KL}_{bj} = \frac12 (\mu_{bj}^2 + \sigma_{bj}^2 - \log\sigma_{bj}^2 - 1)$, (B, D)
    return -terms.reconstruction, kl_per_dimension(mu.float(), logvar.float(), check=False)


def _iwae_losses(
    model: nn.Module, x: Tensor, kind: str, likelihood: str, amp: torch.autocast, y: Tensor, k: int
) -> tuple[Tensor, Tensor, Tensor]:
    """-L_k per example (B,), the loss; for the record, -log p(x|z) (B,) and the KL (B, D).

    The record's -ELBO is -(1/k) sum_i log w_i, an unbiased estimate from the same k draws, and
    -log p(x|z) is that less the closed-form KL.
    """
    labels = y if kind == "cvae" else None
    with amp:  # $\log w_i = \log p(x, z_i) - \log q(z_i \mid x)$, $z_i \sim q(z \mid x)$, (k, B)
        log_w = log_importance_weights(
            model, x, k, check=False, likelihood=likelihood, labels=labels
        ).float()
    # $-\mathcal L_k = -\log \frac1k \sum_{i=1}^k w_i = \log k - \mathrm{logsumexp}_i \log w_i$
    neg_bound = math.log(k) - torch.logsumexp(log_w, 0)  # (B,)
    with torch.no_grad():
        mu, logvar = model.encode(x, *(() if labels is None else (labels,)), check=False)
        kl = kl_per_dimension(mu.float(), logvar.float(), check=False)  # (B, D)
        # $-\log p(x \mid z) \approx -\frac1k \sum_i \log w_i - \mathrm{KL}$, (B,)
        reconstruction = -log_w.mean(0) - kl.sum(-1)
    return neg_bound, reconstruction, kl


def _check_iwae(model_config: ModelConfig, config: TrainConfig, ranks: int) -> None:
    """iwae_k > 1 needs q(z|x) (not an autoencoder) and one process (its loss bypasses DDP)."""
    if config.iwae_k > 1 and model_config.kind == "ae":
        raise ValueError(
            f"fit: TrainConfig.iwae_k={config.iwae_k} needs a VAE's q(z|x) to weigh samples, got "
            "ModelConfig.kind='ae' (no q, no L_k); use kind='vae', or iwae_k=1"
        )
    if config.iwae_k > 1 and ranks > 1:
        raise ValueError(
            f"fit: TrainConfig.iwae_k={config.iwae_k} trains in one process, got {ranks} ranks "
            "under torchrun (its loss does not pass through DistributedDataParallel); run it "
            "without torchrun, or with iwae_k=1"
        )


def _train_epoch(
    forward: Callable[..., Any],
    optimizer: torch.optim.Optimizer,
    batches: Batches,
    beta: float,
    free_bits: float,
    kind: str,
    likelihood: str,
    amp: torch.autocast,
    *,
    iwae_k: int = 1,
    model: nn.Module | None = None,
) -> Tensor:
    """One pass; per step [sum -log p(x|z), sum KL, B * loss], on the device: (steps, 3).

    iwae_k > 1 minimises -L_k instead, through `model`, the VAE itself (not a compiled wrapper).
    """
    rows = []
    for x, y in batches:  # x (B, 784), y (B,) on the device
        if iwae_k > 1:  # $\mathcal L = -\frac1B \sum_b \mathcal L_k(x_b)$ (Burda et al. 2016)
            neg_bound, reconstruction, kl = _iwae_losses(model, x, kind, likelihood, amp, y, iwae_k)
            loss = neg_bound.mean()
        else:
            reconstruction, kl = _losses(forward, x, kind, likelihood, amp, y)  # (B,), (B, D)
            # $\mathcal L = \frac1B \sum_b -\log p(x_b \mid z_b)
            # + \beta \sum_j \max\big(\kappa, \frac1B \sum_b \mathrm{KL}_{bj}\big)$,
            # $\kappa \ge 0$
            loss = reconstruction.mean() + beta * free_bits_kl(kl, free_bits, check=False)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        rows.append(torch.stack((reconstruction.sum(), kl.sum(), loss * len(x))).detach())
    return torch.stack(rows)  # (steps, 3), still on the device: no sync so far


@torch.no_grad()
def _test_losses(
    model: nn.Module, images: Tensor, likelihood: str, labels: Tensor | None = None
) -> tuple[float, float, float]:
    """-E log p(x|z), KL and -ELBO on the test images, z sampled: nats per example.

    labels (N,): the test labels, which a CVAE is scored with (its bound is on log p(x|y)).
    """
    if model.config.kind in ("vae", "cvae"):
        labels = labels if model.config.kind == "cvae" else None  # only a CVAE takes y
        scores = evaluate_elbo(
            model,
            images,
            labels=labels,
            batch_size=TEST_BATCH,
            seed=TEST_SEED,
            likelihood=likelihood,
        )
        return scores["reconstruction"], scores["kl"], scores["neg_elbo"]
    log_lik = log_likelihood(likelihood)
    total = sum(-log_lik(model(x), x).sum() for x in images.split(TEST_BATCH))
    # $-\frac1N \sum_n \log p_\theta(x_n \mid z_n)$, z_n the code of x_n
    reconstruction = float(total) / len(images)
    return reconstruction, 0.0, reconstruction


def load_test_set(
    config: TrainConfig, *, root: str | Path | None = None, device: str | torch.device = "cpu"
) -> tuple[Tensor, Tensor]:
    """The test set a model trained with config is scored on: (N, 784) images, (N,) labels.

    The data it models: grey images for binarize="none", else binarized once (seed TEST_SEED).
    """
    binarize = "none" if config.test_data == "grey" else "static"
    return load_mnist("test", root=root, device=device, binarize=binarize, seed=TEST_SEED)


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
    saved: dict[str, Any] | None,
) -> tuple[nn.Module, torch.optim.Optimizer, History, dict[str, Any] | None]:
    """The seeded initial model and its optimizer, or the state of `saved`, the run to resume."""
    torch.manual_seed(config.seed)
    model = build_model(model_config).to(device)
    # fused: the whole Adam update in one pass over each parameter (CPU and CUDA kernels)
    fused = device.type in ("cpu", "cuda")
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=fused)
    scoring = {"test_likelihood": config.likelihood, "test_data": config.test_data}
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


def _open(
    checkpoint_path: str | Path | None, resume: bool, overwrite: bool
) -> tuple[Path | None, dict[str, Any] | None]:
    """The checked checkpoint path, and the checkpoint to resume (None: start afresh)."""
    if checkpoint_path is None:
        return None, None
    checkpoint_path = ensure_writable(checkpoint_path, "checkpoint_path")
    if checkpoint_path.exists() and not (resume or overwrite):
        raise CheckpointError(
            "checkpoint_path: expected a path without a checkpoint, got "
            f"{str(checkpoint_path)!r}, which holds one; pass resume=True to continue it, "
            "overwrite=True to replace it, or another path"
        )
    resuming = resume and checkpoint_path.exists()
    return checkpoint_path, read_checkpoint(checkpoint_path) if resuming else None


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

    Under torchrun (`distributed.join`) the N ranks train one model with DistributedDataParallel:
    batch_size is the global batch (N must divide it), each rank takes its B/N rows of it, the last
    partial batch is dropped, rank 0 scores the test set and writes the checkpoint, and each rank
    draws z from its own seed per epoch. A resumed run may have another N: the data order is global.
    Free bits clamp each rank's shard mean of the KL (B/N examples), not the global batch's.
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
    world = join(device)  # under torchrun: this rank of the process group; else a world of one
    device = world.device  # on CUDA under torchrun: cuda:LOCAL_RANK
    _check_iwae(model_config, config, world.size)
    # rank 0 checks the path and reads the checkpoint; every rank gets its answer or its error
    checkpoint_path, saved = world.from_main(_open, checkpoint_path, resume, overwrite)
    model, optimizer, history, saved = _start(model_config, config, device, checkpoint_path, saved)
    if history.epochs_done == config.epochs:  # nothing left to do: no data needed
        if checkpoint_path is not None and saved is None and world.is_main:  # 0 epochs
            rng = capture_rng(torch.Generator(device).manual_seed(config.seed), device)
            save_checkpoint(
                checkpoint_path, model, history, config, optimizer=optimizer, rng_state=rng
            )
        return FitResult(model.eval(), history, time.perf_counter() - start, world)

    images, labels = load_mnist("train", root=data_root, device=device)  # (60000, 784), (60000,)
    n = len(images) if config.train_size is None else config.train_size
    if n > len(images):
        raise ValueError(f"TrainConfig.train_size: expected at most {len(images)}, got {n}")
    batches = Batches(
        images[:n],
        labels[:n],
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
        beta = config.beta * kl_warmup(epoch, config.warmup_epochs)  # $\beta_e$
        tick = time.perf_counter()
        sums = _train_epoch(
            forward,
            optimizer,
            batches,
            beta,
            config.free_bits,
            model_config.kind,
            config.likelihood,
            amp,
            iwae_k=config.iwae_k,
            model=model,
        )
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
        test = world.from_main(_test_losses, model, test_images, config.likelihood, test_labels)
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
        )
        if checkpoint_path is not None and world.is_main:  # only rank 0 writes
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
    return FitResult(model.eval(), history, time.perf_counter() - start, world)
