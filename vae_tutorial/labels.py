"""Digit labels y in 0..9, the condition of a conditional VAE: their checks, and who takes them."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vae_tutorial import checks

CLASSES = 10  # digit labels y in 0..9, the condition of a CVAE


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


def label_args(
    fn: str, model: nn.Module, labels: object, n: int, fix: str = "", *, check: bool = True
) -> tuple[Tensor, ...]:
    """What encode, decode and forward take after x or z: (labels,) for a CVAE, () otherwise.

    Raises ValueError for a CVAE without labels (fix says what to do) or labels for any other
    model; check=False skips reading the label values back (their range).
    """
    conditional = getattr(model, "conditional", False)  # a CVAE
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
