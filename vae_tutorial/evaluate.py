r"""Evaluation: the test ELBO in nats and bits per dimension, the bound L_k, active units.

## The ELBO on test data

`evaluate_elbo` averages the one-sample ELBO over a data set, with $z \sim q_\phi(z \mid x)$ drawn
from a seeded generator. A deterministic $z = \mu$ would not give the ELBO: its reconstruction term
is $\log p_\theta(x \mid \mu)$, not $\mathbb E_q[\log p_\theta(x \mid z)]$.

In bits per dimension, $\mathrm{bpd} = \frac{-\mathrm{ELBO}}{784 \ln 2}$: nats to bits, per pixel.

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
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from vae_tutorial.elbo import bernoulli_log_likelihood, elbo_terms, kl_per_dimension
from vae_tutorial.models import VAE, Autoencoder

# Decoder rows per chunk of importance_weighted_bound: about 100 MB of float32 logits.
ROWS_PER_CHUNK = 32768


def _require_vae(model: object, fn: str) -> None:
    """Raise ValueError unless model is a VAE (an autoencoder has no q(z|x), hence no ELBO)."""
    if not isinstance(model, VAE):
        raise ValueError(
            f"{fn}: expected a VAE (it needs q(z|x)), got {type(model).__name__}; "
            "a plain autoencoder has no ELBO"
        )


def _require_positive_int(name: str, value: int) -> None:
    """Raise ValueError unless value is an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {value!r}")


def _batches(images: Tensor, batch_size: int) -> Iterator[Tensor]:
    """Consecutive slices of images along the first axis."""
    _require_positive_int("batch_size", batch_size)
    for start in range(0, len(images), batch_size):
        yield images[start : start + batch_size]


def nats_to_bits_per_dim(nats: float | Tensor, dims: int = 784) -> float | Tensor:
    """Nats per example -> bits per dimension: nats / (dims ln 2)."""
    if dims < 1:
        raise ValueError(f"dims: expected an int >= 1, got {dims!r}")
    return nats / (dims * math.log(2))  # $\mathrm{bpd} = \frac{\mathrm{nats}}{d \ln 2}$


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
    _require_vae(model, "evaluate_elbo")
    if len(images) == 0:
        raise ValueError("evaluate_elbo: expected at least one image, got 0")
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # (-sum log p(x|z), sum KL)
    for x in _batches(images, batch_size):
        logits, mu, logvar, _ = model(x, generator=generator)  # z ~ q(z|x), not z = mu
        terms = elbo_terms(logits, x.reshape(len(x), -1), mu, logvar, likelihood=likelihood)
        sums += torch.stack([-terms.reconstruction.sum(), terms.kl.sum()]).double()
    reconstruction, kl = (sums / len(images)).tolist()  # $-\mathbb E \log p(x \mid z)$, KL
    neg_elbo = reconstruction + kl  # $-\mathrm{ELBO} = -\log p(x \mid z) + \mathrm{KL}$
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
    check: bool,
) -> Tensor:
    """log w_i = log p(x, z_i) - log q(z_i|x): x (B, 784), mu, logvar (B, D) -> (k, B) nats."""
    eps = torch.randn((k, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)
    z = mu + torch.exp(0.5 * logvar) * eps  # $z_i = \mu + \sigma \odot \epsilon_i$, (k, B, D)
    logits = model.decode(z.flatten(0, 1)).unflatten(0, (k, -1))  # (k, B, 784)
    log_px_z = bernoulli_log_likelihood(logits, x.expand_as(logits), check=check)  # (k, B)
    # $\log p(z) - \log q(z \mid x) = \frac12 \sum_j (\epsilon_j^2 - z_j^2 + \log\sigma_j^2)$
    log_pz_minus_log_q = 0.5 * (eps.pow(2) - z.pow(2) + logvar).sum(-1)  # (k, B)
    return log_px_z + log_pz_minus_log_q


def log_importance_weights(
    model: VAE,
    x: Tensor,
    k: int,
    *,
    generator: torch.Generator | None = None,
    check: bool = True,
) -> Tensor:
    """log p(x, z_i) - log q(z_i|x), z_i ~ q(z|x), differentiable: x (B, 784) -> (k, B) nats."""
    _require_vae(model, "log_importance_weights")
    _require_positive_int("k", k)
    mu, logvar = model.encode(x, check=check)  # (B, D) each
    return _log_weights(model, x.reshape(len(x), -1), mu, logvar, k, generator, check)


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
    _require_vae(model, "importance_weighted_bound")
    _require_positive_int("k", k)
    chunk = max(1, ROWS_PER_CHUNK // max(1, len(x))) if chunk is None else chunk
    _require_positive_int("chunk", chunk)
    mu, logvar = model.encode(x, check=check)  # (B, D) each
    x = x.reshape(len(x), -1)  # (B, 784)
    log_sum_w = torch.full_like(
        mu[:, 0], -math.inf
    )  # $\log \sum_i w_i$ over the chunks so far, (B,)
    for start in range(0, k, chunk):
        log_w = _log_weights(model, x, mu, logvar, min(chunk, k - start), generator, check)
        log_sum_w = torch.logaddexp(log_sum_w, torch.logsumexp(log_w, 0))  # $\log(e^a + e^b)$
    return log_sum_w - math.log(k)  # $\mathcal L_k = \log \frac1k \sum_i w_i$


def _encoded(model: VAE | Autoencoder, images: Tensor, batch_size: int) -> Iterator[Tensor]:
    """The encoder's outputs batch by batch: (mu, logvar) for a VAE, z for an autoencoder."""
    for x in _batches(images, batch_size):
        yield model.encode(x)


@torch.no_grad()
def encode_dataset(model: VAE | Autoencoder, images: Tensor, batch_size: int = 1000) -> Tensor:
    """Latent means E_q[z] (a VAE's mu, an autoencoder's z) of images (N, 784): (N, D)."""
    if len(images) == 0:
        raise ValueError("encode_dataset: expected at least one image, got 0")
    means = [
        out[0] if isinstance(model, VAE) else out for out in _encoded(model, images, batch_size)
    ]
    return torch.cat(means)  # (N, D)


@torch.no_grad()
def kl_per_latent(model: VAE, images: Tensor, *, batch_size: int = 1000) -> Tensor:
    """Mean over images of KL(q(z_j|x) || N(0, 1)) for each latent dimension j: (D,) nats."""
    _require_vae(model, "kl_per_latent")
    if len(images) == 0:
        raise ValueError("kl_per_latent: expected at least one image, got 0")
    total = sum(
        kl_per_dimension(mu, logvar).sum(0) for mu, logvar in _encoded(model, images, batch_size)
    )
    return total / len(images)  # $\frac1N \sum_n \mathrm{KL}_j(x_n)$, (D,)


def active_units(
    model: VAE, images: Tensor, threshold: float = 0.01, *, batch_size: int = 1000
) -> tuple[int, Tensor]:
    """Count of latents with Var_x(E_q[z_u]) > threshold, and the variances (D,)."""
    _require_vae(model, "active_units")
    if len(images) < 2:
        raise ValueError(f"active_units: expected at least 2 images, got {len(images)}")
    if not threshold >= 0:
        raise ValueError(f"threshold: expected a number >= 0, got {threshold!r}")
    mu = encode_dataset(model, images, batch_size)  # $\mathbb E_{q(z \mid x_n)}[z]$, (N, D)
    variances = mu.var(0)  # $A_u = \mathrm{Cov}_x(\mathbb E_q[z_u])$, the diagonal, (D,)
    return int((variances > threshold).sum()), variances
