r"""The evidence lower bound (ELBO) and its two terms, per example, in nats.

## The bound

For any density $q(z \mid x)$, multiplying and dividing by it inside $p(x) = \int p(x, z)\,dz$ and
rearranging gives the identity

$$\log p_\theta(x) = \underbrace{\mathbb E_{q_\phi(z \mid x)}\big[\log p_\theta(x \mid z)\big]
- \mathrm{KL}\big(q_\phi(z \mid x) \,\|\, p(z)\big)}_{\mathrm{ELBO}(x)}
+ \mathrm{KL}\big(q_\phi(z \mid x) \,\|\, p_\theta(z \mid x)\big).$$

The last KL is never negative, so the ELBO is a lower bound on $\log p_\theta(x)$, tight when $q$ is
the true posterior. We **maximise** the ELBO, i.e. **minimise** $-\mathrm{ELBO}$, in nats per
example: each term is a **sum** over the $P = 784$ pixels or the $D$ latent dimensions, and the
loss is the **mean** over the batch.

## The reconstruction term

With Bernoulli logits $\ell = g_\theta(z)$ and
$\log \mathrm{sigmoid}(\ell) = -\mathrm{softplus}(-\ell)$,

$$\log p_\theta(x \mid z) = \sum_i x_i \log \mathrm{sigmoid}(\ell_i)
+ (1 - x_i) \log \mathrm{sigmoid}(-\ell_i)
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
PyTorch example) is **not** the log of a normalised density over $[0, 1]^P$: for one pixel with
$\ell = 0$, $\int_0^1 e^{x \log\frac12 + (1 - x)\log\frac12} dx = \frac12$, not 1. Its values are
not log-likelihoods and cannot be compared with one (Loaiza-Ganem and Cunningham 2019).
`bernoulli_log_likelihood` therefore refuses non-binary $x$; `continuous_bce` computes it by name.

## The continuous Bernoulli (Loaiza-Ganem and Cunningham 2019)

Dividing by that integral makes it a density on $[0, 1]$: with $\lambda = \mathrm{sigmoid}(\ell)$,

$$\log p(x \mid \lambda) = x \log\lambda + (1 - x)\log(1 - \lambda) + \log C(\lambda),
\qquad C(\lambda) = \frac{2 \operatorname{artanh}(1 - 2\lambda)}{1 - 2\lambda},
\quad C(\tfrac12) = 2.$$

From the logits, $1 - 2\lambda = -\tanh\frac{\ell}{2}$ and $\operatorname{artanh}(1 - 2\lambda) =
-\frac{\ell}{2}$, so
$C = \ell / \tanh\frac{\ell}{2} = |\ell|\,\frac{1 + e^{-|\ell|}}{1 - e^{-|\ell|}}$:
no overflow at the extremes, and a Taylor series near $\ell = 0$ ($\lambda = \frac12$), where the
closed form is $0/0$. Its log-densities can be positive (a density, not a probability), so its
nats are not comparable with those of a model of binary images. Its mean is not $\lambda$:
$\mathbb E[x] = \frac{1}{1 - e^{-\ell}} - \frac{1}{\ell}$ (`continuous_bernoulli_mean`).

With `check=True` (the default) every function here also refuses non-finite inputs and reads its
inputs back to do so (a GPU sync); the training loop passes `check=False`.

## A weight on the KL

$-\log p_\theta(x \mid z) + \beta\, \mathrm{KL}$ is the $\beta$-VAE loss (Higgins et al. 2017);
$\beta = 1$ is the negative ELBO. A warm-up raises $\beta$ linearly from $1/E_w$ to 1 over the first
$E_w$ epochs, so the decoder learns to use $z$ before the KL pulls $q$ onto the prior.

## Free bits (Kingma et al. 2016)

Free bits leave each latent dimension $\kappa$ nats of KL that cost nothing: with the
batch-mean KL of dimension $j$, $\overline{\mathrm{KL}}_j = \frac1B \sum_b \mathrm{KL}_{bj}$, the
KL term of the loss becomes $\sum_j \max(\kappa, \overline{\mathrm{KL}}_j)$. A dimension below
$\kappa$ gets no gradient from the KL, so the prior cannot pull it shut; one above gets the usual
gradient. It shapes the objective only: the ELBO itself keeps the whole KL.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vae_tutorial import checks

LIKELIHOODS = ("bernoulli", "continuous_bce", "continuous_bernoulli")
# |logits| below which the continuous Bernoulli uses its Taylor series (truncation error < 1e-12)
TAYLOR_BELOW = 0.1


def _finite(fn: str, **tensors: Tensor) -> None:
    """Raise ValueError naming fn and the argument if any tensor holds NaN or +-inf."""
    for name, t in tensors.items():
        checks.finite(f"{fn}: {name}", t, "pass check=False only for inputs known to be finite")


def bernoulli_log_likelihood(logits: Tensor, x: Tensor, *, check: bool = True) -> Tensor:
    """log p(x|z) of binary x, summed over pixels: logits, x (B, P) -> (B,) nats."""
    checks.same_shape("bernoulli_log_likelihood", ("logits", "x"), logits, x)
    if check:
        _finite("bernoulli_log_likelihood", logits=logits)
        fix = "binarize x, or use continuous_bce for grey levels (it is not a log-likelihood)"
        checks.binary("bernoulli_log_likelihood: x", x, fix)
    # $\log p_\theta(x \mid z) = -\sum_i \mathrm{BCEWithLogits}(\ell_i, x_i)$
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)  # (B,)


def continuous_bce(logits: Tensor, x: Tensor, *, check: bool = True) -> Tensor:
    """The Bernoulli expression on grey levels, NOT a log-likelihood: (B, P) -> (B,) nats."""
    checks.same_shape("continuous_bce", ("logits", "x"), logits, x)
    if check:
        _finite("continuous_bce", logits=logits)
        checks.unit_interval("continuous_bce: x", x)
    # $-\sum_i \mathrm{BCEWithLogits}(\ell_i, x_i)$ on grey levels: unnormalised on $[0, 1]^P$
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)  # (B,)


def continuous_bernoulli_log_norm(logits: Tensor, *, check: bool = True) -> Tensor:
    """log C(lambda), lambda = sigmoid(logits), elementwise: (..., P) -> (..., P) nats."""
    checks.tensor("continuous_bernoulli_log_norm: logits", logits)
    checks.floating("continuous_bernoulli_log_norm: logits", logits)
    if check:
        _finite("continuous_bernoulli_log_norm", logits=logits)
    a = logits.abs()
    near = a < TAYLOR_BELOW
    a_far = torch.where(near, TAYLOR_BELOW, a)  # keeps the unused branch (and its gradient) finite
    # $\log C = \log|\ell| + \log(1 + e^{-|\ell|}) - \log(1 - e^{-|\ell|})$
    closed = a_far.log() + torch.log1p(torch.exp(-a_far)) - torch.log(-torch.expm1(-a_far))
    s = logits.square()
    # $\log C = \log 2 + \frac{\ell^2}{12} - \frac{7\ell^4}{1440} + \frac{31\ell^6}{90720}$
    taylor = math.log(2) + s * (1 / 12 + s * (-7 / 1440 + s * (31 / 90720)))
    return torch.where(near, taylor, closed)


def continuous_bernoulli_log_likelihood(logits: Tensor, x: Tensor, *, check: bool = True) -> Tensor:
    """log p(x|z) of grey x in [0, 1] under the continuous Bernoulli: (B, P) -> (B,) nats."""
    checks.same_shape("continuous_bernoulli_log_likelihood", ("logits", "x"), logits, x)
    if check:
        _finite("continuous_bernoulli_log_likelihood", logits=logits)
        checks.unit_interval("continuous_bernoulli_log_likelihood: x", x)
    # $x \log\lambda + (1 - x) \log(1 - \lambda) = -\mathrm{BCEWithLogits}(\ell, x)$
    unnormalised = -F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    # $\log p(x \mid \lambda) = \sum_i \big[x_i \log\lambda_i + (1 - x_i)\log(1 - \lambda_i)
    # + \log C(\lambda_i)\big]$
    return (unnormalised + continuous_bernoulli_log_norm(logits, check=False)).sum(-1)  # (B,)


def continuous_bernoulli_mean(logits: Tensor) -> Tensor:
    """E[x] of the continuous Bernoulli, lambda = sigmoid(logits), elementwise (not lambda)."""
    checks.tensor("continuous_bernoulli_mean: logits", logits)
    checks.floating("continuous_bernoulli_mean: logits", logits)
    near = logits.abs() < TAYLOR_BELOW
    far = torch.where(near, TAYLOR_BELOW, logits)
    # $\mathbb E[x] = \frac{1}{1 - e^{-\ell}} - \frac{1}{\ell}$
    closed = -1 / torch.expm1(-far) - 1 / far
    # $\mathbb E[x] = \frac12 + \frac{\ell}{12} - \frac{\ell^3}{720} + \frac{\ell^5}{30240}$
    s = logits.square()
    taylor = 0.5 + logits * (1 / 12 + s * (-1 / 720 + s / 30240))
    return torch.where(near, taylor, closed)


def log_likelihood(likelihood: str) -> Callable[..., Tensor]:
    """The log p(x|z) that a likelihood names: a function (logits, x, *, check) -> (B,) nats."""
    checks.one_of("likelihood", likelihood, LIKELIHOODS)
    return {
        "bernoulli": bernoulli_log_likelihood,
        "continuous_bce": continuous_bce,
        "continuous_bernoulli": continuous_bernoulli_log_likelihood,
    }[likelihood]


def likelihood_mean(likelihood: str) -> Callable[[Tensor], Tensor]:
    """E[x|z] of the decoder that a likelihood names: a function logits -> pixel means, elementwise.

    sigmoid(logits) for a Bernoulli decoder (and the continuous BCE, which has no mean of its own);
    `continuous_bernoulli_mean` for the continuous Bernoulli, whose mean is not lambda.
    """
    checks.one_of("likelihood", likelihood, LIKELIHOODS)
    if likelihood == "continuous_bernoulli":
        return continuous_bernoulli_mean
    return torch.sigmoid  # $\mathbb E[x] = \mathrm{sigmoid}(\ell)$


def kl_per_dimension(mu: Tensor, logvar: Tensor, *, check: bool = True) -> Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) for each latent dimension: (B, D) -> (B, D) nats."""
    checks.same_shape("kl_per_dimension", ("mu", "logvar"), mu, logvar)
    if check:
        _finite("kl_per_dimension", mu=mu, logvar=logvar)
    # $\mathrm{KL}_j = \frac12 (\mu_j^2 + \sigma_j^2 - \log\sigma_j^2 - 1)$
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1)


