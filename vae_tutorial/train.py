r"""Training: one `fit` for every chapter, the CLI and the benchmark.

`fit` minimises the negative ELBO with Adam, in nats per example (a mean over the batch):

$$\mathcal L(\theta, \phi) = \frac1B \sum_b \Big[-\log p_\theta(x_b \mid z_b)
+ \beta\, \mathrm{KL}\big(q_\phi(z \mid x_b) \,\|\, p(z)\big)\Big],
\qquad z_b \sim q_\phi(z \mid x_b).$$

The whole training set lives on the device and `data.Batches` shuffles it there, so an epoch has no
DataLoader, no host copies and no host synchronisation: the per-step sums stay on the device and are
read once, at the end of the epoch. After each epoch the model is scored on the static-binarized
test set with $z$ sampled (`evaluate.evaluate_elbo`), and a checkpoint is written atomically with
everything needed to resume: on a CPU a resumed run ends with the same weights as an uninterrupted
one.

`trained_model` caches finished runs by their configuration, so chapters share trained models.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from vae_tutorial.data import Batches, default_root, load_mnist
from vae_tutorial.elbo import (
    LIKELIHOODS,
    bernoulli_log_likelihood,
    continuous_bce,
    elbo_terms,
    kl_warmup,
)
from vae_tutorial.evaluate import evaluate_elbo
from vae_tutorial.models import ModelConfig, build_model

BINARIZE = ("none", "dynamic")
TEST_BATCH = 1000  # images per forward pass when scoring the test set
TEST_SEED = 0  # the static binarization of the test set and its z draws: one fixed test set


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; `epoch` and `step` (1-based) say where."""

    def __init__(self, message: str, *, epoch: int, step: int) -> None:
        super().__init__(message)
        self.epoch, self.step = epoch, step


def pick_device(preference: str | torch.device | None = None) -> torch.device:
    """CUDA if available, then Apple MPS, then CPU; or `preference` ("cpu", "cuda:1", ...)."""
    if preference is None or preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(preference)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {preference!r}"
        ) from None
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available()
        and (device.index is None or device.index < torch.cuda.device_count()),
        "mps": torch.backends.mps.is_available(),
    }
    if not available.get(device.type, False):
        usable = ", ".join(name for name, ok in available.items() if ok)
        raise ValueError(f"device: expected an available device ({usable}), got {preference!r}")
    return device


@dataclass
class TrainConfig:
    """How to train: optimiser, schedule, data and numerics. Checked on creation."""

    epochs: int = 10  # passes over the training set
    batch_size: int = 128  # examples per Adam step
    lr: float = 1e-3  # Adam learning rate
    seed: int = 0  # seeds the initial weights, the shuffling, the binarization and z ~ q(z|x)
    beta: float = 1.0  # weight of the KL term; 1 gives the negative ELBO (beta-VAE otherwise)
    warmup_epochs: int = 0  # KL warm-up: beta * min(1, (epoch + 1) / warmup_epochs); 0 = off
    binarize: str = "dynamic"  # "dynamic": fresh x ~ Bernoulli(pixels) each pass; "none": grey
    likelihood: str = "bernoulli"  # "bernoulli" (binary x), or "continuous_bce" (not a likelihood)
    train_size: int | None = None  # train on the first N of the 60,000 training images; None = all
    bf16: bool = False  # bfloat16 autocast in the forward pass, where the device supports it
    compile: bool = False  # torch.compile the model, where it works; eager otherwise

    def __post_init__(self) -> None:
        lowest = {"epochs": 0, "batch_size": 1, "seed": 0, "warmup_epochs": 0, "train_size": 1}
        for name, low in lowest.items():
            value = getattr(self, name)
            if name == "train_size" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"TrainConfig.{name}: expected an int >= {low}, got {value!r}")
        for name, zero_ok in (("lr", False), ("beta", True)):
            value, bound = getattr(self, name), ">= 0" if zero_ok else "> 0"
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not (number and math.isfinite(value) and (value > 0 or (zero_ok and value == 0))):
                raise ValueError(
                    f"TrainConfig.{name}: expected a finite number {bound}, got {value!r}"
                )
        if self.binarize not in BINARIZE:
            raise ValueError(
                f"TrainConfig.binarize: expected one of {BINARIZE}, got {self.binarize!r}"
            )
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(
                f"TrainConfig.likelihood: expected one of {LIKELIHOODS}, got {self.likelihood!r}"
            )
        if self.binarize == "none" and self.likelihood == "bernoulli":
            raise ValueError(
                "TrainConfig: likelihood='bernoulli' expects binary x, got binarize='none' (grey "
                "levels); use binarize='dynamic', or likelihood='continuous_bce' (not a likelihood)"
            )
        for name in ("bf16", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"TrainConfig.{name}: expected True or False, got {getattr(self, name)!r}"
                )


