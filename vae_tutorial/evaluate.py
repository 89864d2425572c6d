r"""Evaluation: the test ELBO in nats and bits per dimension, the bound L_k, active units.

## The ELBO on test data

`evaluate_elbo` averages the one-sample ELBO over a data set, with $z \sim q_\phi(z \mid x)$ drawn
from a seeded generator. A deterministic $z = \mu$ would not give the ELBO: its reconstruction term
is $\log p_\theta(x \mid \mu)$, not $\mathbb E_q[\log p_\theta(x \mid z)]$.

In bits per dimension, $\mathrm{bpd} = \frac{-\mathrm{ELBO}}{P \ln 2}$ with $P = 784$: nats to bits,
per pixel.

## The importance-weighted bound (Burda, Grosse and Salakhutdinov 2016)

With $k$ draws $z_i \sim q_\phi(z \mid x)$ and weights
$w_i = \frac{p_\theta(x, z_i)}{q_\phi(z_i \mid x)}$, each $w_i$ is an unbiased estimate of
$p_\theta(x)$, and by Jensen's inequality

$$\mathcal L_k = \mathbb E\Big[\log \frac1k \sum_{i=1}^k w_i\Big] \le \log p_\theta(x),
\qquad \mathcal L_1 = \mathrm{ELBO} \le \mathcal L_k \le \mathcal L_{k+1}
\xrightarrow{k \to \infty} \log p_\theta(x).$$

With $z = \mu + \sigma \odot \epsilon$ the constants $\log 2\pi$ cancel:

$$\log w = \log p_\theta(x \mid z) + \log p(z) - \log q_\phi(z \mid x),$$

$$\log p(z) - \log q_\phi(z \mid x)
= \tfrac12 \sum_j \big(\epsilon_j^2 - z_j^2 + \log\sigma_j^2\big).$$

The log-weights are hundreds of nats below zero, where $e^{\log w}$ underflows, so $\log \frac1k
\sum_i w_i$ is computed as $\operatorname{logsumexp}_i \log w_i - \log k$. For large $k$ the samples
come in chunks, and the chunks' sums are combined with $\log(e^a + e^b) =
\operatorname{logaddexp}(a, b)$, so memory does not grow with $k$.

## Active units (Burda et al. 2016)

A latent dimension $u$ is active when the encoder's mean moves with the input: $A_u =
\mathrm{Cov}_x\big(\mathbb E_{q(z \mid x)}[z_u]\big) > 0.01$. An inactive dimension typically has
$q(z_u \mid x) \approx p(z_u)$ for every $x$, and its KL per latent is close to 0.

Every function refuses a model with NaN or inf weights (a diverged run) before it computes
anything, rather than return NaN.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from vae_tutorial import checks
from vae_tutorial.elbo import bernoulli_log_likelihood, elbo_terms, kl_per_dimension
from vae_tutorial.models import VAE, Autoencoder, check_model

# Decoder rows per chunk of importance_weighted_bound: about 100 MB of float32 logits.
ROWS_PER_CHUNK = 32768


def _check_images(fn: str, images: object, at_least: int = 1) -> None:
    """A tensor with at least `at_least` images along its first axis."""
    checks.tensor(f"{fn}: images", images, "(N, 784) or (N, 1, 28, 28)")
    if images.ndim < 1 or len(images) < at_least:
        got = len(images) if images.ndim else "a 0-d tensor"
        raise ValueError(f"{fn}: expected at least {at_least} image(s), got {got}")


def _batches(images: Tensor, batch_size: int) -> Iterator[Tensor]:
    """Consecutive slices of images along the first axis."""
    batch_size = checks.positive_int("batch_size", batch_size)
    for start in range(0, len(images), batch_size):
        yield images[start : start + batch_size]


def nats_to_bits_per_dim(nats: float | Tensor, dims: int = 784) -> float | Tensor:
    """Nats per example -> bits per dimension: nats / (dims ln 2)."""
    dims = checks.positive_int("dims", dims)
    # $\mathrm{bpd} = \frac{\mathrm{nats}}{P \ln 2}$
    return nats / (dims * math.log(2))


@torch.no_grad()
def evaluate_elbo(
    model: VAE,
    images: Tensor,
    *,
    batch_size: int = 1000,
    seed: int = 0,
    likelihood: str = "bernoulli",
) -> dict[str, float]:
    """Mean one-sample ELBO terms over images (N, 784), z ~ q(z|x) seeded: nats per example."""
    check_model("evaluate_elbo", model)
    _check_images("evaluate_elbo", images)
    checks.positive_int("batch_size", batch_size)
    seed = checks.int_at_least("seed", seed, 0)
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # (-sum log p(x|z), sum KL)
    for x in _batches(images, batch_size):
        logits, mu, logvar, _ = model(x, generator=generator)  # z ~ q(z|x), not z = mu
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


def _log_weights(
    model: VAE,
    x: Tensor,
    mu: Tensor,
    logvar: Tensor,
    k: int,
    generator: torch.Generator | None,
) -> Tensor:
    """log w_i = log p(x, z_i) - log q(z_i|x): x (B, 784), mu, logvar (B, D) -> (k, B) nats."""
    eps = torch.randn((k, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)
    z = mu + torch.exp(0.5 * logvar) * eps  # $z_i = \mu + \sigma \odot \epsilon_i$, (k, B, D)
    logits = model.decode(z.flatten(0, 1), check=False).unflatten(0, (k, -1))  # (k, B, 784)
    log_px_z = bernoulli_log_likelihood(logits, x.expand_as(logits), check=False)  # (k, B)
    # $\log p(z) - \log q(z \mid x) = \frac12 \sum_j (\epsilon_j^2 - z_j^2 + \log\sigma_j^2)$
    log_pz_minus_log_q = 0.5 * (eps.pow(2) - z.pow(2) + logvar).sum(-1)  # (k, B)
    return log_px_z + log_pz_minus_log_q


def _encode_binary(fn: str, model: VAE, x: Tensor, check: bool) -> tuple[Tensor, Tensor, Tensor]:
    """mu, logvar (B, D) and flat x (B, 784); model, x checked (binary) once if check."""
    check_model(fn, model, weights=check)
    mu, logvar = model.encode(x, check=check)  # (B, D) each
    x = x.reshape(len(x), -1)  # (B, 784)
    if check:
        checks.binary(f"{fn}: x", x, "binarize x: L_k bounds the Bernoulli log-likelihood")
    return mu, logvar, x


def log_importance_weights(
    model: VAE,
    x: Tensor,
    k: int,
    *,
    generator: torch.Generator | None = None,
    check: bool = True,
) -> Tensor:
    """log p(x, z_i) - log q(z_i|x), z_i ~ q(z|x), differentiable: x (B, 784) -> (k, B) nats."""
    k = checks.positive_int("k", k)
    mu, logvar, x = _encode_binary("log_importance_weights", model, x, check)
    return _log_weights(model, x, mu, logvar, k, generator)


@torch.no_grad()
def importance_weighted_bound(
    model: VAE,
    x: Tensor,
    k: int,
    *,
    chunk: int | None = None,
    generator: torch.Generator | None = None,
    check: bool = True,
) -> Tensor:
    """L_k = log (1/k) sum_i w_i, chunk samples per decoder call: x (B, 784) -> (B,) nats."""
    k = checks.positive_int("k", k)
    mu, logvar, x = _encode_binary("importance_weighted_bound", model, x, check)
    chunk = max(1, ROWS_PER_CHUNK // max(1, len(x))) if chunk is None else chunk
    chunk = checks.positive_int("chunk", chunk)
    # $\log \sum_i w_i$ over the chunks so far, (B,)
    log_sum_w = torch.full_like(mu[:, 0], -math.inf)
    for start in range(0, k, chunk):
        log_w = _log_weights(model, x, mu, logvar, min(chunk, k - start), generator)
        log_sum_w = torch.logaddexp(log_sum_w, torch.logsumexp(log_w, 0))  # $\log(e^a + e^b)$
    return log_sum_w - math.log(k)  # $\mathcal L_k = \log \frac1k \sum_i w_i$


def _encoded(model: VAE | Autoencoder, images: Tensor, batch_size: int) -> Iterator[Tensor]:
    """The encoder's outputs batch by batch: (mu, logvar) for a VAE, z for an autoencoder."""
    for x in _batches(images, batch_size):
        yield model.encode(x)