def kl_to_standard_normal(mu: Tensor, logvar: Tensor, *, check: bool = True) -> Tensor:
    """KL(q(z|x) || N(0, I)) of a diagonal Gaussian, summed over dimensions: (B, D) -> (B,) nats."""
    # $\mathrm{KL} = \frac12 \sum_j (\mu_j^2 + \sigma_j^2 - \log\sigma_j^2 - 1)$
    return kl_per_dimension(mu, logvar, check=check).sum(-1)


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
    """One-sample ELBO terms: logits, x (B, P); mu, logvar (B, D) -> each (B,) nats."""
    checks.one_of("likelihood", likelihood, LIKELIHOODS)
    checks.tensor("elbo_terms: logits", logits)
    checks.tensor("elbo_terms: mu", mu)
    if logits.shape[:-1] != mu.shape[:-1]:
        raise ValueError(
            "elbo_terms: expected logits and mu with the same batch shape, "
            f"got {tuple(logits.shape)} and {tuple(mu.shape)}"
        )
    # $\log p_\theta(x \mid z)$, (B,)
    reconstruction = log_likelihood(likelihood)(logits, x, check=check)
    # $\mathrm{KL}(q_\phi(z \mid x) \,\|\, p(z))$, (B,)
    kl = kl_to_standard_normal(mu, logvar, check=check)
    # $\mathrm{ELBO} = \log p_\theta(x \mid z) - \mathrm{KL}$
    return ELBOTerms(reconstruction, kl, reconstruction - kl)


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
    checks.real("beta", beta, low=0.0, fix="beta = 1 gives the negative ELBO")
    terms = elbo_terms(logits, x, mu, logvar, likelihood=likelihood, check=check)
    # $\frac1B \sum_b \big[-\log p_\theta(x_b \mid z_b) + \beta\, \mathrm{KL}_b\big]$
    return (-terms.reconstruction + beta * terms.kl).mean()


