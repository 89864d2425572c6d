"""The two-layer VAE's pieces of arithmetic: the Gaussian log-density, its ELBO terms, its draws."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)


def gaussian_log_density(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mu, diag exp(logvar)), summed over the last axis: (..., D) -> (...) nats."""
    # $\log \mathcal N(z; \mu, \sigma^2) = -\frac12 \sum_j \big(\log 2\pi + \log\sigma_j^2
    # + (z_j - \mu_j)^2 / \sigma_j^2\big)$
    return -0.5 * (LOG_2PI + logvar + (z - mu).square() * torch.exp(-logvar)).sum(-1)


@dataclass
class HierarchicalELBOTerms:
    """The one-sample ELBO of the two-layer model and its terms, per example, in nats (B,)."""

    reconstruction: Tensor  # log p(x|z1), z1 ~ q(z1|x)
    kl_z1: Tensor  # log q(z1|x) - log p(z1|z2), one draw: a sampled estimate, not a KL formula
    kl_z2: Tensor  # KL(q(z2|z1) || N(0, I)), closed form given z1
    elbo: Tensor  # reconstruction - kl_z1 - kl_z2


@dataclass
class Draws:
    """One pass through q and p with k draws per image: each (k, B, ...)."""

    mu1: Tensor  # q(z1|x), (B, D1)
    logvar1: Tensor
    eps1: Tensor  # (k, B, D1)
    z1: Tensor  # $z_1 = \mu_1 + \sigma_1 \odot \epsilon_1$
    mu2: Tensor  # q(z2|z1), (k, B, D2)
    logvar2: Tensor
    eps2: Tensor  # (k, B, D2)
    z2: Tensor  # $z_2 = \mu_2 + \sigma_2 \odot \epsilon_2$
    prior_mu1: Tensor  # p(z1|z2), (k, B, D1)
    prior_logvar1: Tensor
    logits: Tensor  # p(x|z1), (k, B, 784)
