r"""Layers: MLPs from a tuple of hidden sizes, a Gaussian layer, and their initialisations.

## MLPs

`hidden_layers(n_in, (H_1, ..., H_L), activation)` is $L$ affine maps, each followed by the
activation: $h_l = a(W_l h_{l-1} + b_l)$. `mlp(n_in, hidden, n_out)` adds a last affine map with
no activation after it (its outputs are logits, means or log-variances, any real number).
Burda, Grosse and Salakhutdinov (2016) use two tanh layers of 200 on each side: `hidden=(200, 200)`,
`activation="tanh"`.

## Initialisations

- `"pytorch"`: `nn.Linear`'s own,
  $W_{ij}, b_i \sim U(-1/\sqrt{n_\mathrm{in}}, 1/\sqrt{n_\mathrm{in}})$.
- `"glorot_uniform"` (Glorot and Bengio 2010): $W_{ij} \sim U(-a, a)$,
  $a = \sqrt{6 / (n_\mathrm{in} + n_\mathrm{out})}$, so $\mathrm{Var}(W_{ij}) = a^2/3 =
  2 / (n_\mathrm{in} + n_\mathrm{out})$; biases 0. Burda et al. initialise so.

## The decoder's output bias from the training mean

With the output bias $b_i = \mathrm{logit}(\bar x_i) = \log\frac{\bar x_i}{1 - \bar x_i}$, $\bar x$
the mean training image, a decoder whose last weights are small starts near
$\mathrm{sigmoid}(\ell_i) = \bar x_i$, the best pixel-wise constant model, not 1/2 everywhere.
Pixels that are 0 in every training image (MNIST's border) have $\bar x_i = 0$ and an infinite
logit, so $\bar x$ is clamped to $[\varepsilon, 1 - \varepsilon]$ with $\varepsilon = 10^{-4}$:
$b_i \ge \mathrm{logit}(10^{-4}) \approx -9.21$, which costs such a pixel at most
$-\log(1 - 10^{-4}) \approx 10^{-4}$ nats per image at the start (under 0.08 nats for all 784).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vae_tutorial import checks

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}
INITS = ("pytorch", "glorot_uniform")
MEAN_CLAMP = 1e-4  # epsilon: the mean pixel is clamped to [eps, 1 - eps] before its logit


def hidden_sizes(name: str, hidden: object) -> tuple[int, ...]:
    """A tuple (or list) of positive ints, possibly empty."""
    if not isinstance(hidden, (tuple, list)):
        raise ValueError(
            f"{name}: expected a tuple of hidden sizes, e.g. (200, 200), got "
            f"{checks.describe(hidden)}; write (400,) for one layer of 400, () for none"
        )
    return tuple(checks.positive_int(f"{name}[{i}]", h) for i, h in enumerate(hidden))


def glorot_uniform_(layer: nn.Linear) -> None:
    """W ~ U(-a, a), a = sqrt(6 / (fan_in + fan_out)); b = 0 (Glorot and Bengio 2010)."""
    fan_out, fan_in = layer.weight.shape
    a = math.sqrt(6 / (fan_in + fan_out))  # $a = \sqrt{6 / (n_\mathrm{in} + n_\mathrm{out})}$
    with torch.no_grad():
        layer.weight.uniform_(-a, a)
        if layer.bias is not None:
            layer.bias.zero_()


def initialise_(module: nn.Module, init: str) -> nn.Module:
    """Initialise every nn.Linear in module as init names ("pytorch": left as built); returns it."""
    checks.one_of("init", init, INITS)
    if init == "glorot_uniform":
        for layer in module.modules():
            if isinstance(layer, nn.Linear):
                glorot_uniform_(layer)
    return module


def hidden_layers(
    n_in: int, hidden: Sequence[int], activation: str = "relu", init: str = "pytorch"
) -> nn.Sequential:
    """(B, n_in) -> (B, H_L): Linear then activation for each size in hidden (empty: identity)."""
    n_in = checks.positive_int("n_in", n_in)
    hidden = hidden_sizes("hidden", hidden)
    checks.one_of("activation", activation, tuple(ACTIVATIONS))
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(n_in, width), ACTIVATIONS[activation]()]  # $h = a(W h + b)$
        n_in = width
    return initialise_(nn.Sequential(*layers), init)


def mlp(
    n_in: int,
    hidden: Sequence[int],
    n_out: int,
    activation: str = "relu",
    init: str = "pytorch",
) -> nn.Sequential:
    """(B, n_in) -> (B, n_out): hidden_layers, then a Linear with no activation after it."""
    body = hidden_layers(n_in, hidden, activation, init)
    width = hidden[-1] if len(hidden) else n_in
    last = initialise_(nn.Linear(width, checks.positive_int("n_out", n_out)), init)
    return nn.Sequential(*body, last)  # no activation after the last layer


class GaussianLayer(nn.Module):
    """A diagonal Gaussian's parameters from an MLP: h (..., n_in) -> mu, logvar (..., D)."""

    def __init__(
        self,
        n_in: int,
        hidden: Sequence[int],
        latent_dim: int,
        activation: str = "relu",
        init: str = "pytorch",
    ) -> None:
        super().__init__()
        self.body = hidden_layers(n_in, hidden, activation, init)
        width = hidden[-1] if len(hidden) else n_in
        latent_dim = checks.positive_int("latent_dim", latent_dim)
        self.to_mu = initialise_(nn.Linear(width, latent_dim), init)  # $\mu$
        self.to_logvar = initialise_(nn.Linear(width, latent_dim), init)  # $\log\sigma^2$

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """mu, logvar (..., D) of N(mu, diag exp(logvar)) given h (..., n_in)."""
        features = self.body(h)  # (..., H_L)
        return self.to_mu(features), self.to_logvar(features)


def init_output_bias_(layer: nn.Linear, mean_image: Tensor, clamp: float = MEAN_CLAMP) -> None:
    """Set the decoder's output bias to logit(mean pixel), the mean clamped to [eps, 1 - eps].

    layer: the decoder's last nn.Linear (784 outputs); mean_image: the mean training image (784,)
    or (1, 28, 28), values in [0, 1].
    """
    if not isinstance(layer, nn.Linear) or layer.bias is None:
        raise ValueError(
            f"init_output_bias_: expected the decoder's last nn.Linear with a bias, got "
            f"{checks.describe(layer)}"
        )
    checks.tensor("init_output_bias_: mean_image", mean_image, f"({layer.out_features},)")
    checks.floating("init_output_bias_: mean_image", mean_image)
    if mean_image.numel() != layer.out_features:
        raise ValueError(
            f"init_output_bias_: expected a mean image of {layer.out_features} pixels (the "
            f"layer's outputs), got shape {tuple(mean_image.shape)}; pass images.mean(0)"
        )
    checks.unit_interval("init_output_bias_: mean_image", mean_image)
    clamp = checks.real("clamp", clamp, low=0.0, high=0.5, open_low=True, open_high=True)
    # $\bar x_i \in [\varepsilon, 1 - \varepsilon]$
    mean = mean_image.detach().reshape(-1).clamp(clamp, 1 - clamp)
    with torch.no_grad():
        layer.bias.copy_(torch.logit(mean))  # $b_i = \log\frac{\bar x_i}{1 - \bar x_i}$
