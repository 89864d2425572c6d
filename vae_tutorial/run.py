"""A training run's settings and record: `TrainConfig` (how to train) and `History` (per epoch).

Both are plain dataclasses, stored in every checkpoint; `train`, `checkpoint` and `cache` import
them from here (and `train` re-exports them, where the chapters import them from).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from vae_tutorial import checks
from vae_tutorial.elbo import LIKELIHOODS

BINARIZE = ("none", "dynamic")


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
        for name, low in {"epochs": 0, "batch_size": 1, "seed": 0, "warmup_epochs": 0}.items():
            setattr(
                self, name, checks.int_at_least(f"TrainConfig.{name}", getattr(self, name), low)
            )
        if self.train_size is not None:
            self.train_size = checks.positive_int("TrainConfig.train_size", self.train_size)
        self.lr = checks.real("TrainConfig.lr", self.lr, low=0, open_low=True)
        self.beta = checks.real("TrainConfig.beta", self.beta, low=0)
        checks.one_of("TrainConfig.binarize", self.binarize, BINARIZE)
        checks.one_of("TrainConfig.likelihood", self.likelihood, LIKELIHOODS)
        if self.binarize == "none" and self.likelihood == "bernoulli":
            raise ValueError(
                "TrainConfig: likelihood='bernoulli' expects binary x, got binarize='none' (grey "
                "levels); use binarize='dynamic', or likelihood='continuous_bce' (not a likelihood)"
            )
        checks.flag("TrainConfig.bf16", self.bf16)
        checks.flag("TrainConfig.compile", self.compile)


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
