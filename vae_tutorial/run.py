"""A training run's settings and record: `TrainConfig` (how to train) and `History` (per epoch).

Both are plain dataclasses, stored in every checkpoint; `train`, `checkpoint` and `cache` import
them from here (and `train` re-exports them, where the chapters import them from).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from vae_tutorial import checks
from vae_tutorial.elbo import LIKELIHOODS

BINARIZE = ("none", "dynamic")
# A model is scored on the data it models: binary training images -> the static-binarized test set
TEST_DATA = {"dynamic": "binarized", "none": "grey"}
SCORING = ("test_likelihood", "test_data")  # History's two labels of how its test values were got


@dataclass
class TrainConfig:
    """How to train: optimiser, schedule, data and numerics. Checked on creation."""

    epochs: int = 10  # passes over the training set
    batch_size: int = 128  # examples per Adam step
    lr: float = 1e-3  # Adam learning rate
    seed: int = 0  # seeds the initial weights, the shuffling, the binarization and z ~ q(z|x)
    beta: float = 1.0  # weight of the KL term; 1 gives the negative ELBO (beta-VAE otherwise)
    warmup_epochs: int = 0  # KL warm-up: beta * min(1, (epoch + 1) / warmup_epochs); 0 = off
    free_bits: float = 0.0  # kappa, free KL in nats per latent dimension (Kingma 2016); 0 = off
    iwae_k: int = 1  # k of the IWAE objective -L_k (Burda et al. 2016); 1 = the -ELBO, closed KL
    binarize: str = "dynamic"  # "dynamic": fresh x ~ Bernoulli(pixels) each pass; "none": grey
    # "bernoulli" (binary x), "continuous_bernoulli" (grey x), "continuous_bce" (not a likelihood)
    likelihood: str = "bernoulli"
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
        self.free_bits = checks.real(
            "TrainConfig.free_bits", self.free_bits, low=0, fix="kappa in nats per latent; 0 = off"
        )
        checks.one_of("TrainConfig.binarize", self.binarize, BINARIZE)
        checks.one_of("TrainConfig.likelihood", self.likelihood, LIKELIHOODS)
        if self.binarize == "none" and self.likelihood == "bernoulli":
            raise ValueError(
                "TrainConfig: likelihood='bernoulli' expects binary x, got binarize='none' (grey "
                "levels); use binarize='dynamic', or likelihood='continuous_bernoulli' for grey x"
            )
        if self.binarize != "none" and self.likelihood == "continuous_bernoulli":
            raise ValueError(
                "TrainConfig: likelihood='continuous_bernoulli' is a density for grey x, got "
                f"binarize={self.binarize!r} (binary x, where its log-density grows without bound "
                "as the logits do); use binarize='none', or likelihood='bernoulli' for binary x"
            )
        self.iwae_k = checks.positive_int("TrainConfig.iwae_k", self.iwae_k)
        self._check_iwae()
        checks.flag("TrainConfig.bf16", self.bf16)
        checks.flag("TrainConfig.compile", self.compile)

    def _check_iwae(self) -> None:
        """L_k (k > 1) bounds log p(x) only as it stands: no KL weight, no warm-up, no free bits."""
        if self.iwae_k == 1:
            return
        misfits = {
            "beta": (self.beta, 1.0),
            "warmup_epochs": (self.warmup_epochs, 0),
            "free_bits": (self.free_bits, 0.0),
        }
        bad = [f"{name}={got!r}" for name, (got, off) in misfits.items() if got != off]
        if bad:
            raise ValueError(
                f"TrainConfig: iwae_k={self.iwae_k} trains on L_k, a bound on log p(x) that has no "
                f"separate KL term to weigh, got {', '.join(bad)}; use beta=1.0, warmup_epochs=0 "
                "and free_bits=0.0 with iwae_k > 1, or iwae_k=1 (the ELBO) with them"
            )
        if self.likelihood == "continuous_bce":
            raise ValueError(
                f"TrainConfig: iwae_k={self.iwae_k} needs a likelihood whose weights p(x, z)/q(z|x)"
                " estimate p(x), got likelihood='continuous_bce' (not a likelihood); use "
                "'bernoulli' (binary x) or 'continuous_bernoulli' (grey x)"
            )

    @property
    def test_data(self) -> str:
        """The test images the model is scored on: "binarized" (static, seeded) or "grey"."""
        return TEST_DATA[self.binarize]


@dataclass
class History:
    """Per-epoch means in nats per example; reconstruction = -E_q[log p(x|z)], neg_elbo = rec + KL.

    Train values average over the epoch's steps while the weights move (beta = 1 and no free bits
    in neg_elbo whatever the training used; train_objective is the loss minimised, with the epoch's
    beta and the free bits); test values are scored after the epoch, z sampled, with the
    likelihood the model was trained with (`test_likelihood`) on the test images of the kind it
    models (`test_data`: the static-binarized test set, or the grey one). A file written before
    these labels existed was scored as their defaults say. For an autoencoder KL is 0 and neg_elbo
    is just the reconstruction.
    """

    train_reconstruction: list[float] = field(default_factory=list)
    train_kl: list[float] = field(default_factory=list)
    train_neg_elbo: list[float] = field(default_factory=list)
    train_objective: list[float] = field(default_factory=list)  # the loss minimised
    test_reconstruction: list[float] = field(default_factory=list)
    test_kl: list[float] = field(default_factory=list)
    test_neg_elbo: list[float] = field(default_factory=list)
    train_seconds: list[float] = field(default_factory=list)  # wall clock of each training pass
    test_seconds: list[float] = field(default_factory=list)  # wall clock of each test evaluation
    test_likelihood: str = "bernoulli"  # the likelihood of the test values (TrainConfig's)
    test_data: str = "binarized"  # the test images they were scored on: "binarized" or "grey"

    @property
    def epochs_done(self) -> int:
        """Number of finished epochs."""
        return len(self.train_neg_elbo)

    def append(self, **values: float) -> None:
        """Add one epoch: a float for every per-epoch field."""
        for f in fields(self):
            if f.name not in SCORING:
                getattr(self, f.name).append(float(values[f.name]))

    def to_dict(self) -> dict[str, list[float] | str]:
        """Plain lists (and the two scoring labels), for JSON and checkpoints."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, list[float] | str]) -> History:
        """Inverse of `to_dict`; labels missing from an older file take their defaults."""
        return cls(
            **{
                name: column if name in SCORING else [float(v) for v in column]
                for name, column in values.items()
            }
        )
