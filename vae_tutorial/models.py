r"""Models: a plain autoencoder and a variational autoencoder (VAE) for 28 x 28 images.

## The generative model

A VAE describes an image $x \in \{0, 1\}^{784}$ through a latent code $z \in \mathbb R^D$:

$$p_\theta(x, z) = p_\theta(x \mid z)\, p(z), \qquad p(z) = \mathcal N(0, I),$$

$$p_\theta(x \mid z) = \prod_{i=1}^{784} \mathrm{Bernoulli}\big(x_i;\, \sigma(\ell_i)\big),
\qquad \ell = f_\theta(z).$$

The decoder $f_\theta$ returns the logits $\ell$, never probabilities: the log-likelihood is then
computed from logits, which is exact where $\sigma(\ell)$ would round to 0 or 1.

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

$$\nabla_\phi\, \mathbb E_{q_\phi(z \mid x)}[g(z)] = \mathbb E_{\epsilon}\big[\nabla_\phi\,
g(\mu_\phi(x) + \sigma_\phi(x) \odot \epsilon)\big].$$

## The plain autoencoder

The autoencoder has the same layout with a deterministic code $z = g_\phi(x)$. Nothing ties its
codes to $p(z)$, so decoding draws from $\mathcal N(0, I)$ need not give digits.

## Layouts

- `arch="mlp"` (Kingma and Welling 2014): 784 -> H -> ($\mu$, $\log\sigma^2$ in $\mathbb R^D$)
  -> H -> 784 with ReLU; the default H = 400, D = 20.
- `arch="conv"`: 1x28x28 -> 32x14x14 -> 64x7x7 (two stride-2 convolutions) -> H -> D,
  and the mirror image with transposed convolutions.

Inputs are checked at the boundary: shape (B, 784) or (B, 1, 28, 28), the model's dtype and device,
values in [0, 1]. The value check reads the data back (a GPU sync), so `check=False` skips it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

IMAGE_SHAPE = (1, 28, 28)
PIXELS = 784


@dataclass
class ModelConfig:
    """What fixes a model's layout; `build_model(config)` makes it."""

    kind: str = "vae"  # "vae": Gaussian q(z|x) and a sampled z; "ae": deterministic z = g(x)
    arch: str = "mlp"  # "mlp": 784-H-D-H-784; "conv": stride-2 convs (32, 64 channels), mirrored
    latent_dim: int = 20  # D, the size of z
    hidden_dim: int = 400  # H, the width of the hidden layer on each side

    def __post_init__(self) -> None:
        if self.kind not in ("vae", "ae"):
            raise ValueError(f"ModelConfig.kind: expected 'vae' or 'ae', got {self.kind!r}")
        if self.arch not in ("mlp", "conv"):
            raise ValueError(f"ModelConfig.arch: expected 'mlp' or 'conv', got {self.arch!r}")
        for name in ("latent_dim", "hidden_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ModelConfig.{name}: expected a positive int, got {value!r}")


def reparameterize(mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One draw z ~ N(mu, exp(logvar)) as z = mu + sigma * eps: (B, D), (B, D) -> (B, D)."""
    if mu.shape != logvar.shape:
        raise ValueError(
            "reparameterize: expected mu and logvar of the same shape, "
            f"got {tuple(mu.shape)} and {tuple(logvar.shape)}"
        )
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps  # $z = \mu + e^{\frac12\log\sigma^2} \odot \epsilon$


def _check_dtype_device(name: str, t: Tensor, param: Tensor) -> None:
    """Raise ValueError unless t has the model's floating dtype (any, under autocast) and device."""
    autocast = torch.is_autocast_enabled(param.device.type)
    if not t.is_floating_point() or (t.dtype != param.dtype and not autocast):
        hint = " (convert uint8 images with x.float() / 255)" if t.dtype == torch.uint8 else ""
        raise ValueError(f"{name}: expected dtype {param.dtype} (the model's), got {t.dtype}{hint}")
    if t.device != param.device:
        raise ValueError(
            f"{name}: expected a tensor on {param.device} (the model's), got {t.device}"
        )


def _flat_images(x: Tensor, param: Tensor, check: bool) -> Tensor:
    """Validate a batch of images and flatten it: (B, 784) or (B, 1, 28, 28) -> (B, 784)."""
    if not isinstance(x, Tensor):
        raise ValueError(f"x: expected a torch.Tensor of images, got {type(x).__name__}")
    flat = x.ndim == 2 and x.shape[1] == PIXELS
    if not (flat or (x.ndim == 4 and tuple(x.shape[1:]) == IMAGE_SHAPE)):
        raise ValueError(f"x: expected shape (B, 784) or (B, 1, 28, 28), got {tuple(x.shape)}")
    _check_dtype_device("x", x, param)
    if check and x.numel() > 0 and not bool(((x >= 0) & (x <= 1)).all()):
        lo, hi = torch.aminmax(x)
        raise ValueError(
            f"x: expected pixel values in [0, 1], got min {lo.item():.4g}, max {hi.item():.4g}"
        )
    return x.reshape(x.shape[0], PIXELS)  # (B, 784)


def _encoder_body(config: ModelConfig) -> nn.Sequential:
    """x (B, 784) -> h (B, H)."""
    hidden = config.hidden_dim
    if config.arch == "mlp":
        return nn.Sequential(nn.Linear(PIXELS, hidden), nn.ReLU())  # (B, H)
    return nn.Sequential(
        nn.Unflatten(1, IMAGE_SHAPE),  # (B, 1, 28, 28)
        nn.Conv2d(1, 32, 4, stride=2, padding=1),  # (B, 32, 14, 14)
        nn.ReLU(),
        nn.Conv2d(32, 64, 4, stride=2, padding=1),  # (B, 64, 7, 7)
        nn.ReLU(),
        nn.Flatten(),  # (B, 3136)
        nn.Linear(64 * 7 * 7, hidden),  # (B, H)
        nn.ReLU(),
    )


def _decoder(config: ModelConfig) -> nn.Sequential:
    """z (B, D) -> logits (B, 784)."""
    latent, hidden = config.latent_dim, config.hidden_dim
    if config.arch == "mlp":
        return nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, PIXELS))
    return nn.Sequential(
        nn.Linear(latent, hidden),  # (B, H)
        nn.ReLU(),
        nn.Linear(hidden, 64 * 7 * 7),  # (B, 3136)
        nn.ReLU(),
        nn.Unflatten(1, (64, 7, 7)),  # (B, 64, 7, 7)
        nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),  # (B, 32, 14, 14)
        nn.ReLU(),
        nn.ConvTranspose2d(32, 1, 4, stride=2, padding=1),  # (B, 1, 28, 28)
        nn.Flatten(),  # (B, 784)
    )


