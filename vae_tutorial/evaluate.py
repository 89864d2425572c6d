r"""Evaluation: the test ELBO in nats and bits per dimension, the bound L_k, active units.

## The ELBO on test data

`evaluate_elbo` averages the one-sample ELBO over a data set, with $z \sim q_\phi(z \mid x)$ drawn
from a seeded generator. A deterministic $z = \mu$ would not give the ELBO: its reconstruction term
is $\log p_\theta(x \mid \mu)$, not $\mathbb E_q[\log p_\theta(x \mid z)]$.

In bits per dimension, $\mathrm{bpd} = \frac{-\mathrm{ELBO}}{P \ln 2}$ with $P = 784$: nats to bits,
per pixel.

A model is scored on its own terms: `likelihood` is the one it was trained with, and the images
are of the kind it models (`train.load_test_set`: grey for a model of grey pixels, the
static-binarized test set for a Bernoulli one). Scores of different likelihoods or data are not
comparable: a density on $[0, 1]^P$ is not a probability on $\{0, 1\}^P$.

## The importance-weighted bound (Burda, Grosse and Salakhutdinov 2016)

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

## Active units (Burda et al. 2016)

A latent dimension $u$ is active when the encoder's mean moves with the input: $A_u =
\mathrm{Cov}_x\big(\mathbb E_{q(z \mid x)}[z_u]\big) > 0.01$. An inactive dimension typically has
$q(z_u \mid x) \approx p(z_u)$ for every $x$, and its KL per latent is close to 0.

Every function refuses a model with NaN or inf weights (a diverged run) before it computes
anything, rather than return NaN.

A conditional VAE (`CVAE`) takes the images' digit labels, `labels=` (N,) int64: its ELBO and
$\mathcal L_k$ then bound $\log p_\theta(x \mid y)$, with $q_\phi(z \mid x, y)$ and
$p_\theta(x \mid z, y)$ in place of $q_\phi(z \mid x)$ and $p_\theta(x \mid z)$.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from vae_tutorial import checks
from vae_tutorial.elbo import LIKELIHOODS, elbo_terms, kl_per_dimension, log_likelihood
from vae_tutorial.models import VAE, Autoencoder, check_model, label_args

# Decoder rows per chunk of importance_weighted_bound: about 100 MB of float32 logits.
ROWS_PER_CHUNK = 32768


def _check_images(fn: str, images: object, at_least: int = 1) -> None:
    """A tensor with at least `at_least` images along its first axis."""
    checks.tensor(f"{fn}: images", images, "(N, 784) or (N, 1, 28, 28)")
    if images.ndim < 1 or len(images) < at_least:
        got = len(images) if images.ndim else "a 0-d tensor"
        raise ValueError(f"{fn}: expected at least {at_least} image(s), got {got}")


def _batches(images: Tensor, batch_size: int) -> Iterator[Tensor]:
    """Consecutive slices of images along the first axis."""
    batch_size = checks.positive_int("batch_size", batch_size)
    for start in range(0, len(images), batch_size):
        yield images[start : start + batch_size]


def _label_batches(
    conditions: tuple[Tensor, ...], n: int, batch_size: int
) -> Iterator[tuple[Tensor, ...]]:
    """The label arguments (`label_args`) sliced like `_batches`: () for unconditional models."""
    for start in range(0, n, batch_size):
        yield tuple(t[start : start + batch_size] for t in conditions)


def nats_to_bits_per_dim(nats: float | Tensor, dims: int = 784) -> float | Tensor:
    """Nats per example -> bits per dimension: nats / (dims ln 2)."""
    dims = checks.positive_int("dims", dims)
    # $\mathrm{bpd} = \frac{\mathrm{nats}}{P \ln 2}$
    return nats / (dims * math.log(2))


@torch.no_grad()
def evaluate_elbo(
    model: VAE,
    images: Tensor,
    *,
    labels: Tensor | None = None,
    batch_size: int = 1000,
    seed: int = 0,
    likelihood: str = "bernoulli",
) -> dict[str, float]:
    """Mean one-sample ELBO terms over images (N, 784), z ~ q(z|x) seeded: nats per example.

    A CVAE needs the images' labels (N,): its conditional ELBO bounds log p(x|y).

    likelihood: the one the model was trained with (TrainConfig.likelihood), on the data it models
    (`train.load_test_set`).
    """
    checks.one_of("likelihood", likelihood, LIKELIHOODS)
    check_model("evaluate_elbo", model)
    _check_images("evaluate_elbo", images)
    conditions = label_args("evaluate_elbo", model, labels, len(images))  # (labels,) or ()
    checks.positive_int("batch_size", batch_size)
    seed = checks.int_at_least("seed", seed, 0)
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # (-sum log p(x|z), sum KL)
    labelled = _label_batches(conditions, len(images), batch_size)
    for x, y in zip(_batches(images, batch_size), labelled, strict=True):
        logits, mu, logvar, _ = model(x, *y, generator=generator)  # z ~ q(z|x), not z = mu
        terms = elbo_terms(logits, x.reshape(len(x), -1), mu, logvar, likelihood=likelihood)
        sums += torch.stack([-terms.reconstruction.sum(), terms.kl.sum()]).double()
    # $-\mathbb E_q \log p_\theta(x \mid z)$ and $\mathrm{KL}$, means over the images
    reconstruction, kl = (sums / len(images)).tolist()
    # $-\mathrm{ELBO} = -\log p_\theta(x \mid z) + \mathrm{KL}$
    neg_elbo = reconstruction + kl
    return {
        "neg_elbo": neg_elbo,
        "reconstruction": reconstruction,
        "kl": kl,
        "bits_per_dim": nats_to_bits_per_dim(neg_elbo),
    }


def _log_weights(
    model: VAE,
    x: Tensor,
    mu: Tensor,
    logvar: Tensor,
    k: int,
    generator: torch.Generator | None,
    likelihood: str = "bernoulli",
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
    likelihood: str,
    labels: Tensor | None = None,
    proposal: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor, tuple[Tensor, ...]]:
    """mu, logvar (B, D), flat x (B, 784) and the label arguments (a CVAE's (labels,), else ()).

    mu, logvar are the encoder's q(z|x), or the given proposal's. Model, x, labels and the
    proposal are checked once if check (x binary for Bernoulli).
    """
    checks.one_of("likelihood", likelihood, LIKELIHOODS)
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
    return mu, logvar, x, conditions


def log_importance_weights(
    model: VAE,
    x: Tensor,
    k: int,
    *,
    generator: torch.Generator | None = None,
    check: bool = True,
    likelihood: str = "bernoulli",
    labels: Tensor | None = None,
) -> Tensor:
    """log p(x, z_i) - log q(z_i|x), z_i ~ q(z|x), differentiable: x (B, 784) -> (k, B) nats.

    A CVAE needs labels (B,): then log p(x, z_i | y) - log q(z_i | x, y).
    """
    k = checks.positive_int("k", k)
    fn = "log_importance_weights"
    mu, logvar, x, y = _encode_checked(fn, model, x, check, likelihood, labels)
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
    likelihood: str = "bernoulli",
    labels: Tensor | None = None,
    proposal: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """L_k = log (1/k) sum_i w_i, chunk samples per decoder call: x (B, 784) -> (B,) nats.

    likelihood: the one the model was trained with (TrainConfig.likelihood), on the data it models.
    A CVAE needs labels (B,): its L_k bounds log p(x|y).
    proposal: (mu, logvar), each (B, D), a Gaussian q = N(mu, diag exp(logvar)) that replaces the
    encoder's q(z|x): the z_i are drawn from it, and w_i = p(x, z_i) / q(z_i).
    """
    k = checks.positive_int("k", k)
    fn = "importance_weighted_bound"
    mu, logvar, x, y = _encode_checked(fn, model, x, check, likelihood, labels, proposal)
    chunk = max(1, ROWS_PER_CHUNK // max(1, len(x))) if chunk is None else chunk
    chunk = checks.positive_int("chunk", chunk)
    # $\log \sum_i w_i$ over the chunks so far, (B,)
    log_sum_w = torch.full_like(mu[:, 0], -math.inf)
    for start in range(0, k, chunk):
        draws = min(chunk, k - start)
        log_w = _log_weights(model, x, mu, logvar, draws, generator, likelihood, y)  # (draws, B)
        log_sum_w = torch.logaddexp(log_sum_w, torch.logsumexp(log_w, 0))  # $\log(e^a + e^b)$
    return log_sum_w - math.log(k)  # $\mathcal L_k = \log \frac1k \sum_i w_i$


def _encoded(
    model: VAE | Autoencoder,
    images: Tensor,
    batch_size: int,
    conditions: tuple[Tensor, ...] = (),
) -> Iterator[Tensor]:
    """The encoder's outputs batch by batch: (mu, logvar) for a VAE, z for an autoencoder.

    conditions: a CVAE's labels (N,), as `label_args` gives them; () for other models.
    """
    labels = _label_batches(conditions, len(images), batch_size)
    for x, y in zip(_batches(images, batch_size), labels, strict=True):
        yield model.encode(x, *y)


@torch.no_grad()
def encode_dataset(
    model: VAE | Autoencoder,
    images: Tensor,
    batch_size: int = 1000,
    *,
    labels: Tensor | None = None,
) -> Tensor:
    """Latent means E_q[z] (a VAE's mu, an autoencoder's z) of images (N, 784): (N, D).

    A CVAE needs the labels (N,): the means of q(z|x,y).
    """
    check_model("encode_dataset", model, vae=False)
    _check_images("encode_dataset", images)
    conditions = label_args("encode_dataset", model, labels, len(images))  # (labels,) or ()
    encoded = _encoded(model, images, batch_size, conditions)
    means = [out[0] if isinstance(model, VAE) else out for out in encoded]
    return torch.cat(means)  # (N, D)


@torch.no_grad()
def kl_per_latent(
    model: VAE, images: Tensor, *, labels: Tensor | None = None, batch_size: int = 1000
) -> Tensor:
    """Mean over images of KL(q(z_j|x) || N(0, 1)) for each latent dimension j: (D,) nats.

    A CVAE needs the labels (N,): the KL of q(z_j|x,y).
    """
    check_model("kl_per_latent", model)
    _check_images("kl_per_latent", images)
    conditions = label_args("kl_per_latent", model, labels, len(images))  # (labels,) or ()
    encoded = _encoded(model, images, batch_size, conditions)
    total = sum(kl_per_dimension(mu, logvar).sum(0) for mu, logvar in encoded)
    return total / len(images)  # $\frac1N \sum_n \mathrm{KL}_j(x_n)$, (D,)


def active_units(
    model: VAE,
    images: Tensor,
    threshold: float = 0.01,
    *,
    labels: Tensor | None = None,
    batch_size: int = 1000,
) -> tuple[int, Tensor]:
    """Count of latents with Var_x(E_q[z_u]) > threshold, and the variances (D,).

    A CVAE needs the labels (N,): then E_q[z_u] is the mean of q(z|x,y).
    """
    check_model("active_units", model)
    _check_images("active_units", images, at_least=2)
    threshold = checks.real("threshold", threshold, low=0.0)
    # $\mathbb E_{q(z \mid x_n)}[z]$, (N, D)
    mu = encode_dataset(model, images, batch_size, labels=labels)
    variances = mu.var(0)  # $A_u = \mathrm{Cov}_x(\mathbb E_q[z_u])$, the diagonal, (D,)
    return int((variances > threshold).sum()), variances
