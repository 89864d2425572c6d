r"""The evidence lower bound (ELBO) and its two terms, per example, in nats.

## The bound

For any density $q(z \mid x)$, multiplying and dividing by it inside $p(x) = \int p(x, z)\,dz$ and
rearranging gives the identity

$$\log p_\theta(x) = \underbrace{\mathbb E_{q_\phi(z \mid x)}\big[\log p_\theta(x \mid z)\big]
- \mathrm{KL}\big(q_\phi(z \mid x) \,\|\, p(z)\big)}_{\mathrm{ELBO}(x)}
+ \mathrm{KL}\big(q_\phi(z \mid x) \,\|\, p_\theta(z \mid x)\big).$$

The last KL is never negative, so the ELBO is a lower bound on $\log p_\theta(x)$, tight when $q$ is
the true posterior. We **maximise** the ELBO, i.e. **minimise** $-\mathrm{ELBO}$, in nats per
example: each term is a **sum** over the $P = 784$ pixels or the $D$ latent dimensions, and the
loss is the **mean** over the batch.

## The reconstruction term

One draw $z \sim q_\phi(z \mid x)$ gives an unbiased estimate of
$\mathbb E_q[\log p_\theta(x \mid z)]$, computed from the decoder's logits by the likelihood the
model names (`likelihoods`: Bernoulli for binary $x$, the continuous Bernoulli for grey $x$).

## The KL term, in closed form

For $q = \mathcal N(\mu, \sigma^2)$ and $p = \mathcal N(0, 1)$, $\log q(z) - \log p(z) =
-\frac12 \log \sigma^2 - \frac{(z - \mu)^2}{2\sigma^2} + \frac{z^2}{2}$, and taking
$\mathbb E_q$ ($\mathbb E_q[(z - \mu)^2] = \sigma^2$, $\mathbb E_q[z^2] = \mu^2 + \sigma^2$):

$$\mathrm{KL}\big(\mathcal N(\mu, \sigma^2) \,\|\, \mathcal N(0, 1)\big)
= \tfrac12 \big(\mu^2 + \sigma^2 - \log \sigma^2 - 1\big) \ge 0,$$

summed over the $D$ independent dimensions. It is exact: no sampling noise in this term.

With `check=True` (the default) every function here also refuses non-finite inputs and reads its
inputs back to do so (a GPU sync); the training loop passes `check=False`. The training objective
built on these terms (a weight $\beta$, its warm-up, free bits, and $\mathcal L_k$) is in
`objective`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from vae_tutorial import checks, moved
from vae_tutorial.config import LIKELIHOODS, ModelConfig
from vae_tutorial.likelihoods import log_likelihood

moved.keep_old_names(__name__)  # the likelihoods, kl_warmup, free_bits_kl ...: see `moved`


def kl_per_dimension(mu: Tensor, logvar: Tensor, *, check: bool = True) -> Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) for each latent dimension: (B, D) -> (B, D) nats."""
    checks.same_shape("kl_per_dimension", ("mu", "logvar"), mu, logvar)
    if check:
        checks.finite_inputs("kl_per_dimension", mu=mu, logvar=logvar)
    # $\mathrm{KL}_j = \frac12 (\mu_j^2 + \sigma_j^2 - \log\sigma_j^2 - 1)$
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1)


def kl_to_standard_normal(mu: Tensor, logvar: Tensor, *, check: bool = True) -> Tensor:
    """KL(q(z|x) || N(0, I)) of a diagonal Gaussian, summed over dimensions: (B, D) -> (B,) nats."""
    # $\mathrm{KL} = \frac12 \sum_j (\mu_j^2 + \sigma_j^2 - \log\sigma_j^2 - 1)$
    return kl_per_dimension(mu, logvar, check=check).sum(-1)


@dataclass
class ELBOTerms:
    """The one-sample ELBO and its terms, per example, in nats."""

    reconstruction: Tensor  # log p(x|z) for one z ~ q(z|x), (B,)
    kl: Tensor  # KL(q(z|x) || p(z)), closed form, (B,)
    elbo: Tensor  # reconstruction - kl, (B,)


def elbo_terms(
    logits: Tensor,
    x: Tensor,
    mu: Tensor,
    logvar: Tensor,
    *,
    likelihood: str = ModelConfig.likelihood,
    check: bool = True,
) -> ELBOTerms:
    """One-sample ELBO terms: logits, x (B, P); mu, logvar (B, D) -> each (B,) nats."""
    checks.one_of("likelihood", likelihood, LIKELIHOODS)
    checks.tensor("elbo_terms: logits", logits)
    checks.tensor("elbo_terms: mu", mu)
    if logits.shape[:-1] != mu.shape[:-1]:
        raise ValueError(
            "elbo_terms: expected logits and mu with the same batch shape, "
            f"got {tuple(logits.shape)} and {tuple(mu.shape)}"
        )
    # $\log p_\theta(x \mid z)$, (B,)
    reconstruction = log_likelihood(likelihood)(logits, x, check=check)
    # $\mathrm{KL}(q_\phi(z \mid x) \,\|\, p(z))$, (B,)
    kl = kl_to_standard_normal(mu, logvar, check=check)
    # $\mathrm{ELBO} = \log p_\theta(x \mid z) - \mathrm{KL}$
    return ELBOTerms(reconstruction, kl, reconstruction - kl)


def negative_elbo(
    logits: Tensor,
    x: Tensor,
    mu: Tensor,
    logvar: Tensor,
    *,
    beta: float = 1.0,
    likelihood: str = ModelConfig.likelihood,
    check: bool = True,
) -> Tensor:
    """The training loss, batch mean of -log p(x|z) + beta * KL: scalar, nats per example."""
    checks.real("beta", beta, low=0.0, fix="beta = 1 gives the negative ELBO")
    terms = elbo_terms(logits, x, mu, logvar, likelihood=likelihood, check=check)
    # $\frac1B \sum_b \big[-\log p_\theta(x_b \mid z_b) + \beta\, \mathrm{KL}_b\big]$
    return (-terms.reconstruction + beta * terms.kl).mean()
