"""The layers of the models: encoder bodies and decoders for each `arch`, and the input checks.

`arch="mlp"` (the PyTorch VAE example's layout; Kingma and Welling 2014 used tanh):
784 -> H -> D -> H -> 784 with ReLU. `arch="conv"`: 1x28x28 -> 32x14x14 -> 64x7x7 (two stride-2
convolutions) -> H -> D, and the mirror image with transposed convolutions. The decoders return
logits; the model's likelihood reads them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vae_tutorial import checks, layers
from vae_tutorial.config import ModelConfig

IMAGE_SHAPE = (1, 28, 28)
PIXELS = 784


def check_dtype_device(name: str, t: Tensor, param: Tensor) -> None:
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


def flat_images(x: Tensor, param: Tensor, check: bool) -> Tensor:
    """Validate a batch of images and flatten it: (B, 784) or (B, 1, 28, 28) -> (B, 784)."""
    checks.tensor("x", x, "of images (B, 784) or (B, 1, 28, 28)")
    flat = x.ndim == 2 and x.shape[1] == PIXELS
    if not (flat or (x.ndim == 4 and tuple(x.shape[1:]) == IMAGE_SHAPE)):
        raise ValueError(f"x: expected shape (B, 784) or (B, 1, 28, 28), got {tuple(x.shape)}")
    check_dtype_device("x", x, param)
    if check:
        checks.unit_interval("x (pixel values)", x)
    return x.reshape(x.shape[0], PIXELS)  # (B, 784)


def conv_features() -> nn.Sequential:
    """x (B, 784) -> features (B, 3136): two stride-2 convolutions."""
    return nn.Sequential(
        nn.Unflatten(1, IMAGE_SHAPE),  # (B, 1, 28, 28)
        nn.Conv2d(1, 32, 4, stride=2, padding=1),  # (B, 32, 14, 14)
        nn.ReLU(),
        nn.Conv2d(32, 64, 4, stride=2, padding=1),  # (B, 64, 7, 7)
        nn.ReLU(),
        nn.Flatten(),  # (B, 3136)
    )


def encoder_body(config: ModelConfig) -> nn.Sequential:
    """x (B, 784) -> h (B, H)."""
    hidden = config.hidden_dim
    if config.arch == "mlp":  # (B, H_L): config.widths, each Linear then the activation
        return layers.hidden_layers(PIXELS, config.widths, config.activation)
    return nn.Sequential(*conv_features(), nn.Linear(64 * 7 * 7, hidden), nn.ReLU())  # (B, H)


def decoder(config: ModelConfig, conditions: int = 0) -> nn.Sequential:
    """[z, e_y] (B, D + conditions) -> logits (B, 784); conditions = 0: z alone."""
    latent, hidden = config.latent_dim + conditions, config.hidden_dim
    if config.arch == "mlp":  # the encoder's widths reversed, then the logits (B, 784)
        return layers.mlp(latent, config.widths[::-1], PIXELS, config.activation)
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