@dataclass
class History:
    """Per-epoch means in nats per example; reconstruction = -E_q[log p(x|z)], neg_elbo = rec + KL.

    Train values average over the epoch's steps while the weights move (beta = 1 in neg_elbo
    whatever the training beta); test values are scored after the epoch on the static-binarized
    test set with z sampled. For an autoencoder KL is 0 and neg_elbo is just the reconstruction.
    """

    train_reconstruction: list[float] = field(default_factory=list)
    train_kl: list[float] = field(default_factory=list)
    train_neg_elbo: list[float] = field(default_factory=list)
    test_reconstruction: list[float] = field(default_factory=list)
    test_kl: list[float] = field(default_factory=list)
    test_neg_elbo: list[float] = field(default_factory=list)
    train_seconds: list[float] = field(default_factory=list)  # wall clock of each training pass
    test_seconds: list[float] = field(default_factory=list)  # wall clock of each test evaluation

    @property
    def epochs_done(self) -> int:
        """Number of finished epochs."""
        return len(self.train_neg_elbo)

    def append(self, **values: float) -> None:
        """Add one epoch: a float for every field."""
        for f in fields(self):
            getattr(self, f.name).append(float(values[f.name]))

    def to_dict(self) -> dict[str, list[float]]:
        """Plain lists, for JSON and checkpoints."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, list[float]]) -> History:
        """Inverse of `to_dict`."""
        return cls(**{name: [float(v) for v in column] for name, column in values.items()})


@dataclass
class FitResult:
    """What `fit` returns."""

    model: nn.Module  # the trained model, in eval mode, on the training device
    history: History  # per-epoch losses, including epochs from a resumed checkpoint
    seconds: float  # wall clock of this call


class Checkpoint(NamedTuple):
    """What `load_checkpoint` returns."""

    model: nn.Module
    history: History
    train_config: TrainConfig
    optimizer_state: dict[str, Any] | None
    rng_state: dict[str, Tensor] | None


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    history: History,
    train_config: TrainConfig,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    rng_state: dict[str, Tensor] | None = None,
) -> Path:
    """Write configs, weights, optimizer and RNG states, history: a temp file, then os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model_config": asdict(model.config),
        "train_config": asdict(train_config),
        "model_state": model.state_dict(),
        "optimizer_state": None if optimizer is None else optimizer.state_dict(),
        "epoch": history.epochs_done,
        "rng_state": rng_state,
        "history": history.to_dict(),
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # a reader sees the old file or the new one, never half of one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict, tensors on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: expected a file, got {str(path)!r} (no such file)")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_checkpoint(path: str | Path, device: str | torch.device | None = None) -> Checkpoint:
    """Model (eval mode, on `device`), history, train config, optimizer and RNG states."""
    state = _read_checkpoint(path)
    model = build_model(ModelConfig(**state["model_config"]))
    model.load_state_dict(state["model_state"])
    return Checkpoint(
        model.to(pick_device(device)).eval(),
        History.from_dict(state["history"]),
        TrainConfig(**state["train_config"]),
        state["optimizer_state"],
        state["rng_state"],
    )


def _rng_state(batches: Batches, device: torch.device) -> dict[str, Tensor]:
    """Every random stream training draws from: z ~ q(z|x), shuffling and binarization."""
    state = {"torch": torch.get_rng_state(), "batches": batches.generator.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    if device.type == "mps":
        state["mps"] = torch.mps.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Tensor], batches: Batches, device: torch.device) -> None:
    """Inverse of `_rng_state`."""
    torch.set_rng_state(state["torch"])
    batches.generator.set_state(state["batches"])
    if device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    if device.type == "mps":
        torch.mps.set_rng_state(state["mps"])


def _check_resumable(saved: dict[str, Any], model_config: ModelConfig, config: TrainConfig) -> None:
    """Raise ValueError unless the checkpoint's configs match ours (only `epochs` may grow)."""
    want = {**asdict(model_config), **asdict(config), "epochs": None}
    got = {**saved["model_config"], **saved["train_config"], "epochs": None}
    if want != got:
        diff = {k: (want[k], got.get(k)) for k in want if want[k] != got.get(k)}
        raise ValueError(
            f"resume: expected a checkpoint with the same configs, got (requested, saved) {diff}"
        )
    if saved["optimizer_state"] is None or saved["rng_state"] is None:
        raise ValueError(
            "resume: expected a checkpoint written by fit (with optimizer and RNG states), "
            "got one without them"
        )
    if saved["epoch"] > config.epochs:
        raise ValueError(
            f"resume: expected at most {config.epochs} finished epochs, the checkpoint has "
            f"{saved['epoch']}"
        )


