r"""Two Monte Carlo estimators of the gradient of a Gaussian expectation.

We want $\nabla_{\mu,\sigma}\, \mathbb E_{z \sim \mathcal N(\mu, \sigma^2)}[h(z)]$, the gradient
a VAE needs for its reconstruction term (there $h(z) = \log p_\theta(x \mid z)$ and $\mu, \sigma$
come from the encoder).

**Pathwise (reparameterization)** (Kingma and Welling 2014; Rezende et al. 2014): write
$z = \mu + \sigma\epsilon$ with $\epsilon \sim \mathcal N(0, 1)$, then differentiate through $h$:

$$\partial_\mu \mathbb E[h(z)] = \mathbb E_\epsilon[h'(\mu + \sigma\epsilon)], \qquad
\partial_\sigma \mathbb E[h(z)] = \mathbb E_\epsilon[h'(\mu + \sigma\epsilon)\,\epsilon].$$

**Score function (REINFORCE, likelihood ratio)**: differentiate the density instead,
$\nabla \int h q = \int h\, q \nabla\log q$, so that

$$\partial_\mu \mathbb E[h(z)] = \mathbb E_z\Big[h(z)\,\frac{z - \mu}{\sigma^2}\Big], \qquad
\partial_\sigma \mathbb E[h(z)]
 = \mathbb E_z\Big[h(z)\,\frac{(z - \mu)^2 - \sigma^2}{\sigma^3}\Big].$$

Both are unbiased; they differ in variance. Both functions return the n per-sample estimates (not
their mean), so that a caller can measure that variance: the estimate from n samples is their mean,
and its standard error is their standard deviation over sqrt(n).

`h` must act elementwise: h(z) has z's shape and entry i depends on z[i] only. The pathwise
estimator needs h differentiable (autograd differentiates it); the score-function one only
evaluates h.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from vae_tutorial import checks

Elementwise = Callable[[Tensor], Tensor]


def _params(mu: float | Tensor, sigma: float | Tensor, n: int) -> tuple[Tensor, Tensor]:
    """mu, sigma as tensors of one shape S (float64 unless given as tensors), checked."""
    checks.positive_int("n", n, "n is the number of samples")
    mu_t = torch.as_tensor(mu, dtype=None if isinstance(mu, Tensor) else torch.float64).detach()
    sigma_t = torch.as_tensor(sigma, dtype=mu_t.dtype, device=mu_t.device).detach()
    if mu_t.shape != sigma_t.shape or not mu_t.is_floating_point():
        raise ValueError(
            f"mu, sigma: expected floats or float tensors of one shape, got {tuple(mu_t.shape)} "
            f"({mu_t.dtype}) and {tuple(sigma_t.shape)}"
        )
    checks.finite("mu", mu_t)
    checks.finite("sigma", sigma_t)
    if not bool((sigma_t > 0).all()):
        raise ValueError(
            f"sigma: expected standard deviations > 0, got min {sigma_t.min().item():.4g}; "
            "pass sigma, not log sigma^2"
        )
    return mu_t, sigma_t


def _check_h(h: object) -> None:
    """h is callable (an elementwise function of z)."""
    if not callable(h):
        raise ValueError(f"h: expected a function of z such as torch.sin, got {checks.describe(h)}")


def _apply(h: Elementwise, z: Tensor) -> Tensor:
    """h(z), checked to keep z's shape."""
    hz = h(z)
    if not isinstance(hz, Tensor) or hz.shape != z.shape:
        got = tuple(hz.shape) if isinstance(hz, Tensor) else type(hz).__name__
        raise ValueError(
            f"h: expected an elementwise function returning {tuple(z.shape)}, got {got}"
        )
    return hz


def pathwise_gradient(
    h: Elementwise,
    mu: float | Tensor,
    sigma: float | Tensor,
    n: int,
    *,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-sample pathwise estimates of d/dmu, d/dsigma of E_{N(mu,sigma^2)}[h(z)]: (n, *S) each."""
    _check_h(h)
    mu_t, sigma_t = _params(mu, sigma, n)
    shape = (n, *mu_t.shape)
    eps = torch.randn(shape, generator=generator, dtype=mu_t.dtype, device=mu_t.device)  # (n, *S)
    # One copy of mu and sigma per sample, so that autograd returns one gradient per sample.
    mu_n = mu_t.expand(shape).clone().requires_grad_(True)  # (n, *S)
    sigma_n = sigma_t.expand(shape).clone().requires_grad_(True)  # (n, *S)
    z = mu_n + sigma_n * eps  # $z = \mu + \sigma\epsilon$: a differentiable function of mu, sigma
    total = _apply(h, z).sum()
    if not total.requires_grad:
        raise ValueError(
            "h: no gradient path from z to h(z) (h is not differentiable in autograd); "
            "the score-function estimator needs only values of h"
        )
    grad_mu, grad_sigma = torch.autograd.grad(total, (mu_n, sigma_n))
    return grad_mu, grad_sigma  # $h'(z)$ and $h'(z)\,\epsilon$


def score_function_gradient(
    h: Elementwise,
    mu: float | Tensor,
    sigma: float | Tensor,
    n: int,
    *,
    baseline: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-sample score-function estimates of d/dmu, d/dsigma of E[h(z)]: (n, *S) each.

    With a baseline c, h(z) - c replaces h(z): still unbiased, because E[score] = 0.
    """
    _check_h(h)
    checks.real("baseline", baseline)
    mu_t, sigma_t = _params(mu, sigma, n)
    shape = (n, *mu_t.shape)
    eps = torch.randn(shape, generator=generator, dtype=mu_t.dtype, device=mu_t.device)  # (n, *S)
    z = mu_t + sigma_t * eps  # z ~ N(mu, sigma^2); no gradient flows through it
    with torch.no_grad():
        weight = _apply(h, z) - baseline  # $h(z) - c$, only evaluated
    score_mu = (z - mu_t) / sigma_t**2  # $\partial_\mu \log\mathcal N(z; \mu, \sigma^2)$
    score_sigma = ((z - mu_t) ** 2 - sigma_t**2) / sigma_t**3  # $\partial_\sigma \log\mathcal N$
    return weight * score_mu, weight * score_sigma
