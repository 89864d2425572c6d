"""The test set a run is scored on after every epoch, and that score: the data a model models.

Grey images for a model trained on grey ones (`binarize="none"`), else the test set binarized once
from `TEST_SEED`: a fixed binary test set. Scores are in nats per example, z sampled, with the
model's own likelihood (`evaluate.evaluate_elbo`); an autoencoder has only its reconstruction.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from vae_tutorial.config import TrainConfig
from vae_tutorial.data import load_mnist
from vae_tutorial.evaluate import evaluate_elbo
from vae_tutorial.hierarchical import HierarchicalVAE
from vae_tutorial.hierarchical_scores import evaluate_hierarchical_elbo
from vae_tutorial.models import VAE

TEST_BATCH = 1000  # images per forward pass when scoring the test set
TEST_SEED = 0  # the static binarization of the test set and its z draws: one fixed test set


def load_test_set(
    config: TrainConfig, *, root: str | Path | None = None, device: str | torch.device = "cpu"
) -> tuple[Tensor, Tensor]:
    """The test set a model trained with config is scored on: (N, 784) images, (N,) labels.

    The data it models: grey images for binarize="none", else binarized once (seed TEST_SEED).
    """
    binarize = "none" if config.test_data == "grey" else "static"
    return load_mnist("test", root=root, device=device, binarize=binarize, seed=TEST_SEED)


@torch.no_grad()
def score_test_set(
    model: nn.Module, images: Tensor, labels: Tensor | None = None
) -> tuple[float, float, float]:
    """-E log p(x|z), KL and -ELBO on the test images, z sampled: nats per example.

    labels (N,): the test labels, which a CVAE is scored with (its bound is on log p(x|y)). The
    caller has checked the model's weights (a diverged run shows as non-finite scores).
    """
    if isinstance(model, HierarchicalVAE):  # two stochastic layers: their ELBO, the same seed
        scores = evaluate_hierarchical_elbo(model, images, batch_size=TEST_BATCH, seed=TEST_SEED)
        return scores["reconstruction"], scores["kl"], scores["neg_elbo"]
    if isinstance(model, VAE):  # q(z|x) and the ELBO
        labels = labels if model.conditional else None  # only a CVAE takes y
        scores = evaluate_elbo(
            model, images, labels=labels, batch_size=TEST_BATCH, seed=TEST_SEED, check=False
        )
        return scores["reconstruction"], scores["kl"], scores["neg_elbo"]
    total = sum(-model.log_likelihood(model(x), x).sum() for x in images.split(TEST_BATCH))
    # $-\frac1N \sum_n \log p_\theta(x_n \mid z_n)$, z_n the code of x_n
    reconstruction = float(total) / len(images)
    return reconstruction, 0.0, reconstruction
