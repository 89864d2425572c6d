r"""The training objective: the loss `fit` minimises on each batch, in nats per example.

$$\mathcal L(\theta, \phi) = \frac1B \sum_b \Big[-\log p_\theta(x_b \mid z_b)
+ \beta\, \mathrm{KL}\big(q_\phi(z \mid x_b) \,\|\, p(z)\big)\Big],
\qquad z_b \sim q_\phi(z \mid x_b),$$

with the KL term replaced by $\sum_j \max(\kappa, \frac1B \sum_b \mathrm{KL}_{bj})$ under free bits
$\kappa > 0$; or, with `iwae_k` = k > 1, $-\frac1B \sum_b \mathcal L_k(x_b)$ (Burda et al. 2016),
which has no separate KL term to weigh (`TrainConfig` refuses beta, warm-up and free bits with it).

## A weight on the KL

$-\log p_\theta(x \mid z) + \beta\, \mathrm{KL}$ is the $\beta$-VAE loss (Higgins et al. 2017);
$\beta = 1$ is the negative ELBO. A warm-up raises $\beta$ linearly from $1/E_w$ to 1 over the first
$E_w$ epochs, so the decoder learns to use $z$ before the KL pulls $q$ onto the prior.

## Free bits (Kingma et al. 2016)

Free bits leave each latent dimension $\kappa$ nats of KL that cost nothing: with the
batch-mean KL of dimension $j$, $\overline{\mathrm{KL}}_j = \frac1B \sum_b \mathrm{KL}_{bj}$, the
KL term of the loss becomes $\sum_j \max(\kappa, \overline{\mathrm{KL}}_j)$. A dimension below
$\kappa$ gets no gradient from the KL, so the prior cannot pull it shut; one above gets the usual
gradient. It shapes the objective only: the ELBO itself keeps the whole KL."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from vae_tutorial import checks
from vae_tutorial.config import TrainConfig
from vae_tutorial.elbo import kl_per_dimension
from vae_tutorial.hierarchical import HierarchicalVAE
from vae_tutorial.iwae import log_importance_weights


class Losses(NamedTuple):
    """One batch: the loss minimised (scalar); for the record -log p(x|z) (B,) and the KL (B, D)."""

    loss: Tensor
    reconstruction: Tensor
    kl: Tensor


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
        checks.finite_inputs("free_bits_kl", kl=kl)
    # $\sum_j \max\big(\kappa, \frac1B \sum_b \mathrm{KL}_{bj}\big)$
    return kl.mean(0).clamp(min=free_bits).sum()


def elbo_losses(
    forward: Callable[..., Any],
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    beta: float,
    kappa: float,
    amp: torch.autocast,
) -> Losses:
    """The (beta-weighted, free-bits) -ELBO of one batch, z sampled; an autoencoder's KL is (B, 0).

    forward: the model or a wrapper of it (DDP, torch.compile), run under amp; y (B,): labels,
    which only a CVAE takes.
    """
    conditions = (y,) if model.conditional else ()
    with amp:
        out = forward(x, *conditions, check=False)  # no range check: a host sync every step
    if not isinstance(out, tuple):  # an autoencoder: logits only, no latent, no KL
        reconstruction = -model.log_likelihood(out.float(), x, check=False)  # $-\log p(x|z)$
        return Losses(reconstruction.mean(), reconstruction, reconstruction.new_zeros(len(x), 0))
    logits, mu, logvar, _ = out  # (B, 784), (B, D), (B, D), (B, D)
    reconstruction = -model.log_likelihood(logits.float(), x, check=False)  # $-\log p(x|z)$, (B,)
    # $\mathrm{KL}_{bj} = \frac12 (\mu_{bj}^2 + \sigma_{bj}^2 - \log\sigma_{bj}^2 - 1)$, (B, D)
    kl = kl_per_dimension(mu.float(), logvar.float(), check=False)
    if kappa > 0:  # $\sum_j \max\big(\kappa, \frac1B \sum_b \mathrm{KL}_{bj}\big)$
        kl_term = free_bits_kl(kl, kappa, check=False)
    else:  # $\frac1B \sum_b \sum_j \mathrm{KL}_{bj}$
        kl_term = kl.sum() / len(x)
    # $\mathcal L = \frac1B \sum_b -\log p(x_b \mid z_b) + \beta \cdot$ the KL term
    return Losses(reconstruction.mean() + beta * kl_term, reconstruction, kl)


def iwae_terms(model: nn.Module, x: Tensor, y: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """-L_k per example (B,); for the record, -log p(x|z) (B,) and the KL (B, D).

    The record's -ELBO is -(1/k) sum_i log w_i, an unbiased estimate from the same k draws, and
    -log p(x|z) is that less the closed-form KL.
    """
    labels = y if model.conditional else None
    # $\log w_i = \log p(x, z_i) - \log q(z_i \mid x)$, $z_i \sim q(z \mid x)$, (k, B)
    log_w = log_importance_weights(model, x, k, check=False, labels=labels).float()
    # $-\mathcal L_k = -\log \frac1k \sum_{i=1}^k w_i = \log k - \mathrm{logsumexp}_i \log w_i$
    neg_bound = math.log(k) - torch.logsumexp(log_w, 0)  # (B,)
    with torch.no_grad():
        mu, logvar = model.encode(x, *(() if labels is None else (labels,)), check=False)
        kl = kl_per_dimension(mu.float(), logvar.float(), check=False)  # (B, D)
        # $-\log p(x \mid z) \approx -\frac1k \sum_i \log w_i - \mathrm{KL}$, (B,)
        reconstruction = -log_w.mean(0) - kl.sum(-1)
    return neg_bound, reconstruction, kl


def iwae_losses(model: nn.Module, x: Tensor, y: Tensor, k: int) -> Losses:
    """-L_k of one batch, the batch mean of `iwae_terms`, the loss; and the record."""
    neg_bound, reconstruction, kl = iwae_terms(model, x, y, k)
    # $\mathcal L = -\frac1B \sum_b \mathcal L_k(x_b)$
    return Losses(neg_bound.mean(), reconstruction, kl)


def hierarchical_losses(model: HierarchicalVAE, x: Tensor, k: int) -> Losses:
    """The two-layer model's -ELBO (k = 1) or -L_k of one batch, through the model itself.

    k = 1: the record is -log p(x|z1) and the two KL terms (B, 2) (`elbo_terms`: z1's sampled,
    z2's closed form). k > 1: the record's -log p(x|z) column holds the whole -ELBO estimate
    -(1/k) sum_i log w_i from the same k draws, and the KL (B, 0) is empty.
    """
    if k == 1:
        terms = model.elbo_terms(x, check=False)  # (B,) each
        # $\mathcal L = -\frac1B \sum_b \mathrm{ELBO}(x_b)$
        kl = torch.stack([terms.kl_z1, terms.kl_z2], -1).float()  # (B, 2)
        return Losses(-terms.elbo.float().mean(), -terms.reconstruction.float(), kl)
    log_w = model.log_weights(x, k, check=False).float()  # (k, B)
    # $-\mathcal L_k = \log k - \mathrm{logsumexp}_i \log w_i$, (B,)
    neg_bound = math.log(k) - torch.logsumexp(log_w, 0)
    record = -log_w.detach().mean(0)  # $-\frac1k \sum_i \log w_i$, (B,)
    return Losses(neg_bound.mean(), record, record.new_zeros(len(x), 0))


def batch_losses(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    config: TrainConfig,
    epoch: int,
    *,
    forward: Callable[..., Any] | None = None,
    amp: torch.autocast | None = None,
) -> Losses:
    """The loss `config` trains with, on one batch x (B, 784), labels y (B,), at a 0-based epoch.

    iwae_k > 1: -L_k (through `model` itself, never a compiled or DDP wrapper); else the -ELBO
    with beta warmed up (`kl_warmup`) and free bits. forward: what runs the model's forward pass
    (default the model); amp: an autocast context for it (default none).
    """
    amp = torch.autocast(x.device.type, enabled=False) if amp is None else amp
    if isinstance(model, HierarchicalVAE):
        with amp:
            return hierarchical_losses(model, x, config.iwae_k)
    if config.iwae_k > 1:  # $\mathcal L = -\frac1B \sum_b \mathcal L_k(x_b)$
        with amp:
            return iwae_losses(model, x, y, config.iwae_k)
    beta = config.beta * kl_warmup(epoch, config.warmup_epochs)  # $\beta_e$
    # `forward or model` would ask a compiled module for its len(), which it refuses
    forward = model if forward is None else forward
    return elbo_losses(forward, model, x, y, beta, config.free_bits, amp)