@torch.no_grad()
def encode_dataset(model: VAE | Autoencoder, images: Tensor, batch_size: int = 1000) -> Tensor:
    """Latent means E_q[z] (a VAE's mu, an autoencoder's z) of images (N, 784): (N, D)."""
    check_model("encode_dataset", model, vae=False)
    _check_images("encode_dataset", images)
    means = [
        out[0] if isinstance(model, VAE) else out for out in _encoded(model, images, batch_size)
    ]
    return torch.cat(means)  # (N, D)


@torch.no_grad()
def kl_per_latent(model: VAE, images: Tensor, *, batch_size: int = 1000) -> Tensor:
    """Mean over images of KL(q(z_j|x) || N(0, 1)) for each latent dimension j: (D,) nats."""
    check_model("kl_per_latent", model)
    _check_images("kl_per_latent", images)
    total = sum(
        kl_per_dimension(mu, logvar).sum(0) for mu, logvar in _encoded(model, images, batch_size)
    )
    return total / len(images)  # $\frac1N \sum_n \mathrm{KL}_j(x_n)$, (D,)


def active_units(
    model: VAE, images: Tensor, threshold: float = 0.01, *, batch_size: int = 1000
) -> tuple[int, Tensor]:
    """Count of latents with Var_x(E_q[z_u]) > threshold, and the variances (D,)."""
    check_model("active_units", model)
    _check_images("active_units", images, at_least=2)
    threshold = checks.real("threshold", threshold, low=0.0)
    mu = encode_dataset(model, images, batch_size)  # $\mathbb E_{q(z \mid x_n)}[z]$, (N, D)
    variances = mu.var(0)  # $A_u = \mathrm{Cov}_x(\mathbb E_q[z_u])$, the diagonal, (D,)
    return int((variances > threshold).sum()), variances
