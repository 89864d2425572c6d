r"""The evidence lower bound (ELBO) and its two terms, per example, in nats.

## The bound

For any density $q(z \mid x)$, multiplying and dividing by it inside $p(x) = \int p(x, z)\,dz$ and
rearranging gives the identity

$$\log p_\theta(x) = \underbrace{\mathbb E_{q_\phi(z \mid x)}\big[\log p_\theta(x \mid z)\big]
- \mathrm{KL}\big(q_\phi(z \mid x) \,\|\, p(z)\big)}_{\mathrm{ELBO}(x)}
+ \mathrm{KL}\big(q_\phi(z \mid x) \,\|\, p_\theta(z \mid x)\big).$$

The last KL is never negative, so the ELBO is a lower bound on $\log p_\theta(x)$, tight when $q$ is
the true posterior. We **maximise** the ELBO, i.e. **minimise** $-\mathrm{ELBO}$, in nats per
example: each term is a **sum** over the 784 pixels or the $D$ latent dimensions, and the loss is
the **mean** over the batch.

## The reconstruction term

With Bernoulli logits $\ell = f_\theta(z)$ and $\log \sigma(\ell) = -\mathrm{softplus}(-\ell)$,

$$\log p_\theta(x \mid z) = \sum_i x_i \log \sigma(\ell_i) + (1 - x_i) \log \sigma(-\ell_i)
= -\sum_i \mathrm{BCEWithLogits}(\ell_i, x_i),$$

computed from the logits, so it never takes $\log 0$. One draw $z \sim q_\phi(z \mid x)$ gives an
unbiased estimate of $\mathbb E_q[\log p_\theta(x \mid z)]$.

## The KL term, in closed form

For $q = \mathcal N(\mu, \sigma^2)$ and $p = \mathcal N(0, 1)$, $\log q(z) - \log p(z) =
-\frac12 \log \sigma^2 - \frac{(z - \mu)^2}{2\sigma^2} + \frac{z^2}{2}$, and taking
$\mathbb E_q$ ($\mathbb E_q[(z - \mu)^2] = \sigma^2$, $\mathbb E_q[z^2] = \mu^2 + \sigma^2$):

$$\mathrm{KL}\big(\mathcal N(\mu, \sigma^2) \,\|\, \mathcal N(0, 1)\big)
= \tfrac12 \big(\mu^2 + \sigma^2 - \log \sigma^2 - 1\big) \ge 0,$$

summed over the $D$ independent dimensions. It is exact: no sampling noise in this term.

## Grey levels are not Bernoulli

Applied to grey levels $x_i \in [0, 1]$, the same expression ("continuous BCE", used by the classic
PyTorch example) is **not** the log of a normalised density over $[0, 1]^{784}$: for one pixel with
$\ell = 0$, $\int_0^1 e^{x \log\frac12 + (1 - x)\log\frac12} dx = \frac12$, not 1. Its values are
not log-likelihoods and cannot be compared with one (Loaiza-Ganem and Cunningham 2019).
`bernoulli_log_likelihood` therefore refuses non-binary $x$; `continuous_bce` computes it by name.

## A weight on the KL

$-\log p_\theta(x \mid z) + \beta\, \mathrm{KL}$ is the $\beta$-VAE loss (Higgins et al. 2017);
$\beta = 1$ is the negative ELBO. A warm-up raises $\beta$ linearly from $1/E_w$ to 1 over the first
$E_w$ epochs, so the decoder learns to use $z$ before the KL pulls $q$ onto the prior.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

LIKELIHOODS = ("bernoulli", "continuous_bce")


def _check_same_shape(fn: str, names: tuple[str, str], a: Tensor, b: Tensor) -> None:
    """Raise ValueError unless a and b are floating tensors of one shape (..., N)."""
    if a.ndim < 1 or a.shape != b.shape:
        raise ValueError(
            f"{fn}: expected {names[0]} and {names[1]} of the same shape (..., N), "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    for name, t in zip(names, (a, b), strict=True):
        if not t.is_floating_point():
            raise ValueError(f"{fn}: expected a floating-point {name}, got {t.dtype}")


def bernoulli_log_likelihood(logits: Tensor, x: Tensor, *, check: bool = True) -> Tensor:
    """log p(x|z) of binary x, summed over pixels: logits, x (B, 784) -> (B,) nats."""
    _check_same_shape("bernoulli_log_likelihood", ("logits", "x"), logits, x)
    if check and not bool(((x == 0) | (x == 1)).all()):
        example = x[(x != 0) & (x != 1)][0].item()
        raise ValueError(
            f"bernoulli_log_likelihood: expected binary x in {{0, 1}}, got a value {example:.4g}; "
            "binarize x, or use continuous_bce for grey levels (it is not a log-likelihood)"
        )
    # $\log p(x \mid z) = \sum_i x_i \log\sigma(\ell_i) + (1 - x_i) \log\sigma(-\ell_i)$
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)  # (B,)


def continuous_bce(logits: Tensor, x: Tensor, *, check: bool = True) -> Tensor:
    """The Bernoulli expression on grey levels, NOT a log-likelihood: (B, 784) -> (B,) nats."""
    _check_same_shape("continuous_bce", ("logits", "x"), logits, x)
    if check and not bool(((x >= 0) & (x <= 1)).all()):
        lo, hi = torch.aminmax(x)
        raise ValueError(
            f"continuous_bce: expected x in [0, 1], got min {lo.item():.4g}, max {hi.item():.4g}"
        )
    # $\sum_i x_i \log\sigma(\ell_i) + (1 - x_i) \log\sigma(-\ell_i)$, unnormalised on $[0,1]^{784}$
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)  # (B,)


def kl_per_dimension(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) for each latent dimension: (B, D) -> (B, D) nats."""
    _check_same_shape("kl_per_dimension", ("mu", "logvar"), mu, logvar)
    # $\mathrm{KL}_j = \frac12 (\mu_j^2 + \sigma_j^2 - \log\sigma_j^2 - 1)$
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1)


