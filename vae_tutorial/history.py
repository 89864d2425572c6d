"""A training run's record, per epoch: `History`, stored in every checkpoint."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from vae_tutorial.config import TEST_DATA, ModelConfig, TrainConfig

SCORING = ("test_likelihood", "test_data")  # History's two labels of how its test values were got


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
    lr: list[float] = field(default_factory=list)  # each epoch's learning rate (NaN: not recorded)
    test_likelihood: str = ModelConfig.likelihood  # the likelihood of the test values (the model's)
    # the test images they were scored on: "binarized" or "grey"
    test_data: str = TEST_DATA[TrainConfig.binarize]

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
        """Inverse of `to_dict`; labels missing from an older file take their defaults, and a
        column it lacks (lr) is NaN for each epoch it holds."""
        history = cls(
            **{
                name: column if name in SCORING else [float(v) for v in column]
                for name, column in values.items()
            }
        )
        if not history.lr:
            history.lr = [math.nan] * history.epochs_done
        return history
