r"""Models: a plain autoencoder and a variational autoencoder (VAE) for 28 x 28 images.

## The generative model

A VAE describes an image $x \in \{0, 1\}^P$ ($P = 784$ pixels) through a latent code
$z \in \mathbb R^D$ ($D$ the latent size):

$$p_\theta(x, z) = p_\theta(x \mid z)\, p(z), \qquad p(z) = \mathcal N(0, I),$$

$$p_\theta(x \mid z) = \prod_{i=1}^{P} \mathrm{Bernoulli}\big(x_i;\, \mathrm{sigmoid}(\ell_i)\big),
\qquad \ell = g_\theta(z).$$

The decoder $g_\theta$ returns the logits $\ell$, never probabilities: the log-likelihood is then
computed from logits, which is exact where $\mathrm{sigmoid}(\ell)$ would round to 0 or 1.

## The encoder

The encoder approximates the posterior $p_\theta(z \mid x)$ with a diagonal Gaussian

$$q_\phi(z \mid x) = \mathcal N\big(\mu_\phi(x), \operatorname{diag} \sigma^2_\phi(x)\big).$$

It outputs $\mu$ and $\log \sigma^2$: a log-variance can be any real number, so the network needs
no positivity constraint, and the KL term uses $\log\sigma^2$ directly, never $\log 0$.

## The reparameterization trick

A sample $z \sim q_\phi(z \mid x)$ written as

$$z = \mu + \sigma \odot \epsilon, \qquad \epsilon \sim \mathcal N(0, I), \qquad
\sigma = e^{\frac12 \log \sigma^2}$$

moves the randomness into $\epsilon$, which does not depend on $\phi$, so the gradient moves inside
the expectation (Kingma and Welling 2014; Rezende et al. 2014):

$$\nabla_\phi\, \mathbb E_{q_\phi(z \mid x)}[h(z)] = \mathbb E_{\epsilon}\big[\nabla_\phi\,
h(\mu_\phi(x) + \sigma_\phi(x) \odot \epsilon)\big]$$

for any differentiable $h$, such as $h(z) = \log p_\theta(x \mid z)$.

## The plain autoencoder

The autoencoder has the same layout with a deterministic code $z = e_\phi(x)$ from its encoder
$e_\phi$. Nothing ties its codes to $p(z)$, so decoding draws from $\mathcal N(0, I)$ need not give
digits.

## Layouts and likelihoods

`networks` builds the layers of each `arch`. The decoder returns logits $\ell$; the model's
`config.likelihood` reads them: `log_likelihood(logits, x)` is $\log p_\theta(x \mid z)$ and
`decode_mean(z)` is the mean image $\mathbb E[x \mid z]$, $\mathrm{sigmoid}(\ell)$ for a
Bernoulli decoder and the continuous Bernoulli's own mean for that one (`likelihoods`). Every
picture of the package decodes with `decode_mean`.

## The conditional VAE (Sohn, Lee and Yan 2015)

`kind="cvae"` conditions both networks on the digit label $y \in \{0, \dots, 9\}$, given to them
as a one-hot vector $e_y \in \{0, 1\}^{10}$ concatenated to their input: $q_\phi(z \mid x, y)$
sees $[x, e_y]$ (for `conv`, the convolutional features of $x$ and $e_y$), $p_\theta(x \mid z, y)$
has logits $g_\theta([z, e_y])$, and the prior stays $p(z) = \mathcal N(0, I)$. Its ELBO bounds
$\log p_\theta(x \mid y)$ with the same two terms:

$$\log p_\theta(x \mid y) \ge \mathbb E_{q_\phi(z \mid x, y)}\big[\log p_\theta(x \mid z, y)\big]
- \mathrm{KL}\big(q_\phi(z \mid x, y) \,\|\, p(z)\big).$$

Inputs are checked at the boundary: shape (B, 784) or (B, 1, 28, 28), the model's dtype and device,
finite values in [0, 1]; labels y int64 (B,) in 0..9. The value checks read the data back (a GPU
sync), so `check=False` skips them (the training loop does).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vae_tutorial import checks, moved
from vae_tutorial.config import ModelConfig
from vae_tutorial.hierarchical import from_config
from vae_tutorial.labels import CLASSES, check_labels
from vae_tutorial.layers import initialise_
from vae_tutorial.likelihoods import likelihood_mean, log_likelihood
from vae_tutorial.networks import (
    PIXELS,
    check_dtype_device,
    conv_features,
    decoder,
    encoder_body,
    flat_images,
)

moved.keep_old_names(__name__)  # ModelConfig, CLASSES, PIXELS ...: see `moved`


def reparameterize(mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One draw z ~ N(mu, exp(logvar)) as z = mu + sigma * eps: (B, D), (B, D) -> (B, D)."""
    checks.same_shape("reparameterize", ("mu", "logvar"), mu, logvar)
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps  # $z = \mu + e^{\frac12\log\sigma^2} \odot \epsilon$