def kl_to_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(q(z|x) || N(0, I)) of a diagonal Gaussian, summed over dimensions: (B, D) -> (B,) nats."""
    # $\mathrm{KL} = \frac12 \sum_j (\mu_j^2 + \sigma_j^2 - \log\sigma_j^2 - 1)$
    return kl_per_dimension(mu, logvar).sum(-1)


@dataclass
class ELBOTerms:
    """The one-sample ELBO and its terms, per example, in nats."""

    reconstruction: Tensor  # log p(x|z) for one z ~ q(z|x), (B,)
    kl: Tensor  # KL(q(z|x) || p(z)), closed form, (B,)
    elbo: Tensor  # reconstruction - kl, (B,)


def elbo_terms(
    logits: Tensor,
    x: Tensor,
    mu: Tensor,
    logvar: Tensor,
    *,
    likelihood: str = "bernoulli",
    check: bool = True,
) -> ELBOTerms:
    """One-sample ELBO terms: logits, x (B, 784); mu, logvar (B, D) -> each (B,) nats."""
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood: expected one of {LIKELIHOODS}, got {likelihood!r}")
    if logits.shape[:-1] != mu.shape[:-1]:
        raise ValueError(
            "elbo_terms: expected logits and mu with the same batch shape, "
            f"got {tuple(logits.shape)} and {tuple(mu.shape)}"
        )
    log_lik = bernoulli_log_likelihood if likelihood == "bernoulli" else continuous_bce
    reconstruction = log_lik(logits, x, check=check)  # $\log p_\theta(x \mid z)$, (B,)
    kl = kl_to_standard_normal(mu, logvar)  # $\mathrm{KL}(q_\phi(z \mid x) \,\|\, p(z))$, (B,)
    return ELBOTerms(
        reconstruction, kl, reconstruction - kl
    )  # $\mathrm{ELBO} = \log p - \mathrm{KL}$


def negative_elbo(
    logits: Tensor,
    x: Tensor,
    mu: Tensor,
    logvar: Tensor,
    *,
    beta: float = 1.0,
    likelihood: str = "bernoulli",
    check: bool = True,
) -> Tensor:
    """The training loss, batch mean of -log p(x|z) + beta * KL: scalar, nats per example."""
    if not beta >= 0:
        raise ValueError(f"beta: expected a number >= 0, got {beta!r}")
    terms = elbo_terms(logits, x, mu, logvar, likelihood=likelihood, check=check)
    # $\frac1B \sum_b \big[-\log p_\theta(x_b \mid z_b) + \beta\, \mathrm{KL}_b\big]$
    return (-terms.reconstruction + beta * terms.kl).mean()


def kl_warmup(epoch: int, warmup_epochs: int) -> float:
    """beta at a 0-based epoch: min(1, (epoch + 1) / warmup_epochs); 1 if warmup_epochs == 0."""
    if epoch < 0 or warmup_epochs < 0:
        raise ValueError(
            "kl_warmup: expected epoch >= 0 and warmup_epochs >= 0, "
            f"got {epoch} and {warmup_epochs}"
        )
    if warmup_epochs == 0:
        return 1.0
    return min(1.0, (epoch + 1) / warmup_epochs)  # $\beta_e = \min\big(1, \frac{e + 1}{E_w}\big)$
