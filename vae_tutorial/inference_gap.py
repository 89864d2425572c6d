r"""The inference gap and its two parts (Cremer, Li and Duvenaud 2018).

For one image $x$, a VAE's $-\mathrm{ELBO}$ exceeds $-\log p_\theta(x)$ by the inference gap,
which splits in two at $q^*$, the best diagonal Gaussian for this $x$ alone:

$$\underbrace{\log p_\theta(x) - \mathrm{ELBO}(q_\phi)}_{\text{inference gap}}
= \underbrace{\log p_\theta(x) - \mathrm{ELBO}(q^*)}_{\text{approximation gap}}
+ \underbrace{\mathrm{ELBO}(q^*) - \mathrm{ELBO}(q_\phi)}_{\text{amortization gap}},
\qquad q^* = \arg\max_{\mu, \log\sigma^2} \mathrm{ELBO}\big(\mathcal N(\mu, \sigma^2)\big).$$

The approximation gap is $\mathrm{KL}(q^* \,\|\, p_\theta(z \mid x))$: what the Gaussian family
cannot fit of the true posterior. The amortization gap is what the encoder loses by predicting
$q$ from $x$ in one pass instead of fitting it per image.

`optimal_gaussian` finds $q^*$ by Adam on $(\mu, \log\sigma^2)$ of each image, the decoder fixed,
starting from the encoder's $q_\phi$, with the step size decaying linearly to 0 (a noisy objective
settles). `gaussian_elbo` is the ELBO of any diagonal Gaussian: the reconstruction term averaged
over `samples` draws $z = \mu + \sigma \odot \epsilon$, the KL in closed form. `log p(x)` is
estimated with $\mathcal L_k$ (`iwae.importance_weighted_bound`, its `proposal` each of
$q_\phi$ and $q^*$ in turn), using whichever gives the larger (both are lower bounds). Everything
is per image, in nats, for the Bernoulli VAE of binary images.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from vae_tutorial import checks
from vae_tutorial.elbo import kl_to_standard_normal
from vae_tutorial.iwae import importance_weighted_bound
from vae_tutorial.likelihoods import bernoulli_log_likelihood
from vae_tutorial.models import VAE, check_model


def _check(fn: str, model: VAE, x: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """Model, binary x (B, 784) and q's parameters (B, D) checked; flat x returned."""
    check_model(fn, model, serves=(VAE,))  # p(x|z) and q(z|x) without labels
    checks.tensor(f"{fn}: x", x, "(B, 784)")
    x = x.reshape(len(x), -1)
    checks.binary(f"{fn}: x", x, "binarize x: these bounds are of the Bernoulli likelihood")
    checks.same_shape(fn, ("mu", "logvar"), mu, logvar)
    if mu.shape != (len(x), model.config.latent_dim):
        raise ValueError(
            f"{fn}: expected mu and logvar of shape ({len(x)}, {model.config.latent_dim}), one row "
            f"per image, got {tuple(mu.shape)}"
        )
    checks.finite(f"{fn}: mu", mu)
    checks.finite(f"{fn}: logvar", logvar)
    return x


def gaussian_elbo(
    model: VAE,
    x: Tensor,
    mu: Tensor,
    logvar: Tensor,
    *,
    samples: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """ELBO of q = N(mu, diag exp(logvar)), differentiable in mu, logvar: (B, 784) -> (B,) nats."""
    x = _check("gaussian_elbo", model, x, mu, logvar)
    samples = checks.positive_int("samples", samples)
    eps = torch.randn((samples, *mu.shape), generator=generator, dtype=mu.dtype, device=mu.device)
    z = mu + torch.exp(0.5 * logvar) * eps  # $z_s = \mu + \sigma \odot \epsilon_s$, (S, B, D)
    logits = model.decode(z.flatten(0, 1), check=False).unflatten(0, (samples, -1))  # (S, B, P)
    # $\frac1S \sum_s \log p_\theta(x \mid z_s)$, (B,)
    reconstruction = bernoulli_log_likelihood(logits, x.expand_as(logits), check=False).mean(0)
    # $\mathrm{ELBO} = \mathbb E_q[\log p_\theta(x \mid z)] - \mathrm{KL}(q \,\|\, p(z))$
    return reconstruction - kl_to_standard_normal(mu, logvar, check=False)


def optimal_gaussian(
    model: VAE,
    x: Tensor,
    *,
    steps: int = 500,
    lr: float = 0.02,
    samples: int = 16,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """q*: mu, logvar (B, D) maximising each image's ELBO by Adam, from the encoder's q."""
    steps = checks.positive_int("steps", steps)
    lr = checks.real("lr", lr, low=0, open_low=True)
    with torch.no_grad():
        mu, logvar = model.encode(x)  # the encoder's q_phi(z|x): the starting point
    mu, logvar = mu.clone().requires_grad_(), logvar.clone().requires_grad_()
    _check("optimal_gaussian", model, x, mu, logvar)
    generator = torch.Generator(device=mu.device).manual_seed(seed)
    optimizer = torch.optim.Adam([mu, logvar], lr=lr)
    decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    frozen = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)  # the decoder is fixed: only q's parameters move
    try:
        for _ in range(steps):
            # images are independent, so the sum's gradient is each image's own
            loss = -gaussian_elbo(model, x, mu, logvar, samples=samples, generator=generator).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            decay.step()
    finally:
        for p, was in zip(model.parameters(), frozen, strict=True):
            p.requires_grad_(was)
    return mu.detach(), logvar.detach()


def inference_gaps(
    model: VAE,
    x: Tensor,
    *,
    k: int = 5000,
    elbo_samples: int = 1000,
    **search: Any,
) -> dict[str, Tensor]:
    """Per image (B,), nats: log p(x) (L_k), ELBO of q_phi and of q*, the two gaps and their sum.

    search: the keywords of `optimal_gaussian` that find q* (steps, lr, samples, seed), its
    defaults where not given; seed + 1 then seeds the ELBO and L_k draws.
    """
    check_model("inference_gaps", model, serves=(VAE,))
    seed = search.get("seed", 0)
    mu_opt, logvar_opt = optimal_gaussian(model, x, **search)
    with torch.no_grad():
        mu_enc, logvar_enc = model.encode(x)
    generator = torch.Generator(device=mu_enc.device).manual_seed(seed + 1)
    out = {}
    with torch.no_grad():
        for name, (mu, logvar) in {
            "encoder": (mu_enc, logvar_enc),
            "optimal": (mu_opt, logvar_opt),
        }.items():
            out[f"elbo_{name}"] = gaussian_elbo(
                model, x, mu, logvar, samples=elbo_samples, generator=generator
            )
            # $\mathcal L_k$ with $z_i \sim q$, this q in place of the encoder's
            out[f"bound_{name}"] = importance_weighted_bound(
                model, x, k, proposal=(mu, logvar), generator=generator
            )
    # both L_k are lower bounds of $\log p_\theta(x)$: the larger is the closer
    out["log_px"] = torch.maximum(out["bound_encoder"], out["bound_optimal"])
    # $\log p(x) - \mathrm{ELBO}(q^*)$ and $\mathrm{ELBO}(q^*) - \mathrm{ELBO}(q_\phi)$
    out["approximation_gap"] = out["log_px"] - out["elbo_optimal"]
    out["amortization_gap"] = out["elbo_optimal"] - out["elbo_encoder"]
    out["inference_gap"] = out["log_px"] - out["elbo_encoder"]  # the sum of the two
    return out
