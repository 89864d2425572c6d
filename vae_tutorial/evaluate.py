r"""Evaluation: the test ELBO in nats and bits per dimension, and active units.

## The ELBO on test data

`evaluate_elbo` averages the one-sample ELBO over a data set, with $z \sim q_\phi(z \mid x)$ drawn
from a seeded generator. A deterministic $z = \mu$ would not give the ELBO: its reconstruction term
is $\log p_\theta(x \mid \mu)$, not $\mathbb E_q[\log p_\theta(x \mid z)]$.

In bits per dimension, $\mathrm{bpd} = \frac{-\mathrm{ELBO}}{P \ln 2}$ with $P = 784$: nats to bits,
per pixel.

A model is scored on its own terms: with its own likelihood, on images of the kind it models
(`test_set.load_test_set`: grey for a model of grey pixels, the
static-binarized test set for a Bernoulli one). Scores of different likelihoods or data are not
comparable: a density on $[0, 1]^P$ is not a probability on $\{0, 1\}^P$.

## Active units (Burda et al. 2016)

A latent dimension $j$ is active when the encoder's mean moves with the input: $A_j =
\mathrm{Var}_x\big(\mathbb E_{q(z \mid x)}[z_j]\big) > 0.01$ (Burda et al. write $A_u$ for unit
$u$). An inactive dimension typically has $q(z_j \mid x) \approx p(z_j)$ for every $x$, and its KL
per latent is close to 0.

Every function refuses a model with NaN or inf weights (a diverged run) before it computes
anything, rather than return NaN.

The importance-weighted bound $\mathcal L_k$ is in `iwae`. A conditional VAE (`CVAE`) takes the
images' digit labels, `labels=` (N,) int64: its ELBO then bounds $\log p_\theta(x \mid y)$, with
$q_\phi(z \mid x, y)$ and $p_\theta(x \mid z, y)$ in place of $q_\phi(z \mid x)$ and
$p_\theta(x \mid z)$.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator

import torch
from torch import Tensor
from tqdm import tqdm

from vae_tutorial import checks, moved, resources
from vae_tutorial.config import LIKELIHOODS
from vae_tutorial.elbo import elbo_terms, kl_per_dimension
from vae_tutorial.labels import label_args
from vae_tutorial.models import VAE, Autoencoder, check_model

moved.keep_old_names(__name__)  # importance_weighted_bound ...: see `moved`


def model_likelihood(model: object, likelihood: str | None) -> str:
    """The likelihood a model is scored with: its own (None), or the one named."""
    if likelihood is None:
        return model.config.likelihood
    checks.one_of("likelihood", likelihood, LIKELIHOODS)
    return likelihood


def check_images(fn: str, images: object, at_least: int = 1) -> None:
    """A tensor with at least `at_least` images along its first axis."""
    checks.tensor(f"{fn}: images", images, "(N, 784) or (N, 1, 28, 28)")
    if images.ndim < 1 or len(images) < at_least:
        got = len(images) if images.ndim else "a 0-d tensor"
        raise ValueError(f"{fn}: expected at least {at_least} image(s), got {got}")


def in_batches(
    images: Tensor, conditions: tuple[Tensor, ...], batch_size: int, progress: str = ""
) -> Iterator[tuple[Tensor, tuple[Tensor, ...]]]:
    """Consecutive slices (x, y) of the images and of the label arguments (`label_args`: a
    CVAE's (labels,), () for other models), along the first axis.

    progress: the label of a tqdm bar with the time left, drawn on stderr only when it is a
    terminal (so captured outputs, a chapter's included, never change); "" = none."""
    batch_size = checks.positive_int("batch_size", batch_size)
    starts = range(0, len(images), batch_size)
    if progress:
        quiet = not sys.stderr.isatty()
        starts = tqdm(starts, desc=progress, unit="batch", file=sys.stderr, disable=quiet)
    for start in starts:
        part = slice(start, start + batch_size)
        yield images[part], tuple(t[part] for t in conditions)


def nats_to_bits_per_dim(nats: float | Tensor, dims: int = 784) -> float | Tensor:
    """Nats per example -> bits per dimension: nats / (dims ln 2)."""
    dims = checks.positive_int("dims", dims)
    # $\mathrm{bpd} = \frac{\mathrm{nats}}{P \ln 2}$
    return nats / (dims * math.log(2))


@resources.reported
@torch.no_grad()
def evaluate_elbo(
    model: VAE,
    images: Tensor,
    *,
    labels: Tensor | None = None,
    batch_size: int = 1000,
    seed: int = 0,
    likelihood: str | None = None,
    check: bool = True,
) -> dict[str, float]:
    """Mean one-sample ELBO terms over images (N, 784), z ~ q(z|x) seeded: nats per example.

    A CVAE needs the images' labels (N,): its conditional ELBO bounds log p(x|y). The model is
    scored with its own likelihood, on the data it models (`test_set.load_test_set`); `likelihood`
    names another one to score it with instead. check=False skips the model's weights check
    (`check_weights`), for a caller that made it.
    """
    likelihood = model_likelihood(model, likelihood)
    check_model("evaluate_elbo", model, weights=check)
    check_images("evaluate_elbo", images)
    conditions = label_args("evaluate_elbo", model, labels, len(images))  # (labels,) or ()
    checks.positive_int("batch_size", batch_size)
    seed = checks.int_at_least("seed", seed, 0)
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # (-sum log p(x|z), sum KL)
    for x, y in in_batches(images, conditions, batch_size):
        logits, mu, logvar, _ = model(x, *y, generator=generator)  # z ~ q(z|x), not z = mu
        terms = elbo_terms(logits, x.reshape(len(x), -1), mu, logvar, likelihood=likelihood)
        sums += torch.stack([-terms.reconstruction.sum(), terms.kl.sum()]).double()
    # $-\mathbb E_q \log p_\theta(x \mid z)$ and $\mathrm{KL}$, means over the images
    reconstruction, kl = (sums / len(images)).tolist()
    # $-\mathrm{ELBO} = -\log p_\theta(x \mid z) + \mathrm{KL}$
    neg_elbo = reconstruction + kl
    return {
        "neg_elbo": neg_elbo,
        "reconstruction": reconstruction,
        "kl": kl,
        "bits_per_dim": nats_to_bits_per_dim(neg_elbo),
    }


def _encoded(
    model: VAE | Autoencoder,
    images: Tensor,
    batch_size: int,
    conditions: tuple[Tensor, ...] = (),
) -> Iterator[Tensor]:
    """The encoder's outputs batch by batch: (mu, logvar) for a VAE, z for an autoencoder.

    conditions: a CVAE's labels (N,), as `label_args` gives them; () for other models.
    """
    for x, y in in_batches(images, conditions, batch_size):
        yield model.encode(x, *y)


@torch.no_grad()
def encode_dataset(
    model: VAE | Autoencoder,
    images: Tensor,
    batch_size: int = 1000,
    *,
    labels: Tensor | None = None,
) -> Tensor:
    """Latent means E_q[z] (a VAE's mu, an autoencoder's z) of images (N, 784): (N, D).

    A CVAE needs the labels (N,): the means of q(z|x,y).
    """
    check_model("encode_dataset", model, vae=False)
    check_images("encode_dataset", images)
    conditions = label_args("encode_dataset", model, labels, len(images))  # (labels,) or ()
    encoded = _encoded(model, images, batch_size, conditions)
    means = [out[0] if isinstance(model, VAE) else out for out in encoded]
    return torch.cat(means)  # (N, D)


@torch.no_grad()
def kl_per_latent(
    model: VAE, images: Tensor, *, labels: Tensor | None = None, batch_size: int = 1000
) -> Tensor:
    """Mean over images of KL(q(z_j|x) || N(0, 1)) for each latent dimension j: (D,) nats.

    A CVAE needs the labels (N,): the KL of q(z_j|x,y).
    """
    check_model("kl_per_latent", model)
    check_images("kl_per_latent", images)
    conditions = label_args("kl_per_latent", model, labels, len(images))  # (labels,) or ()
    encoded = _encoded(model, images, batch_size, conditions)
    total = sum(kl_per_dimension(mu, logvar).sum(0) for mu, logvar in encoded)
    return total / len(images)  # $\frac1N \sum_n \mathrm{KL}_j(x_n)$, (D,)


def active_units(
    model: VAE,
    images: Tensor,
    threshold: float = 0.01,
    *,
    labels: Tensor | None = None,
    batch_size: int = 1000,
) -> tuple[int, Tensor]:
    """Count of latents with Var_x(E_q[z_u]) > threshold, and the variances (D,).

    A CVAE needs the labels (N,): then E_q[z_u] is the mean of q(z|x,y).
    """
    check_model("active_units", model)
    check_images("active_units", images, at_least=2)
    threshold = checks.real("threshold", threshold, low=0.0)
    # $\mathbb E_{q(z \mid x_n)}[z]$, (N, D)
    mu = encode_dataset(model, images, batch_size, labels=labels)
    return active(mu, threshold)


def active(means: Tensor, threshold: float) -> tuple[int, Tensor]:
    """Count of units with Var_x(E_q[u]) > threshold, and the variances: means (N, D) -> (D,)."""
    variances = means.var(0)  # $A_j = \mathrm{Var}_x(\mathbb E_q[z_j])$, (D,)
    return int((variances > threshold).sum()), variances