class _ImageModel(nn.Module):
    """What the VAE and the autoencoder share: the config, decoding and the input checks."""

    kind = ""  # the ModelConfig.kind each model class serves
    conditional = False  # a CVAE takes digit labels y after x or z
    title, misfit = "", ""  # what it is; what to do where a function does not serve it

    def __init__(self, config: ModelConfig | None) -> None:
        super().__init__()
        config = ModelConfig(kind=self.kind) if config is None else config
        if config.kind != self.kind:
            raise ValueError(
                f"{type(self).__name__}: expected a ModelConfig with kind={self.kind!r}, "
                f"got kind={config.kind!r} (build_model picks the class from the config)"
            )
        self.config = config

    def _images(self, x: Tensor, check: bool) -> Tensor:
        """Checked, flattened images (B, 784)."""
        return flat_images(x, next(self.parameters()), check)

    def _latents(self, z: Tensor, check: bool) -> Tensor:
        """Checked latent codes z (B, D)."""
        param = next(self.parameters())
        latent = self.config.latent_dim
        checks.tensor("z", z, f"(B, {latent})")
        if z.ndim != 2 or z.shape[1] != latent:
            raise ValueError(f"z: expected shape (B, {latent}), got {tuple(z.shape)}")
        check_dtype_device("z", z, param)
        if check:
            checks.finite("z", z)
        return z

    def decode(self, z: Tensor, *, check: bool = True) -> Tensor:
        """Decoder logits l = g_theta(z): z (B, D) -> logits (B, 784); check: z finite."""
        return self.decoder(self._latents(z, check))  # (B, 784)

    def decode_mean(self, z: Tensor, *labels: Tensor, check: bool = True) -> Tensor:
        """The mean image E[x|z] of the model's likelihood: z (B, D) -> (B, 784) in (0, 1)."""
        return self.mean(self.decode(z, *labels, check=check))

    decode_probs = moved.renamed("decode_mean")  # its name when every decoder was Bernoulli

    def mean(self, logits: Tensor) -> Tensor:
        """E[x|z] from the decoder's logits (..., 784), under the model's likelihood."""
        return likelihood_mean(self.config.likelihood)(logits)

    def log_likelihood(self, logits: Tensor, x: Tensor, *, check: bool = True) -> Tensor:
        """log p_theta(x|z) under the model's likelihood: logits, x (..., 784) -> (...,) nats."""
        return log_likelihood(self.config.likelihood)(logits, x, check=check)