def _autocast(device: torch.device, bf16: bool) -> torch.autocast:
    """A reusable bf16 autocast context, disabled (with a warning) where the device lacks it."""
    if bf16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        warnings.warn(f"bf16 is not supported on {device}; training in float32", stacklevel=3)
        bf16 = False
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def _compiled(model: nn.Module, device: torch.device) -> Callable[..., Any]:
    """torch.compile(model) if a probe compiles on this device; else the model, with a warning."""
    try:
        torch.compile(torch.sin)(torch.zeros(2, device=device))  # needs the compiler toolchain
    except Exception as error:  # no C compiler, no Triton, an unsupported platform, ...
        reason = " ".join(str(error).split())[:200]
        warnings.warn(
            f"torch.compile is unavailable on {device} ({reason}); running eager", stacklevel=3
        )
        return model
    return torch.compile(model)


def _in_jupyter() -> bool:
    """True inside a Jupyter kernel (where tqdm.auto draws a widget)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in shell.config


def _progress_bar(epochs: range, total: int, progress: bool | None) -> Any:
    """A tqdm bar over epochs; where output is captured (no TTY, no Jupyter), one line in all."""
    if progress is False:
        return epochs
    from tqdm.auto import tqdm  # imported here: tqdm.auto inspects the notebook on import

    live = _in_jupyter() or sys.stderr.isatty()
    return tqdm(
        epochs,
        total=total,
        initial=epochs.start,
        unit="epoch",
        desc="fit",
        mininterval=0.1 if live else math.inf,  # captured: only the first and the final state
        dynamic_ncols=live,
    )


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
    reconstruction = float(total) / len(images)  # $-\frac1N \sum_n \log p(x_n \mid g(x_n))$
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


def fit(
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    device: str | torch.device | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    progress: bool | None = None,
    data_root: str | Path | None = None,
) -> FitResult:
    """Train a model on MNIST, scoring the test set and checkpointing after every epoch.

    device: None picks CUDA, then MPS, then CPU. checkpoint_path: rewritten atomically after each
    epoch; with resume=True an existing one is continued. progress: None or True = a tqdm bar over
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
    checkpoint_path = None if checkpoint_path is None else Path(checkpoint_path)
    torch.manual_seed(config.seed)
    model = build_model(model_config).to(device)
    # fused: the whole Adam update in one pass over each parameter (CPU and CUDA kernels)
    fused = device.type in ("cpu", "cuda")
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=fused)
    history, saved = History(), None
    if resume and checkpoint_path is not None and checkpoint_path.exists():
        saved = _read_checkpoint(checkpoint_path)
        _check_resumable(saved, model_config, config)
        model.load_state_dict(saved["model_state"])
        optimizer.load_state_dict(saved["optimizer_state"])
        history = History.from_dict(saved["history"])
    if history.epochs_done == config.epochs:  # nothing left to do: no data needed
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
        _set_rng_state(saved["rng_state"], batches, device)
    forward = _compiled(model, device) if config.compile else model
    amp = _autocast(device, config.bf16)

    model.train()
    bar = _progress_bar(range(history.epochs_done, config.epochs), config.epochs, progress)
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
            rng = _rng_state(batches, device)
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


def config_key(model_config: ModelConfig, train_config: TrainConfig) -> str:
    """A short hash of both configs (JSON, sorted keys): the cache file's name."""
    text = json.dumps(
        {"model": asdict(model_config), "train": asdict(train_config)}, sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def trained_model(
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    device: str | torch.device | None = None,
    cache_dir: str | Path | None = None,
    progress: bool | None = None,
) -> FitResult:
    """The model these configs train: loaded from the cache if there, else trained and cached.

    The cache file is the run's checkpoint, `<cache_dir>/<config_key>.pt`, default cache_dir
    `default_root() / "models"`; an interrupted run resumes where it stopped.
    """
    cache_dir = default_root() / "models" if cache_dir is None else Path(cache_dir)
    path = cache_dir / f"{config_key(model_config, train_config)}.pt"
    return fit(
        model_config,
        train_config,
        device=device,
        checkpoint_path=path,
        resume=True,
        progress=progress,
    )
