r"""The likelihoods p_theta(x|z) of a decoder's logits, per example in nats, and their means E[x|z].

## The Bernoulli likelihood

With Bernoulli logits $\ell = g_\theta(z)$ and
$\log \mathrm{sigmoid}(\ell) = -\mathrm{softplus}(-\ell)$,

$$\log p_\theta(x \mid z) = \sum_i x_i \log \mathrm{sigmoid}(\ell_i)
+ (1 - x_i) \log \mathrm{sigmoid}(-\ell_i)
= -\sum_i \mathrm{BCEWithLogits}(\ell_i, x_i),$$

computed from the logits, so it never takes $\log 0$. One draw $z \sim q_\phi(z \mid x)$ gives an
unbiased estimate of $\mathbb E_q[\log p_\theta(x \mid z)]$.

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

"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from vae_tutorial import checks
from vae_tutorial.config import LIKELIHOODS

# |logits| below which the continuous Bernoulli uses its Taylor series (truncation error < 1e-12)
TAYLOR_BELOW = 0.1
LOG_LIKELIHOOD: dict[str, Callable[..., Tensor]] = {}  # each likelihood's log p(x|z), by its name
MEAN: dict[str, Callable[[Tensor], Tensor]] = {}  # E[x|z] where it is not sigmoid(logits)


def registered(table: dict[str, Callable], name: str) -> Callable[[Callable], Callable]:
    """A decorator: the function is table[name], name one of config.LIKELIHOODS."""

    def register(fn: Callable) -> Callable:
        table[name] = fn
        return fn

    return register


@registered(LOG_LIKELIHOOD, "bernoulli")
def bernoulli_log_likelihood(logits: Tensor, x: Tensor, *, check: bool = True) -> Tensor:
    """log p(x|z) of binary x, summed over pixels: logits, x (B, P) -> (B,) nats."""
    checks.same_shape("bernoulli_log_likelihood", ("logits", "x"), logits, x)
    if check:
        checks.finite_inputs("bernoulli_log_likelihood", logits=logits)
        fix = "binarize x, or use continuous_bce for grey levels (it is not a log-likelihood)"
        checks.binary("bernoulli_log_likelihood: x", x, fix)
    # $\log p_\theta(x \mid z) = -\sum_i \mathrm{BCEWithLogits}(\ell_i, x_i)$
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)  # (B,)


def _check_grey(fn: str, logits: Tensor, x: Tensor, check: bool) -> None:
    """logits and x of one shape; with check, finite logits and grey x in [0, 1] (a host sync)."""
    checks.same_shape(fn, ("logits", "x"), logits, x)
    if check:
        checks.finite_inputs(fn, logits=logits)
        checks.unit_interval(f"{fn}: x", x)


@registered(LOG_LIKELIHOOD, "continuous_bce")
def continuous_bce(logits: Tensor, x: Tensor, *, check: bool = True) -> Tensor:
    """The Bernoulli expression on grey levels, NOT a log-likelihood: (B, P) -> (B,) nats."""
    _check_grey("continuous_bce", logits, x, check)
    # $-\sum_i \mathrm{BCEWithLogits}(\ell_i, x_i)$ on grey levels: unnormalised on $[0, 1]^P$
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)  # (B,)


def continuous_bernoulli_log_norm(logits: Tensor, *, check: bool = True) -> Tensor:
    """log C(lambda), lambda = sigmoid(logits), elementwise: (..., P) -> (..., P) nats."""
    checks.tensor("continuous_bernoulli_log_norm: logits", logits)
    checks.floating("continuous_bernoulli_log_norm: logits", logits)
    if check:
        checks.finite_inputs("continuous_bernoulli_log_norm", logits=logits)
    a = logits.abs()
    near = a < TAYLOR_BELOW
    a_far = torch.where(near, TAYLOR_BELOW, a)  # keeps the unused branch (and its gradient) finite
    # $\log C = \log|\ell| + \log(1 + e^{-|\ell|}) - \log(1 - e^{-|\ell|})$
    closed = a_far.log() + torch.log1p(torch.exp(-a_far)) - torch.log(-torch.expm1(-a_far))
    s = logits.square()
    # $\log C = \log 2 + \frac{\ell^2}{12} - \frac{7\ell^4}{1440} + \frac{31\ell^6}{90720}$
    taylor = math.log(2) + s * (1 / 12 + s * (-7 / 1440 + s * (31 / 90720)))
    return torch.where(near, taylor, closed)


@registered(LOG_LIKELIHOOD, "continuous_bernoulli")
def continuous_bernoulli_log_likelihood(logits: Tensor, x: Tensor, *, check: bool = True) -> Tensor:
    """log p(x|z) of grey x in [0, 1] under the continuous Bernoulli: (B, P) -> (B,) nats."""
    _check_grey("continuous_bernoulli_log_likelihood", logits, x, check)
    # $x \log\lambda + (1 - x) \log(1 - \lambda) = -\mathrm{BCEWithLogits}(\ell, x)$
    unnormalised = -F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    # $\log p(x \mid \lambda) = \sum_i \big[x_i \log\lambda_i + (1 - x_i)\log(1 - \lambda_i)
    # + \log C(\lambda_i)\big]$
    return (unnormalised + continuous_bernoulli_log_norm(logits, check=False)).sum(-1)  # (B,)


@registered(MEAN, "continuous_bernoulli")
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
    return LOG_LIKELIHOOD[likelihood]


def likelihood_mean(likelihood: str) -> Callable[[Tensor], Tensor]:
    """E[x|z] of the decoder that a likelihood names: a function logits -> pixel means, elementwise.

    sigmoid(logits) for a Bernoulli decoder (and the continuous BCE, which has no mean of its own);
    `continuous_bernoulli_mean` for the continuous Bernoulli, whose mean is not lambda.
    """
    checks.one_of("likelihood", likelihood, LIKELIHOODS)
    return MEAN.get(likelihood, torch.sigmoid)  # $\mathbb E[x] = \mathrm{sigmoid}(\ell)$


if set(LOG_LIKELIHOOD) != set(LIKELIHOODS):  # every likelihood the config offers has its function
    raise ImportError(f"likelihoods: {sorted(LOG_LIKELIHOOD)} registered, config has {LIKELIHOODS}")
