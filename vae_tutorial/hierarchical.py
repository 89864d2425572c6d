r"""A VAE with two stochastic layers (Burda, Grosse and Salakhutdinov 2016, section 5).

## The model

Two Gaussian latent layers, $z_1 \in \mathbb R^{D_1}$ next to the pixels and $z_2 \in
\mathbb R^{D_2}$ above it, Bernoulli pixels:

$$p_\theta(x, z_1, z_2) = p_\theta(x \mid z_1)\, p_\theta(z_1 \mid z_2)\, p(z_2), \qquad
p(z_2) = \mathcal N(0, I),$$

$$p_\theta(z_1 \mid z_2)
= \mathcal N\big(\mu_\theta(z_2), \operatorname{diag}\sigma^2_\theta(z_2)\big),$$

$$q_\phi(z_1, z_2 \mid x) = q_\phi(z_1 \mid x)\, q_\phi(z_2 \mid z_1),$$

each $q$ a diagonal Gaussian from an MLP ($\mu$ and $\log\sigma^2$ heads), and
$p_\theta(x \mid z_1) = \prod_i \mathrm{Bernoulli}(x_i; \mathrm{sigmoid}(\ell_i))$, $\ell =
g_\theta(z_1)$. Inference runs bottom-up, $x \to z_1 \to z_2$, as in Burda et al.; the generative
networks mirror the inference ones. Their sizes: 784 -> 200-200 -> $z_1$ (100) -> 100-100 ->
$z_2$ (50), tanh.

## The ELBO, per example, in nats

$$\mathrm{ELBO}(x) = \mathbb E_{q}\big[\log p_\theta(x \mid z_1)
+ \log p_\theta(z_1 \mid z_2) - \log q_\phi(z_1 \mid x)\big]
- \mathbb E_{q_\phi(z_1 \mid x)}\Big[\mathrm{KL}\big(q_\phi(z_2 \mid z_1) \,\|\, p(z_2)\big)\Big].$$

Only the KL of the top layer is closed-form (for a given $z_1$, both are Gaussians, and $p(z_2)$
is fixed); the $z_1$ term compares $q_\phi(z_1 \mid x)$ with a prior $p_\theta(z_1 \mid z_2)$ that
depends on the sampled $z_2$, so it is estimated by the same one draw
$z_1 = \mu_1 + \sigma_1 \odot \epsilon_1$, $z_2 = \mu_2(z_1) + \sigma_2(z_1) \odot \epsilon_2$.
`elbo_terms` returns the three terms. Their sum and the fully sampled $\log w$ of $\mathcal L_1$
below are both unbiased one-draw estimates of the ELBO: for the same draw they differ by
$\log p(z_2) - \log q_\phi(z_2 \mid z_1) + \mathrm{KL}$, whose mean over $\epsilon_2$ is 0.

## The importance-weighted bound

With $k$ draws $(z_1, z_2)_i \sim q_\phi(z_1, z_2 \mid x)$ and
$\log w_i = \log p_\theta(x, z_{1,i}, z_{2,i}) - \log q_\phi(z_{1,i}, z_{2,i} \mid x)$,

$$\mathcal L_k = \mathbb E\Big[\log \frac1k \sum_{i=1}^k w_i\Big], \qquad
\mathcal L_1 = \mathrm{ELBO} \le \mathcal L_k \le \log p_\theta(x),$$

computed as $\operatorname{logsumexp}_i \log w_i - \log k$, in chunks of draws combined with
$\operatorname{logaddexp}$ for large $k$. Each Gaussian log-density keeps its
$-\frac12\log 2\pi$ per dimension, and a $q$ density at its own reparameterised draw uses
$(z - \mu)^2/\sigma^2 = \epsilon^2$.

## Scores and samples

`hierarchical_scores` scores it over a data set (ELBO, L_k, active units per layer);
`sampling.hierarchical_samples` and `sampling.hierarchical_mean_image` draw from it.

Inputs are checked at the boundary as in `models`: images (B, 784) or (B, 1, 28, 28), the model's
dtype and device, values in [0, 1], binary for the Bernoulli bound; `check=False` skips the value
checks (a GPU sync), as the training loop does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vae_tutorial import checks
from vae_tutorial.config import ModelConfig
from vae_tutorial.elbo import kl_to_standard_normal
from vae_tutorial.hierarchical_terms import (  # noqa: F401  (re-exported)
    LOG_2PI,
    Draws,
    HierarchicalELBOTerms,
    gaussian_log_density,
)
from vae_tutorial.layers import GaussianLayer, hidden_sizes, mlp
from vae_tutorial.likelihoods import bernoulli_log_likelihood
from vae_tutorial.networks import PIXELS, flat_images


class HierarchicalVAE(nn.Module):
    """q(z1|x) q(z2|z1), p(z2) = N(0, I), p(z1|z2) Gaussian, p(x|z1) Bernoulli (logits)."""

    kind, title = "hvae", "a hierarchical VAE"  # its ModelConfig.kind, and what it is
    conditional = False  # takes no labels
    misfit = (
        "a two-layer model has its own functions (hierarchical_scores, sampling.sample_prior): "
        "use them, or a one-layer model"
    )

    def __init__(
        self,
        *,
        latent_dims: Sequence[int],
        hidden: Sequence[Sequence[int]],
        activation: str,
        init: str,
    ) -> None:
        """latent_dims (D1, D2); hidden: the inference MLPs' sizes (x -> z1, z1 -> z2), mirrored
        by the generative ones; activation, init: as in `layers` (Burda: (100, 50),
        ((200, 200), (100, 100)), "tanh", "glorot_uniform")."""
        super().__init__()
        if not (isinstance(latent_dims, (tuple, list)) and len(latent_dims) == 2):
            raise ValueError(
                f"latent_dims: expected (D1, D2), the sizes of z1 and z2, got "
                f"{checks.describe(latent_dims)}"
            )
        if not (isinstance(hidden, (tuple, list)) and len(hidden) == 2):
            raise ValueError(
                "hidden: expected two tuples of hidden sizes, (x -> z1, z1 -> z2), e.g. "
                f"((200, 200), (100, 100)), got {checks.describe(hidden)}"
            )
        d1 = checks.positive_int("latent_dims[0]", latent_dims[0])
        d2 = checks.positive_int("latent_dims[1]", latent_dims[1])
        h1, h2 = hidden_sizes("hidden[0]", hidden[0]), hidden_sizes("hidden[1]", hidden[1])
        self.latent_dims = (d1, d2)
        self.q_z1 = GaussianLayer(PIXELS, h1, d1, activation, init)  # $q_\phi(z_1 \mid x)$
        self.q_z2 = GaussianLayer(d1, h2, d2, activation, init)  # $q_\phi(z_2 \mid z_1)$
        self.p_z1 = GaussianLayer(d2, h2[::-1], d1, activation, init)  # $p_\theta(z_1 \mid z_2)$
        self.decoder = mlp(d1, h1[::-1], PIXELS, activation, init)  # $\ell = g_\theta(z_1)$

    def _param(self) -> Tensor:
        return next(self.parameters())

    def _latents(self, name: str, z: Tensor, dim: int, check: bool) -> Tensor:
        """A checked batch of latents (..., dim) in the model's dtype and device."""
        param = self._param()
        checks.tensor(name, z, f"(B, {dim})")
        if z.ndim < 1 or z.shape[-1] != dim:
            raise ValueError(f"{name}: expected shape (B, {dim}), got {tuple(z.shape)}")
        if z.dtype != param.dtype or z.device != param.device:
            raise ValueError(
                f"{name}: expected {param.dtype} on {param.device} (the model's), got {z.dtype} "
                f"on {z.device}; convert with .to(dtype=..., device=...)"
            )
        if check:
            checks.finite(name, z)
        return z

    def encode(self, x: Tensor, *, check: bool = True) -> tuple[Tensor, Tensor]:
        """q(z1|x): images (B, 784) or (B, 1, 28, 28) in [0, 1] -> mu1, logvar1, each (B, D1)."""
        return self.q_z1(flat_images(x, self._param(), check))

    def encode_z2(self, z1: Tensor, *, check: bool = True) -> tuple[Tensor, Tensor]:
        """q(z2|z1): z1 (..., D1) -> mu2, logvar2, each (..., D2)."""
        return self.q_z2(self._latents("z1", z1, self.latent_dims[0], check))

    def prior_z1(self, z2: Tensor, *, check: bool = True) -> tuple[Tensor, Tensor]:
        """p(z1|z2): z2 (..., D2) -> mu, logvar of z1, each (..., D1)."""
        return self.p_z1(self._latents("z2", z2, self.latent_dims[1], check))

    def decode(self, z1: Tensor, *, check: bool = True) -> Tensor:
        """Bernoulli logits l = g(z1): z1 (..., D1) -> (..., 784)."""
        return self.decoder(self._latents("z1", z1, self.latent_dims[0], check))

    def _noise(
        self, k: int, b: int, generator: torch.Generator | None, noise: object
    ) -> tuple[Tensor, Tensor]:
        """eps1 (k, B, D1), eps2 (k, B, D2): drawn in that order, or the given ones, checked."""
        param = self._param()
        shapes = ((k, b, self.latent_dims[0]), (k, b, self.latent_dims[1]))
        if noise is None:
            return tuple(
                torch.randn(s, generator=generator, dtype=param.dtype, device=param.device)
                for s in shapes
            )
        if not (isinstance(noise, tuple) and len(noise) == 2):
            raise ValueError(f"noise: expected a tuple (eps1, eps2), got {checks.describe(noise)}")
        for name, eps, shape in zip(("eps1", "eps2"), noise, shapes, strict=True):
            checks.tensor(f"noise: {name}", eps, str(shape))
            if tuple(eps.shape) != shape:
                raise ValueError(
                    f"noise: {name}: expected shape {shape} (k, B, D), got {tuple(eps.shape)}"
                )
            self._latents(f"noise: {name}", eps, shape[-1], check=True)
        return noise

    def _images(self, x: Tensor, check: bool) -> Tensor:
        """Checked flat images (B, 784), binary if check (the Bernoulli likelihood)."""
        x = flat_images(x, self._param(), check)
        if check:
            checks.binary("x", x, "binarize the images: the pixels are Bernoulli")
        return x

    def _draws(self, x: Tensor, k: int, generator, noise) -> Draws:
        """k reparameterised draws of (z1, z2) ~ q(z1, z2|x) and the p networks at them."""
        mu1, logvar1 = self.q_z1(x)  # (B, D1) each
        eps1, eps2 = self._noise(k, len(x), generator, noise)
        z1 = mu1 + torch.exp(0.5 * logvar1) * eps1  # $z_1 = \mu_1 + \sigma_1 \odot \epsilon_1$
        mu2, logvar2 = self.q_z2(z1)  # (k, B, D2) each
        z2 = mu2 + torch.exp(0.5 * logvar2) * eps2  # $z_2 = \mu_2 + \sigma_2 \odot \epsilon_2$
        prior_mu1, prior_logvar1 = self.p_z1(z2)  # (k, B, D1) each
        logits = self.decoder(z1)  # (k, B, 784)
        return Draws(
            mu1, logvar1, eps1, z1, mu2, logvar2, eps2, z2, prior_mu1, prior_logvar1, logits
        )

    def log_weights(
        self,
        x: Tensor,
        k: int = 1,
        *,
        generator: torch.Generator | None = None,
        noise: tuple[Tensor, Tensor] | None = None,
        check: bool = True,
    ) -> Tensor:
        """log w = log p(x, z1, z2) - log q(z1, z2|x) for k draws: x (B, 784) -> (k, B) nats.

        noise: (eps1 (k, B, D1), eps2 (k, B, D2)) to use instead of fresh draws.
        """
        k = checks.positive_int("k", k)
        x = self._images(x, check)  # (B, 784)
        d = self._draws(x, k, generator, noise)
        # $\log p_\theta(x \mid z_1)$, (k, B)
        log_px = bernoulli_log_likelihood(d.logits, x.expand_as(d.logits), check=False)
        # $\log p_\theta(z_1 \mid z_2)$
        log_pz1 = gaussian_log_density(d.z1, d.prior_mu1, d.prior_logvar1)
        # $\log p(z_2) = \log \mathcal N(z_2; 0, I)$
        log_pz2 = -0.5 * (LOG_2PI + d.z2.square()).sum(-1)
        # $\log q_\phi(z_1 \mid x) = -\frac12 \sum_j (\log 2\pi + \log\sigma_{1j}^2
        # + \epsilon_{1j}^2)$
        log_qz1 = -0.5 * (LOG_2PI + d.logvar1 + d.eps1.square()).sum(-1)
        # $\log q_\phi(z_2 \mid z_1) = -\frac12 \sum_j (\log 2\pi + \log\sigma_{2j}^2
        # + \epsilon_{2j}^2)$
        log_qz2 = -0.5 * (LOG_2PI + d.logvar2 + d.eps2.square()).sum(-1)
        return log_px + log_pz1 + log_pz2 - log_qz1 - log_qz2  # $\log w$, (k, B)

    def importance_weighted_bound(
        self,
        x: Tensor,
        k: int,
        *,
        chunk: int | None = None,
        generator: torch.Generator | None = None,
        noise: tuple[Tensor, Tensor] | None = None,
        check: bool = True,
    ) -> Tensor:
        """L_k = log (1/k) sum_i w_i, differentiable, chunk draws at a time: (B, 784) -> (B,) nats.

        noise: (eps1 (k, B, D1), eps2 (k, B, D2)), sliced chunk by chunk, instead of fresh draws.
        """
        k = checks.positive_int("k", k)
        chunk = k if chunk is None else checks.positive_int("chunk", chunk)
        self._images(x, check)
        if noise is not None:
            noise = self._noise(k, len(x), None, noise)
        log_sum_w = None
        for start in range(0, k, chunk):
            draws = min(chunk, k - start)
            part = None if noise is None else tuple(e[start : start + draws] for e in noise)
            log_w = self.log_weights(x, draws, generator=generator, noise=part, check=False)
            part_sum = torch.logsumexp(log_w, 0)  # (B,)
            # $\log(e^a + e^b)$ over the chunks so far
            log_sum_w = part_sum if log_sum_w is None else torch.logaddexp(log_sum_w, part_sum)
        return log_sum_w - math.log(k)  # $\mathcal L_k = \log \frac1k \sum_i w_i$

    def elbo_terms(
        self,
        x: Tensor,
        *,
        generator: torch.Generator | None = None,
        noise: tuple[Tensor, Tensor] | None = None,
        check: bool = True,
    ) -> HierarchicalELBOTerms:
        """The one-sample ELBO and its terms: x (B, 784) -> each (B,) nats.

        noise: (eps1 (1, B, D1), eps2 (1, B, D2)); eps2 only moves the sampled z1 term.
        """
        x = self._images(x, check)  # (B, 784)
        d = self._draws(x, 1, generator, noise)
        # $\log p_\theta(x \mid z_1)$, (B,)
        reconstruction = bernoulli_log_likelihood(d.logits[0], x, check=False)
        # $\log q_\phi(z_1 \mid x) - \log p_\theta(z_1 \mid z_2)$ at the draw: sampled
        log_qz1 = -0.5 * (LOG_2PI + d.logvar1 + d.eps1[0].square()).sum(-1)
        kl_z1 = log_qz1 - gaussian_log_density(d.z1[0], d.prior_mu1[0], d.prior_logvar1[0])
        # $\mathrm{KL}(q_\phi(z_2 \mid z_1) \,\|\, \mathcal N(0, I))$, closed form given $z_1$
        kl_z2 = kl_to_standard_normal(d.mu2[0], d.logvar2[0], check=False)
        # $\mathrm{ELBO} = \log p_\theta(x \mid z_1) - [\log q(z_1 \mid x) - \log p(z_1 \mid z_2)]
        # - \mathrm{KL}(q(z_2 \mid z_1) \,\|\, p(z_2))$
        return HierarchicalELBOTerms(reconstruction, kl_z1, kl_z2, reconstruction - kl_z1 - kl_z2)


def from_config(config: ModelConfig) -> HierarchicalVAE:
    """The model of a ModelConfig of kind "hvae" (`models.build_model`), holding its config."""
    if not isinstance(config, ModelConfig) or config.kind != "hvae":
        raise ValueError(f"from_config: expected a ModelConfig(kind='hvae'), got {config!r}")
    model = HierarchicalVAE(
        latent_dims=(config.latent_dim, config.latent_dim2),
        hidden=(config.widths, config.hidden2),
        activation=config.activation,
        init=config.init,
    )
    model.config = config  # what checkpoints and the cache save
    return model