class _ImageModel(nn.Module):
    """What the VAE and the autoencoder share: the config, decoding and the input checks."""

    def __init__(self, config: ModelConfig, kind: str) -> None:
        super().__init__()
        if config.kind != kind:
            raise ValueError(
                f"{type(self).__name__}: expected a ModelConfig with kind={kind!r}, "
                f"got kind={config.kind!r} (build_model picks the class from the config)"
            )
        self.config = config

    def _images(self, x: Tensor, check: bool) -> Tensor:
        """Checked, flattened images (B, 784)."""
        return _flat_images(x, next(self.parameters()), check)

    def decode(self, z: Tensor) -> Tensor:
        """Bernoulli logits l = f_theta(z): z (B, D) -> logits (B, 784)."""
        param = next(self.parameters())
        if not isinstance(z, Tensor) or z.ndim != 2 or z.shape[1] != self.config.latent_dim:
            got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"z: expected shape (B, {self.config.latent_dim}), got {got}")
        _check_dtype_device("z", z, param)
        return self.decoder(z)  # (B, 784)

    def decode_probs(self, z: Tensor) -> Tensor:
        """Pixel means sigmoid(f_theta(z)) in (0, 1): z (B, D) -> (B, 784)."""
        return torch.sigmoid(self.decode(z))  # $\sigma(\ell) = 1 / (1 + e^{-\ell})$


class VAE(_ImageModel):
    """Gaussian encoder q_phi(z|x), Bernoulli decoder p_theta(x|z), prior N(0, I)."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        config = ModelConfig() if config is None else config
        super().__init__(config, "vae")
        self.encoder = _encoder_body(config)
        self.to_mu = nn.Linear(config.hidden_dim, config.latent_dim)  # $\mu_\phi(x)$
        self.to_logvar = nn.Linear(config.hidden_dim, config.latent_dim)  # $\log\sigma^2_\phi(x)$
        self.decoder = _decoder(config)

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
        return self.decode(z), mu, logvar, z


class Autoencoder(_ImageModel):
    """Deterministic encoder z = g_phi(x) and decoder logits f_theta(z), no prior."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        config = ModelConfig(kind="ae") if config is None else config
        super().__init__(config, "ae")
        self.encoder = nn.Sequential(
            *_encoder_body(config), nn.Linear(config.hidden_dim, config.latent_dim)
        )  # $z = g_\phi(x)$
        self.decoder = _decoder(config)

    def encode(self, x: Tensor, *, check: bool = True) -> Tensor:
        """z = g_phi(x): x (B, 784) or (B, 1, 28, 28) in [0, 1] -> z (B, D)."""
        return self.encoder(self._images(x, check))  # (B, D)

    def forward(self, x: Tensor, *, check: bool = True) -> Tensor:
        """Reconstruction logits f_theta(g_phi(x)): x -> (B, 784)."""
        return self.decode(self.encode(x, check=check))


def build_model(config: ModelConfig) -> VAE | Autoencoder:
    """The model that config.kind names, with config.arch's layout."""
    return VAE(config) if config.kind == "vae" else Autoencoder(config)