class VAE(_ImageModel):
    """Gaussian encoder q_phi(z|x), decoder p_theta(x|z) of config.likelihood, prior N(0, I)."""

    kind, title = "vae", "a VAE"

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__(config)
        config = self.config
        self.encoder = encoder_body(config)
        self.to_mu = nn.Linear(config.widths[-1], config.latent_dim)  # $\mu_\phi(x)$
        self.to_logvar = nn.Linear(config.widths[-1], config.latent_dim)  # $\log\sigma^2_\phi(x)$
        self.decoder = decoder(config)

    def encode(self, x: Tensor, *, check: bool = True) -> tuple[Tensor, Tensor]:
        """q_phi(z|x): x (B, 784) or (B, 1, 28, 28) in [0, 1] -> mu, logvar, each (B, D)."""
        h = self.encoder(self._images(x, check))  # (B, H)
        return self.to_mu(h), self.to_logvar(h)

    def forward(
        self, x: Tensor, *, check: bool = True, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One pass with z ~ q_phi(z|x): x -> logits (B, 784), mu, logvar, z, each (B, D)."""
        mu, logvar = self.encode(x, check=check)  # (B, D) each
        z = reparameterize(mu, logvar, generator)  # (B, D)
        return self.decode(z, check=False), mu, logvar, z  # z comes from checked x


class Autoencoder(_ImageModel):
    """Deterministic encoder z = e_phi(x) and decoder logits g_theta(z), no prior."""

    kind, title = "ae", "an autoencoder"
    misfit = "an autoencoder has no q(z|x) and no ELBO: use a VAE"

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__(config)
        config = self.config
        self.encoder = nn.Sequential(
            *encoder_body(config), nn.Linear(config.widths[-1], config.latent_dim)
        )  # $z = e_\phi(x)$
        self.decoder = decoder(config)

    def encode(self, x: Tensor, *, check: bool = True) -> Tensor:
        """z = e_phi(x): x (B, 784) or (B, 1, 28, 28) in [0, 1] -> z (B, D)."""
        return self.encoder(self._images(x, check))  # (B, D)

    def forward(self, x: Tensor, *, check: bool = True) -> Tensor:
        """Reconstruction logits g_theta(e_phi(x)): x -> (B, 784)."""
        return self.decode(self.encode(x, check=check), check=False)


class CVAE(VAE):
    """Conditional VAE (Sohn et al. 2015): q_phi(z|x,y), p_theta(x|z,y), p(z) = N(0, I)."""

    kind, title, conditional = "cvae", "a conditional VAE", True
    misfit = "a CVAE takes labels y, which this function does not: use an unconditional VAE"

    def __init__(self, config: ModelConfig | None = None) -> None:
        _ImageModel.__init__(self, config)
        config = self.config
        mlp = config.arch == "mlp"
        self.features = nn.Identity() if mlp else conv_features()  # x -> (B, 784 or 3136)
        width = PIXELS if mlp else 64 * 7 * 7
        # $h = \mathrm{relu}(W [x, e_y] + b)$, (B, H)
        self.encoder = nn.Sequential(nn.Linear(width + CLASSES, config.hidden_dim), nn.ReLU())
        hidden, latent = config.hidden_dim, config.latent_dim
        self.to_mu = nn.Linear(hidden, latent)  # $\mu_\phi(x, y)$
        self.to_logvar = nn.Linear(hidden, latent)  # $\log\sigma^2_\phi(x, y)$
        self.decoder = decoder(config, CLASSES)  # $\ell = g_\theta([z, e_y])$

    def _one_hot(self, y: object, n: int, check: bool) -> Tensor:
        """e_y: labels (n,) int64 -> one-hot rows (n, 10) in the model's dtype."""
        param = next(self.parameters())
        y = check_labels("y", y, n, param.device, check=check)
        return F.one_hot(y, CLASSES).to(param.dtype)  # $e_y$, (n, 10)

    def encode(
        self, x: Tensor, y: Tensor | None = None, *, check: bool = True
    ) -> tuple[Tensor, Tensor]:
        """q_phi(z|x,y): x (B, 784) in [0, 1], y (B,) int64 digits -> mu, logvar, each (B, D)."""
        x = self._images(x, check)  # (B, 784)
        h = self.encoder(torch.cat([self.features(x), self._one_hot(y, len(x), check)], 1))
        return self.to_mu(h), self.to_logvar(h)  # (B, D) each

    def decode(self, z: Tensor, y: Tensor | None = None, *, check: bool = True) -> Tensor:
        """Logits l = g_theta([z, e_y]): z (B, D), y (B,) int64 digits -> logits (B, 784)."""
        z = self._latents(z, check)  # (B, D)
        return self.decoder(torch.cat([z, self._one_hot(y, len(z), check).to(z.dtype)], 1))

    def forward(
        self,
        x: Tensor,
        y: Tensor | None = None,
        *,
        check: bool = True,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One pass with z ~ q_phi(z|x,y): x, y -> logits (B, 784), mu, logvar, z, each (B, D)."""
        mu, logvar = self.encode(x, y, check=check)  # (B, D) each
        z = reparameterize(mu, logvar, generator)  # (B, D)
        return self.decode(z, y, check=False), mu, logvar, z  # z, y come from checked inputs


MODELS = (VAE, Autoencoder, CVAE)  # one class per ModelConfig.kind


def build_model(config: ModelConfig) -> VAE | Autoencoder:
    """The model that config.kind names, with config.arch's layout."""
    if not isinstance(config, ModelConfig):
        raise ValueError(
            f"build_model: expected a ModelConfig, got {checks.describe(config)}; "
            "write build_model(ModelConfig(...))"
        )
    if config.kind == "hvae":  # issue 21: two stochastic layers
        return from_config(config)
    model = next(cls for cls in MODELS if cls.kind == config.kind)(config)
    return initialise_(model, config.init)  # "pytorch": as built


class NonFiniteWeights(ValueError):
    """A model with NaN or infinite weights: the run that made it diverged."""


def check_weights(fn: str, model: nn.Module) -> None:
    """Raise NonFiniteWeights unless every weight is finite; reads them back (a GPU sync)."""
    bad = {n: int((~torch.isfinite(p)).sum()) for n, p in model.state_dict().items()}
    bad = {name: count for name, count in bad.items() if count}
    if bad:
        raise NonFiniteWeights(
            f"{fn}: expected a model with finite weights, got {sum(bad.values())} NaN or infinite "
            f"values (in {', '.join(list(bad)[:3])}); the run that made it diverged: load an "
            "earlier checkpoint, or train again with a lower lr"
        )


def check_model(
    fn: str, model: object, *, vae: bool = True, weights: bool = True, serves: tuple = ()
) -> None:
    """ValueError unless model's class is one fn serves (`checks.model_kind`; default: VAE and
    CVAE, and Autoencoder if not vae), then unless its weights are finite (if weights)."""
    checks.model_kind(fn, model, serves or (VAE, CVAE) + (() if vae else (Autoencoder,)))
    if weights:
        check_weights(fn, model)
