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

## Layouts

- `arch="mlp"` (Kingma and Welling 2014): 784 -> H -> ($\mu$, $\log\sigma^2$ in $\mathbb R^D$)
  -> H -> 784 with ReLU; the default H = 400, D = 20.
- `arch="conv"`: 1x28x28 -> 32x14x14 -> 64x7x7 (two stride-2 convolutions) -> H -> D,
  and the mirror image with transposed convolutions.

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

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vae_tutorial import checks

IMAGE_SHAPE = (1, 28, 28)
PIXELS = 784
CLASSES = 10  # digit labels y in 0..9, the condition of a CVAE


@dataclass
class ModelConfig:
    """What fixes a model's layout; `build_model(config)` makes it."""

    kind: str = "vae"  # "vae": Gaussian q(z|x) and a sampled z; "ae": deterministic z = e(x);
    # "cvae": q(z|x,y) and p(x|z,y), conditioned on the digit label y
    arch: str = "mlp"  # "mlp": 784-H-D-H-784; "conv": stride-2 convs (32, 64 channels), mirrored
    latent_dim: int = 20  # D, the size of z
    hidden_dim: int = 400  # H, the width of the hidden layer on each side

    def __post_init__(self) -> None:
        checks.one_of("ModelConfig.kind", self.kind, ("vae", "ae", "cvae"))
        checks.one_of("ModelConfig.arch", self.arch, ("mlp", "conv"))
        checks.positive_int("ModelConfig.latent_dim", self.latent_dim)
        checks.positive_int("ModelConfig.hidden_dim", self.hidden_dim)


