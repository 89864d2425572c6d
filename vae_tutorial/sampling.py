r"""Sampling: decoding the prior, reconstructions, interpolations and a 2-D latent grid.

## Samples and reconstructions

A sample from the model is $z \sim p(z) = \mathcal N(0, I)$ followed by the decoder; we show the
means $\mathbb E[x \mid z]$, the usual picture, rather than draws. A reconstruction decodes the
encoder's mean $\mu_\phi(x)$, or a draw $z \sim q_\phi(z \mid x)$. Every function here shows the
mean of the model's own likelihood (`model.decode_mean`): $\mathrm{sigmoid}(g_\theta(z))$ for a
Bernoulli decoder, and for the continuous Bernoulli `continuous_bernoulli_mean`, not $\lambda =
\mathrm{sigmoid}(g_\theta(z))$.

## Interpolation

Linear interpolation $z_t = (1 - t) z_0 + t z_1$ cuts through the inside of the prior. In $D$
dimensions a draw from $\mathcal N(0, I)$ lies near the sphere of radius $\sqrt D$, but the midpoint
of two independent draws has norm near $\sqrt{D/2}$, a region the decoder rarely saw in training.
Spherical interpolation (Shoemake 1985; White 2016) follows the great circle instead:

$$\mathrm{slerp}(z_0, z_1; t) = \frac{\sin((1 - t)\Omega)}{\sin \Omega} z_0
+ \frac{\sin(t\Omega)}{\sin \Omega} z_1, \qquad
\cos \Omega = \frac{z_0 \cdot z_1}{\lVert z_0 \rVert \lVert z_1 \rVert},$$

which keeps the norm constant when $\lVert z_0 \rVert = \lVert z_1 \rVert$.

## The latent grid (Kingma and Welling 2014, figure 4)

For $D = 2$, equally spaced probabilities $u \in [\varepsilon, 1 - \varepsilon]$ pushed through the
Gaussian inverse CDF, $z = \Phi^{-1}(u)$ in each axis, give a grid whose points carry equal prior
mass: dense near 0, sparse in the tails, where the prior has little mass.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vae_tutorial import checks, resources
from vae_tutorial.evaluate import encode_dataset
from vae_tutorial.hierarchical import HierarchicalVAE
from vae_tutorial.labels import label_args
from vae_tutorial.models import VAE, Autoencoder, check_model, check_weights, reparameterize
from vae_tutorial.networks import PIXELS


@resources.reported
@torch.no_grad()
def sample_prior(
    model: VAE | Autoencoder,
    n: int,
    *,
    labels: Tensor | None = None,
    seed: int = 0,
    check: bool = True,
) -> Tensor:
    """Decoded draws z ~ N(0, I) with a seeded generator: pixel means E[x|z] (n, 784) in (0, 1).

    A CVAE draws the digits it is told: labels (n,) int64 in 0..9, decoded from [z, e_y];
    the z draws depend on the seed only, so one seed with other labels gives the same styles.
    check=False skips the weights check (`check_weights`), for a caller that made it.
    """
    if isinstance(model, HierarchicalVAE):  # z2 ~ N(0, I), z1 ~ p(z1|z2), E[x|z1]
        label_args("sample_prior", model, labels, n)  # takes none
        if check:
            check_weights("sample_prior", model)
        generator = torch.Generator(device=next(model.parameters()).device)
        return hierarchical_samples(
            model, n, generator=generator.manual_seed(checks.int_at_least("seed", seed, 0))
        )
    check_model("sample_prior", model, vae=False, weights=check)
    n = checks.positive_int("n", n)
    param = next(model.parameters())
    resources.check_rows("sample_prior", n, model.config, param.device, "draw fewer (n), in parts")
    conditions = label_args("sample_prior", model, labels, n)  # (labels,) or ()
    seed = checks.int_at_least("seed", seed, 0)
    generator = torch.Generator(device=param.device).manual_seed(seed)
    shape = (n, model.config.latent_dim)
    z = torch.randn(shape, generator=generator, device=param.device, dtype=param.dtype)  # (n, D)
    # $\mathbb E[x \mid z]$ from the logits $g_\theta(z)$, $z \sim \mathcal N(0, I)$, (n, 784)
    return model.decode_mean(z, *conditions)


@torch.no_grad()
def reconstruct(
    model: VAE | Autoencoder,
    x: Tensor,
    *,
    labels: Tensor | None = None,
    sample: bool = False,
    seed: int = 0,
) -> Tensor:
    """Pixel means of decode(mu), or of a seeded z ~ q(z|x) if sample: x (B, 784) -> (B, 784).

    A CVAE needs labels (B,): it encodes with q(z|x,y) and decodes with p(x|z,y).
    """
    check_model("reconstruct", model, vae=False)
    checks.flag("sample", sample)
    seed = checks.int_at_least("seed", seed, 0)
    checks.tensor("reconstruct: x", x, "(B, 784)")
    conditions = label_args("reconstruct", model, labels, len(x))  # (labels,) or ()
    if not sample:
        mu = encode_dataset(model, x, batch_size=max(1, len(x)), labels=labels)  # (B, D)
        return model.decode_mean(mu, *conditions)
    if not isinstance(model, VAE):
        raise ValueError(
            "reconstruct: sample=True expected a VAE (a q(z|x) to sample), "
            f"got {type(model).__name__}"
        )
    mu, logvar = model.encode(x, *conditions)  # (B, D) each
    generator = torch.Generator(device=mu.device).manual_seed(seed)
    z = reparameterize(mu, logvar, generator)  # (B, D)
    return model.decode_mean(z, *conditions, check=False)  # (B, 784)


def _check_path(fn: str, z0: Tensor, z1: Tensor, steps: int) -> None:
    """Raise ValueError unless z0, z1 are finite latent vectors (D,) of one shape, steps >= 2."""
    checks.tensor(f"{fn}: z0", z0, "(D,)")
    checks.tensor(f"{fn}: z1", z1, "(D,)")
    if z0.ndim != 1 or z0.shape != z1.shape:
        raise ValueError(
            f"{fn}: expected z0 and z1 of the same shape (D,), "
            f"got {tuple(z0.shape)} and {tuple(z1.shape)}"
        )
    for name, z in (("z0", z0), ("z1", z1)):
        checks.floating(f"{fn}: {name}", z)
        checks.finite(f"{fn}: {name}", z)
    checks.int_at_least(f"{fn}: steps", steps, 2, "a path needs both ends")


def _times(z0: Tensor, steps: int) -> Tensor:
    """t = 0, 1/(steps-1), ..., 1 as a column: (steps, 1)."""
    return torch.linspace(0, 1, steps, dtype=z0.dtype, device=z0.device)[:, None]


def lerp(z0: Tensor, z1: Tensor, steps: int) -> Tensor:
    """Linear interpolation from z0 to z1, both ends included: (D,), (D,) -> (steps, D)."""
    _check_path("lerp", z0, z1, steps)
    t = _times(z0, steps)  # (steps, 1)
    return (1 - t) * z0 + t * z1  # $z_t = (1 - t) z_0 + t z_1$, (steps, D)


def slerp(z0: Tensor, z1: Tensor, steps: int) -> Tensor:
    """Spherical interpolation, lerp if z0 and z1 are parallel: (D,), (D,) -> (steps, D)."""
    _check_path("slerp", z0, z1, steps)
    norms = z0.norm() * z1.norm()
    if norms == 0:
        raise ValueError("slerp: expected nonzero z0 and z1, got a zero vector (no direction)")
    omega = torch.arccos((torch.dot(z0, z1) / norms).clamp(-1, 1))  # $\Omega$
    if torch.sin(omega) < 1e-6:  # parallel or opposite: no unique great circle
        return lerp(z0, z1, steps)
    t = _times(z0, steps)  # (steps, 1)
    # $\frac{\sin((1 - t)\Omega)}{\sin\Omega} z_0 + \frac{\sin(t\Omega)}{\sin\Omega} z_1$
    return (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / torch.sin(omega)


@torch.no_grad()
def interpolate(
    model: VAE | Autoencoder, x0: Tensor, x1: Tensor, steps: int = 10, method: str = "lerp"
) -> Tensor:
    """Decoded path between the latent means of two images (784 pixels each): (steps, 784)."""
    paths = {"lerp": lerp, "slerp": slerp}
    checks.one_of("method", method, tuple(paths))
    fix = "for a CVAE, decode the path yourself: model.decode_mean(lerp(z0, z1, steps), y)"
    checks.model_kind("interpolate", model, (VAE, Autoencoder), fix)  # unconditional, one layer
    check_weights("interpolate", model)
    checks.tensor("interpolate: x0", x0, "(784,)")
    checks.tensor("interpolate: x1", x1, "(784,)")
    if x0.numel() != PIXELS or x1.numel() != PIXELS:
        raise ValueError(
            "interpolate: expected two single images of 784 pixels each, "
            f"got shapes {tuple(x0.shape)} and {tuple(x1.shape)}"
        )
    z0, z1 = encode_dataset(model, torch.stack([x0.reshape(PIXELS), x1.reshape(PIXELS)]))  # (D,)
    return model.decode_mean(paths[method](z0, z1, steps))  # (steps, 784)


def latent_grid(n: int, *, eps: float = 0.05) -> Tensor:
    """Points Phi^-1(u), u = linspace(eps, 1 - eps, n), in both axes, row by row: (n*n, 2)."""
    n = checks.int_at_least("n", n, 2, "a grid needs at least 2 points per axis")
    checks.real("eps", eps, low=0.0, high=0.5, open_low=True, open_high=True)
    q = torch.special.ndtri(torch.linspace(eps, 1 - eps, n))  # $\Phi^{-1}(u)$, (n,)
    z1 = q.repeat(n)  # left to right within a row, (n*n,)
    z2 = q.flip(0).repeat_interleave(n)  # top row first, largest z_2 at the top, (n*n,)
    return torch.stack([z1, z2], dim=1)  # (n*n, 2)


@torch.no_grad()
def decode_grid(model: VAE | Autoencoder, n: int, *, eps: float = 0.05) -> Tensor:
    """Pixel means at latent_grid(n), for latent_dim == 2: (n*n, 784), row by row."""
    fix = "for a CVAE, decode latent_grid(n) yourself: model.decode_mean(z, y)"
    checks.model_kind("decode_grid", model, (VAE, Autoencoder), fix)  # unconditional, one layer
    check_weights("decode_grid", model)
    if model.config.latent_dim != 2:
        raise ValueError(
            f"decode_grid: expected a model with latent_dim == 2, got {model.config.latent_dim}"
        )
    param = next(model.parameters())
    n = checks.int_at_least("n", n, 2, "a grid needs at least 2 points per axis")
    resources.check_rows("decode_grid", n * n, model.config, param.device, "use a smaller n")
    z = latent_grid(n, eps=eps).to(device=param.device, dtype=param.dtype)  # (n*n, 2)
    return model.decode_mean(z)  # (n*n, 784)


@torch.no_grad()
def hierarchical_samples(
    model: HierarchicalVAE, n: int, *, generator: torch.Generator | None = None
) -> Tensor:
    """Draws z2 ~ N(0, I), z1 ~ p(z1|z2), shown as the means sigmoid(g(z1)): (n, 784)."""
    n = checks.positive_int("n", n)
    param = next(model.parameters())
    values = n * (PIXELS + 3 * sum(model.latent_dims))  # the images, z1's and z2's mu, logvar, z
    fix = "draw fewer (n), in parts"
    resources.check_fits(
        f"sample_prior: {n:,} images", resources.FLOAT32 * values, param.device, fix
    )
    z2 = torch.randn(
        (n, model.latent_dims[1]), generator=generator, dtype=param.dtype, device=param.device
    )
    mu, logvar = model.p_z1(z2)  # $p_\theta(z_1 \mid z_2)$
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    z1 = mu + torch.exp(0.5 * logvar) * eps  # $z_1 \sim p_\theta(z_1 \mid z_2)$
    return torch.sigmoid(model.decoder(z1))  # $\mathrm{sigmoid}(g_\theta(z_1))$


@torch.no_grad()
def hierarchical_mean_image(
    model: HierarchicalVAE,
    z2: Tensor,
    *,
    sample_z1: bool = False,
    generator: torch.Generator | None = None,
    check: bool = True,
) -> Tensor:
    """sigmoid(g(z1)), z1 the mean of p(z1|z2) (a draw if sample_z1): (B, D2) -> (B, 784).

    A picture of z2, not E[x|z2] = E_{p(z1|z2)}[sigmoid(g(z1))].
    """
    checks.flag("sample_z1", sample_z1)
    mu, logvar = model.prior_z1(z2, check=check)  # $p_\theta(z_1 \mid z_2)$, (B, D1) each
    z1 = mu
    if sample_z1:
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        z1 = mu + torch.exp(0.5 * logvar) * eps
    return torch.sigmoid(model.decoder(z1))
