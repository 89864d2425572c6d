r"""Scoring the two-layer model (`hierarchical.HierarchicalVAE`) as `evaluate` scores the VAE.

Its one-sample ELBO and L_k over a data set, each from one seeded generator, and its active units
per stochastic layer: $A_j = \mathrm{Var}_x\big(\mathbb E_q[z_j \mid x]\big) > 10^{-2}$ for
each dimension $j$ of the layer (Burda et al.'s $A_u$; `evaluate.active`). For $z_1$,
$\mathbb E_q[z_1 \mid x] = \mu_1(x)$. For $z_2$,
$\mathbb E_q[z_2 \mid x] = \mathbb E_{q(z_1 \mid x)}[\mu_2(z_1)]$ has no closed form: it is the
mean of $\mu_2(z_1)$ over $S$ draws of $z_1$, which adds at most
$\frac1S \mathbb E_x \mathrm{Var}_{q(z_1 \mid x)}[\mu_2(z_1)]$ to each variance.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vae_tutorial import checks
from vae_tutorial.evaluate import active, check_images, in_batches, nats_to_bits_per_dim
from vae_tutorial.hierarchical import HierarchicalVAE
from vae_tutorial.models import check_weights


@torch.no_grad()
def evaluate_hierarchical_elbo(
    model: HierarchicalVAE, images: Tensor, *, batch_size: int = 1000, seed: int = 0
) -> dict[str, float]:
    """The two-layer model's mean one-sample ELBO terms over binary images (N, 784), seeded:
    nats per example; "kl" is the sampled z1 term plus z2's closed-form KL."""
    check_hierarchical("evaluate_hierarchical_elbo", model, images)
    generator = torch.Generator(device=images.device).manual_seed(
        checks.int_at_least("seed", seed, 0)
    )
    sums = torch.zeros(2, dtype=torch.float64, device=images.device)  # (-sum log p(x|z1), sum KL)
    for x, _ in in_batches(images, (), batch_size):
        terms = model.elbo_terms(x, generator=generator)
        sums += torch.stack(
            [-terms.reconstruction.sum(), (terms.kl_z1 + terms.kl_z2).sum()]
        ).double()
    reconstruction, kl = (sums / len(images)).tolist()
    neg_elbo = (
        reconstruction + kl
    )  # $-\mathrm{ELBO} = -\log p(x \mid z_1) + \mathrm{KL}_1 + \mathrm{KL}_2$
    return {
        "neg_elbo": neg_elbo,
        "reconstruction": reconstruction,
        "kl": kl,
        "bits_per_dim": nats_to_bits_per_dim(neg_elbo),
    }


@torch.no_grad()
def hierarchical_dataset_bound(
    model: HierarchicalVAE,
    images: Tensor,
    k: int,
    *,
    seed: int = 0,
    batch_size: int = 100,
    chunk: int | None = None,
    progress: bool = False,
) -> Tensor:
    """L_k of every binary image (N, 784), draws from one generator seeded with `seed`: (N,) nats.

    chunk: draws per pass (default: about 1e5 draw-images, chunk * batch_size * 784 floats).
    progress: a bar with the time left on stderr, where it is a terminal (`in_batches`)."""
    check_hierarchical("hierarchical_dataset_bound", model, images)
    k, seed = checks.positive_int("k", k), checks.int_at_least("seed", seed, 0)
    batch_size = checks.positive_int("batch_size", batch_size)
    chunk = max(1, 100_000 // batch_size) if chunk is None else chunk
    generator = torch.Generator(device=images.device).manual_seed(seed)
    bounds = [
        model.importance_weighted_bound(x, k, chunk=chunk, generator=generator)
        for x, _ in in_batches(images, (), batch_size, f"L_{k}" * progress)
    ]
    return torch.cat(bounds)  # (N,)


@torch.no_grad()
def active_units_per_layer(
    model: HierarchicalVAE,
    images: Tensor,
    threshold: float = 0.01,
    *,
    samples: int = 100,
    seed: int = 0,
    batch_size: int = 500,
) -> list[tuple[int, Tensor]]:
    """`active` for z1 and z2: [(n1, variances (D1,)), (n2, variances (D2,))].

    E_q[z1|x] = mu1(x); E_q[z2|x] = E_{q(z1|x)}[mu2(z1)] has no closed form: it is the mean of
    mu2(z1) over `samples` draws of z1, which adds at most E_x Var_q[mu2(z1)] / samples to each
    variance (A_j of Burda et al. 2016, per layer)."""
    check_hierarchical("active_units_per_layer", model, images, at_least=2)
    threshold = checks.real("threshold", threshold, low=0.0)
    samples = checks.positive_int("samples", samples)
    generator = torch.Generator(device=images.device).manual_seed(
        checks.int_at_least("seed", seed, 0)
    )
    means1, means2 = [], []
    for x, _ in in_batches(images, (), batch_size):
        mu1, logvar1 = model.encode(x)  # (b, D1) each
        eps = torch.randn(
            (samples, *mu1.shape), generator=generator, dtype=mu1.dtype, device=mu1.device
        )
        z1 = mu1 + torch.exp(0.5 * logvar1) * eps  # (S, b, D1)
        means1.append(mu1)  # $\mathbb E_q[z_1 \mid x] = \mu_1(x)$
        means2.append(model.encode_z2(z1)[0].mean(0))  # $\frac1S \sum_s \mu_2(z_1^{(s)})$
    return [active(torch.cat(means1), threshold), active(torch.cat(means2), threshold)]


def check_hierarchical(fn: str, model: object, images: object, at_least: int = 1) -> None:
    """A HierarchicalVAE with finite weights, and images."""
    checks.model_kind(
        fn, model, (HierarchicalVAE,), "the scores of a one-layer model: evaluate, iwae"
    )
    check_weights(fn, model)
    check_images(fn, images, at_least)