def kl_warmup(epoch: int, warmup_epochs: int) -> float:
    """beta at a 0-based epoch: min(1, (epoch + 1) / warmup_epochs); 1 if warmup_epochs == 0."""
    epoch = checks.int_at_least("kl_warmup: epoch", epoch, 0, "epochs count from 0")
    warmup_epochs = checks.int_at_least("kl_warmup: warmup_epochs", warmup_epochs, 0, "0 = off")
    if warmup_epochs == 0:
        return 1.0
    # $\beta_e = \min\big(1, \frac{e + 1}{E_w}\big)$
    return min(1.0, (epoch + 1) / warmup_epochs)


def free_bits_kl(kl: Tensor, free_bits: float, *, check: bool = True) -> Tensor:
    """The free-bits KL term, sum_j max(kappa, batch-mean KL_j): kl (B, D) -> scalar, nats."""
    checks.tensor("free_bits_kl: kl", kl, "(B, D)")
    if kl.ndim != 2:
        raise ValueError(
            f"free_bits_kl: expected the KL per example and latent dimension, (B, D), got shape "
            f"{tuple(kl.shape)}; pass kl_per_dimension(mu, logvar), not a KL summed over dimensions"
        )
    checks.floating("free_bits_kl: kl", kl)
    free_bits = checks.real(
        "free_bits_kl: free_bits", free_bits, low=0.0, fix="kappa in nats per latent dimension"
    )
    if check:
        _finite("free_bits_kl", kl=kl)
    # $\sum_j \max\big(\kappa, \frac1B \sum_b \mathrm{KL}_{bj}\big)$
    return kl.mean(0).clamp(min=free_bits).sum()
