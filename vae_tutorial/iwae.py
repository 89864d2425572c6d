r"""The importance-weighted bound L_k (Burda, Grosse and Salakhutdinov 2016), per image, in nats.

With $k$ draws $z_i \sim q_\phi(z \mid x)$ and weights
$w_i = \frac{p_\theta(x, z_i)}{q_\phi(z_i \mid x)}$, each $w_i$ is an unbiased estimate of
$p_\theta(x)$, and by Jensen's inequality

$$\mathcal L_k = \mathbb E\Big[\log \frac1k \sum_{i=1}^k w_i\Big] \le \log p_\theta(x),
\qquad \mathcal L_1 = \mathrm{ELBO} \le \mathcal L_k \le \mathcal L_{k+1}
\xrightarrow{k \to \infty} \log p_\theta(x).$$

With $z = \mu + \sigma \odot \epsilon$ the constants $\log 2\pi$ cancel:

$$\log w = \log p_\theta(x \mid z) + \log p(z) - \log q_\phi(z \mid x),$$

$$\log p(z) - \log q_\phi(z \mid x)
= \tfrac12 \sum_j \big(\epsilon_j^2 - z_j^2 + \log\sigma_j^2\big).$$

Any Gaussian $q(z \mid x) = \mathcal N(\mu, \sigma^2)$ gives such a bound, not only the encoder's:
`importance_weighted_bound(..., proposal=(mu, logvar))` draws the $z_i$ from it instead (the
inference gap of `inference_gap` compares the encoder's $q_\phi$ with the best Gaussian $q^*$ so).

The log-weights are hundreds of nats below zero, where $e^{\log w}$ underflows, so $\log \frac1k
\sum_i w_i$ is computed as $\operatorname{logsumexp}_i \log w_i - \log k$. For large $k$ the samples
come in chunks, and the chunks' sums are combined with $\log(e^a + e^b) =
\operatorname{logaddexp}(a, b)$, so memory does not grow with $k$.

`dataset_bound` scores a whole data set from one seed, in batches: the one entry point for a score.
A model is scored with its own likelihood (`likelihood=` names another), on data of the kind it
models; a CVAE's $\mathcal L_k$, given `labels=`, bounds $\log p_\theta(x \mid y)$.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vae_tutorial import checks, resources
from vae_tutorial.evaluate import check_images, in_batches, model_likelihood
from vae_tutorial.labels import label_args
from vae_tutorial.likelihoods import log_likelihood
from vae_tutorial.models import VAE, check_model

# Decoder rows per chunk of importance_weighted_bound: about 100 MB of float32 logits.
ROWS_PER_CHUNK = 32768
IWAE_BATCH = 100  # images per batch of dataset_bound


def _log_weights(
    model: VAE,
    x: Tensor,
    mu: Tensor,
    logvar: Tensor,
    k: int,
    generator: torch.Generator | None,
    likelihood: str,
    conditions: tuple[Tensor, ...] = (),
) -> Tensor:
    """log w_i = log p(x, z_i) - log q(z_i|x): x (B, 784), mu, logvar (B, D) -> (k, B) nats.

    conditions: a CVAE's labels (B,), as `label_args` gives them; then p(x|z_i,y), q(z_i|x,y).
    """
    eps = torch.randn((k, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)
    z = mu + torch.exp(0.5 * logvar) * eps  # $z_i = \mu + \sigma \odot \epsilon_i$, (k, B, D)
    y = (t.repeat(k) for t in conditions)  # row i * B + b of z.flatten(0, 1) has label b: (k B,)
    logits = model.decode(z.flatten(0, 1), *y, check=False).unflatten(0, (k, -1))  # (k, B, 784)
    log_lik = log_likelihood(likelihood)
    log_px_z = log_lik(logits, x.expand_as(logits), check=False)  # $\log p(x \mid z_i)$, (k, B)
    # $\log p(z) - \log q(z \mid x) = \frac12 \sum_j (\epsilon_j^2 - z_j^2 + \log\sigma_j^2)$
    log_pz_minus_log_q = 0.5 * (eps.pow(2) - z.pow(2) + logvar).sum(-1)  # (k, B)
    return log_px_z + log_pz_minus_log_q


def _checked_proposal(
    fn: str, model: VAE, n: int, proposal: object, check: bool
) -> tuple[Tensor, Tensor]:
    """A given q = N(mu, diag exp(logvar)): mu, logvar (n, D), one row per image, checked."""
    if not (isinstance(proposal, tuple) and len(proposal) == 2):
        raise ValueError(
            f"{fn}: proposal: expected a tuple (mu, logvar), got {checks.describe(proposal)}"
        )
    mu, logvar = proposal
    checks.same_shape(fn, ("mu", "logvar"), mu, logvar)
    if mu.shape != (n, model.config.latent_dim):
        raise ValueError(
            f"{fn}: expected mu and logvar of shape ({n}, {model.config.latent_dim}), one row "
            f"per image, got {tuple(mu.shape)}"
        )
    if check:
        checks.finite(f"{fn}: mu", mu)
        checks.finite(f"{fn}: logvar", logvar)
    return mu, logvar


def _encode_checked(
    fn: str,
    model: VAE,
    x: Tensor,
    check: bool,
    likelihood: str | None,
    labels: Tensor | None = None,
    proposal: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor, tuple[Tensor, ...], str]:
    """mu, logvar (B, D), flat x (B, 784), the label arguments (a CVAE's (labels,), else ()) and
    the likelihood (the model's own, unless one is named).

    mu, logvar are the encoder's q(z|x), or the given proposal's. Model, x, labels and the
    proposal are checked once if check (x binary for Bernoulli).
    """
    likelihood = model_likelihood(model, likelihood)
    check_model(fn, model, weights=check)
    checks.tensor(f"{fn}: x", x, "(B, 784)")
    conditions = label_args(fn, model, labels, len(x), check=check)  # (labels,) or ()
    mu, logvar = model.encode(x, *conditions, check=check)  # (B, D) each, x checked in [0, 1]
    if proposal is not None:  # a given q replaces the encoder's, whose pass still checked x
        mu, logvar = _checked_proposal(fn, model, len(x), proposal, check)
    x = x.reshape(len(x), -1)  # (B, 784)
    if check and likelihood == "bernoulli":
        fix = "binarize x, or pass the likelihood the model was trained with for grey x"
        checks.binary(f"{fn}: x", x, fix)
    return mu, logvar, x, conditions, likelihood


def log_importance_weights(
    model: VAE,
    x: Tensor,
    k: int,
    *,
    generator: torch.Generator | None = None,
    check: bool = True,
    likelihood: str | None = None,
    labels: Tensor | None = None,
) -> Tensor:
    """log p(x, z_i) - log q(z_i|x), z_i ~ q(z|x), differentiable: x (B, 784) -> (k, B) nats.

    A CVAE needs labels (B,): then log p(x, z_i | y) - log q(z_i | x, y).
    """
    k = checks.positive_int("k", k)
    fn = "log_importance_weights"
    fix = "use a smaller k or batch (a score without gradients: importance_weighted_bound)"
    resources.check_rows(fn, k * len(x), model.config, x.device, fix, copies=3)
    mu, logvar, x, y, likelihood = _encode_checked(fn, model, x, check, likelihood, labels)
    return _log_weights(model, x, mu, logvar, k, generator, likelihood, y)


@torch.no_grad()
def importance_weighted_bound(
    model: VAE,
    x: Tensor,
    k: int,
    *,
    chunk: int | None = None,
    generator: torch.Generator | None = None,
    check: bool = True,
    likelihood: str | None = None,
    labels: Tensor | None = None,
    proposal: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """L_k = log (1/k) sum_i w_i, chunk samples per decoder call: x (B, 784) -> (B,) nats.

    likelihood: None = the model's own (on the data it models), or the one to score it with.
    A CVAE needs labels (B,): its L_k bounds log p(x|y).
    proposal: (mu, logvar), each (B, D), a Gaussian q = N(mu, diag exp(logvar)) that replaces the
    encoder's q(z|x): the z_i are drawn from it, and w_i = p(x, z_i) / q(z_i).
    """
    k = checks.positive_int("k", k)
    fn = "importance_weighted_bound"
    checked = _encode_checked(fn, model, x, check, likelihood, labels, proposal)
    mu, logvar, x, y, likelihood = checked
    chunk = max(1, ROWS_PER_CHUNK // max(1, len(x))) if chunk is None else chunk
    chunk = checks.positive_int("chunk", chunk)
    fix = "use a smaller chunk (draws per decoder call) or batch"
    resources.check_rows(fn, min(chunk, k) * len(x), model.config, x.device, fix)
    # $\log \sum_i w_i$ over the chunks so far, (B,)
    log_sum_w = torch.full_like(mu[:, 0], -math.inf)
    for start in range(0, k, chunk):
        draws = min(chunk, k - start)
        log_w = _log_weights(model, x, mu, logvar, draws, generator, likelihood, y)  # (draws, B)
        log_sum_w = torch.logaddexp(log_sum_w, torch.logsumexp(log_w, 0))  # $\log(e^a + e^b)$
    return log_sum_w - math.log(k)  # $\mathcal L_k = \log \frac1k \sum_i w_i$


@resources.reported
@torch.no_grad()
def dataset_bound(
    model: VAE,
    images: Tensor,
    k: int,
    *,
    labels: Tensor | None = None,
    seed: int = 0,
    batch_size: int = IWAE_BATCH,
    likelihood: str | None = None,
    check: bool = True,
    progress: bool = False,
) -> Tensor:
    """L_k of every image (N, 784), z_i from one generator seeded with `seed`: (N,) nats.

    The images go through `importance_weighted_bound` in batches of batch_size, in order, so one
    seed gives one answer. A CVAE needs the labels (N,). check=False skips the checks of the model
    and the images (x in [0, 1], binary for a Bernoulli model), for a caller that made them.
    progress: a bar with the time left on stderr, where it is a terminal (`in_batches`).
    """
    fn = "dataset_bound"
    k = checks.positive_int("k", k)
    seed = checks.int_at_least("seed", seed, 0)
    check_model(fn, model, weights=check)
    check_images(fn, images)
    likelihood = model_likelihood(model, likelihood)
    conditions = label_args(fn, model, labels, len(images), check=check)  # (labels,) or ()
    if check:  # the whole set once, so that no batch reads its images back
        checks.unit_interval(f"{fn}: images", images)
        if likelihood == "bernoulli":
            fix = "binarize them, or pass the likelihood the model was trained with for grey x"
            checks.binary(f"{fn}: images", images, fix)
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    bounds = [
        importance_weighted_bound(
            model,
            x,
            k,
            generator=generator,
            likelihood=likelihood,
            labels=y[0] if y else None,
            check=False,
        )  # (batch,)
        for x, y in in_batches(images, conditions, batch_size, f"L_{k}" * progress)
    ]
    return torch.cat(bounds)  # (N,)