def reparameterize(mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One draw z ~ N(mu, exp(logvar)) as z = mu + sigma * eps: (B, D), (B, D) -> (B, D)."""
    checks.same_shape("reparameterize", ("mu", "logvar"), mu, logvar)
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps  # $z = \mu + e^{\frac12\log\sigma^2} \odot \epsilon$


def _check_dtype_device(name: str, t: Tensor, param: Tensor) -> None:
    """Raise ValueError unless t has the model's floating dtype (any, under autocast) and device."""
    autocast = torch.is_autocast_enabled(param.device.type)
    if not t.is_floating_point() or (t.dtype != param.dtype and not autocast):
        hint = "; convert uint8 images with x.float() / 255" if t.dtype == torch.uint8 else ""
        hint = hint or f"; convert with .to({param.dtype})"
        raise ValueError(f"{name}: expected dtype {param.dtype} (the model's), got {t.dtype}{hint}")
    if t.device != param.device:
        raise ValueError(
            f"{name}: expected a tensor on {param.device} (the model's), got {t.device}; "
            f"move it with .to({str(param.device)!r})"
        )


def _flat_images(x: Tensor, param: Tensor, check: bool) -> Tensor:
    """Validate a batch of images and flatten it: (B, 784) or (B, 1, 28, 28) -> (B, 784)."""
    checks.tensor("x", x, "of images (B, 784) or (B, 1, 28, 28)")
    flat = x.ndim == 2 and x.shape[1] == PIXELS
    if not (flat or (x.ndim == 4 and tuple(x.shape[1:]) == IMAGE_SHAPE)):
        raise ValueError(f"x: expected shape (B, 784) or (B, 1, 28, 28), got {tuple(x.shape)}")
    _check_dtype_device("x", x, param)
    if check:
        checks.unit_interval("x (pixel values)", x)
    return x.reshape(x.shape[0], PIXELS)  # (B, 784)


def _conv_features() -> nn.Sequential:
    """x (B, 784) -> features (B, 3136): two stride-2 convolutions."""
    return nn.Sequential(
        nn.Unflatten(1, IMAGE_SHAPE),  # (B, 1, 28, 28)
        nn.Conv2d(1, 32, 4, stride=2, padding=1),  # (B, 32, 14, 14)
        nn.ReLU(),
        nn.Conv2d(32, 64, 4, stride=2, padding=1),  # (B, 64, 7, 7)
        nn.ReLU(),
        nn.Flatten(),  # (B, 3136)
    )


def _encoder_body(config: ModelConfig) -> nn.Sequential:
    """x (B, 784) -> h (B, H)."""
    hidden = config.hidden_dim
    if config.arch == "mlp":
        return nn.Sequential(nn.Linear(PIXELS, hidden), nn.ReLU())  # (B, H)
    return nn.Sequential(*_conv_features(), nn.Linear(64 * 7 * 7, hidden), nn.ReLU())  # (B, H)


def _decoder(config: ModelConfig, conditions: int = 0) -> nn.Sequential:
    """[z, e_y] (B, D + conditions) -> logits (B, 784); conditions = 0: z alone."""
    latent, hidden = config.latent_dim + conditions, config.hidden_dim
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

    def _latents(self, z: Tensor, check: bool) -> Tensor:
        """Checked latent codes z (B, D)."""
        param = next(self.parameters())
        latent = self.config.latent_dim
        checks.tensor("z", z, f"(B, {latent})")
        if z.ndim != 2 or z.shape[1] != latent:
            raise ValueError(f"z: expected shape (B, {latent}), got {tuple(z.shape)}")
        _check_dtype_device("z", z, param)
        if check:
            checks.finite("z", z)
        return z

    def decode(self, z: Tensor, *, check: bool = True) -> Tensor:
        """Bernoulli logits l = g_theta(z): z (B, D) -> logits (B, 784); check: z finite."""
        return self.decoder(self._latents(z, check))  # (B, 784)

    def decode_probs(self, z: Tensor, *, check: bool = True) -> Tensor:
        """Pixel means sigmoid(g_theta(z)) in (0, 1): z (B, D) -> (B, 784)."""
        # $\mathrm{sigmoid}(\ell) = 1 / (1 + e^{-\ell})$
        return torch.sigmoid(self.decode(z, check=check))


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
        return self.decode(z, check=False), mu, logvar, z  # z comes from checked x


class Autoencoder(_ImageModel):
    """Deterministic encoder z = e_phi(x) and decoder logits g_theta(z), no prior."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        config = ModelConfig(kind="ae") if config is None else config
        super().__init__(config, "ae")
        self.encoder = nn.Sequential(
            *_encoder_body(config), nn.Linear(config.hidden_dim, config.latent_dim)
        )  # $z = e_\phi(x)$
        self.decoder = _decoder(config)

    def encode(self, x: Tensor, *, check: bool = True) -> Tensor:
        """z = e_phi(x): x (B, 784) or (B, 1, 28, 28) in [0, 1] -> z (B, D)."""
        return self.encoder(self._images(x, check))  # (B, D)

    def forward(self, x: Tensor, *, check: bool = True) -> Tensor:
        """Reconstruction logits g_theta(e_phi(x)): x -> (B, 784)."""
        return self.decode(self.encode(x, check=check), check=False)


def check_labels(
    name: str, y: object, n: int, device: torch.device, *, check: bool = True
) -> Tensor:
    """Digit labels y: an int64 tensor (n,) on device, values in 0..9 if check (a host sync)."""
    if y is None:
        raise ValueError(
            f"{name}: expected digit labels y (int64, ({n},), 0..9), got None; "
            "a CVAE is conditioned on the label: pass it, e.g. model(x, y)"
        )
    checks.tensor(name, y, f"of digit labels ({n},)")
    if y.dtype != torch.int64:
        raise ValueError(
            f"{name}: expected dtype torch.int64 (digit labels 0..9), got {y.dtype}; "
            "convert with y.long()"
        )
    if y.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},), one label each, got {tuple(y.shape)}")
    if y.device != device:
        raise ValueError(f"{name}: expected a tensor on {device}, got {y.device}; use .to()")
    if check and y.numel() and not bool(((y >= 0) & (y < CLASSES)).all()):
        raise ValueError(
            f"{name}: expected digit labels in 0..{CLASSES - 1}, got min {int(y.min())}, "
            f"max {int(y.max())}"
        )
    return y


class CVAE(VAE):
    """Conditional VAE (Sohn et al. 2015): q_phi(z|x,y), p_theta(x|z,y), p(z) = N(0, I)."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        config = ModelConfig(kind="cvae") if config is None else config
        _ImageModel.__init__(self, config, "cvae")
        mlp = config.arch == "mlp"
        self.features = nn.Identity() if mlp else _conv_features()  # x -> (B, 784 or 3136)
        width = PIXELS if mlp else 64 * 7 * 7
        # $h = \mathrm{relu}(W [x, e_y] + b)$, (B, H)
        self.encoder = nn.Sequential(nn.Linear(width + CLASSES, config.hidden_dim), nn.ReLU())
        hidden, latent = config.hidden_dim, config.latent_dim
        self.to_mu = nn.Linear(hidden, latent)  # $\mu_\phi(x, y)$
        self.to_logvar = nn.Linear(hidden, latent)  # $\log\sigma^2_\phi(x, y)$
        self.decoder = _decoder(config, CLASSES)  # $\ell = g_\theta([z, e_y])$

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

    def decode_probs(self, z: Tensor, y: Tensor | None = None, *, check: bool = True) -> Tensor:
        """Pixel means sigmoid(g_theta([z, e_y])) in (0, 1): z (B, D), y (B,) -> (B, 784)."""
        return torch.sigmoid(self.decode(z, y, check=check))

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


def label_args(
    fn: str, model: nn.Module, labels: object, n: int, fix: str = "", *, check: bool = True
) -> tuple[Tensor, ...]:
    """What encode, decode and forward take after x or z: (labels,) for a CVAE, () otherwise.

    Raises ValueError for a CVAE without labels (fix says what to do) or labels for any other
    model; check=False skips reading the label values back (their range).
    """
    conditional = isinstance(model, CVAE)
    if conditional and labels is None:
        fix = fix or "pass labels=, an int64 tensor of digits 0..9, one per image"
        raise ValueError(
            f"{fn}: expected digit labels for a conditional VAE (kind='cvae'), got none; {fix}"
        )
    if not conditional and labels is not None:
        raise ValueError(
            f"{fn}: expected no labels for a model of kind={model.config.kind!r}, which is not "
            f"conditioned on y, got {checks.describe(labels)}; drop them, or use a kind='cvae' "
            "model"
        )
    if not conditional:
        return ()
    device = next(model.parameters()).device
    return (check_labels(f"{fn}: labels", labels, n, device, check=check),)


def build_model(config: ModelConfig) -> VAE | Autoencoder:
    """The model that config.kind names, with config.arch's layout."""
    if not isinstance(config, ModelConfig):
        raise ValueError(
            f"build_model: expected a ModelConfig, got {checks.describe(config)}; "
            "write build_model(ModelConfig(...))"
        )
    return {"vae": VAE, "ae": Autoencoder, "cvae": CVAE}[config.kind](config)


def check_model(fn: str, model: object, *, vae: bool = True, weights: bool = True) -> None:
    """Raise ValueError unless model is a VAE (or an Autoencoder, if not vae) with finite weights.

    weights=False skips the weights check, which reads every parameter back (a GPU sync).
    """
    kinds = (VAE,) if vae else (VAE, Autoencoder)
    if not isinstance(model, kinds):
        if vae and isinstance(model, Autoencoder):
            raise ValueError(
                f"{fn}: expected a VAE (it needs q(z|x)), got Autoencoder; "
                "a plain autoencoder has no ELBO"
            )
        want = "a VAE" if vae else "a VAE or an Autoencoder"
        raise ValueError(f"{fn}: expected {want}, got {checks.describe(model)}")
    if not weights:
        return
    bad = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise ValueError(
            f"{fn}: expected a model with finite weights, got NaN or inf in {', '.join(bad[:3])}; "
            "its training diverged: retrain it (a lower lr) or load an earlier checkpoint"
        )
