"""Where and how the numbers run: the device, bf16 autocast, torch.compile and the progress bar."""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def pick_device(preference: str | torch.device | None = None) -> torch.device:
    """CUDA if available, then Apple MPS, then CPU; or `preference` ("cpu", "cuda:1", ...).

    A device that is not there raises ValueError naming what is, not the driver's error.
    """
    if preference is None or preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(preference)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {preference!r}"
        ) from None
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    present = {"cpu": True, "cuda": count > 0, "mps": torch.backends.mps.is_available()}
    there = present.get(device.type, False)
    if device.type == "cuda" and device.index is not None:
        there = device.index < count
    if not there:
        usable = ", ".join(name for name, ok in present.items() if ok)
        missing = {
            "cuda": f"this machine has {count} CUDA GPU(s)"
            if count
            else "this machine has no CUDA GPU",
            "mps": "this machine has no Apple MPS device",
        }.get(device.type, f"{device.type} is not supported here")
        raise ValueError(
            f"device: expected an available device ({usable}), got {preference!r}; {missing}: "
            "pass 'auto' (the best available) or 'cpu'"
        )
    return device


def autocast(device: torch.device, bf16: bool) -> torch.autocast:
    """A reusable bf16 autocast context, disabled (with a warning) where the device lacks it."""
    if bf16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        warnings.warn(f"bf16 is not supported on {device}; training in float32", stacklevel=3)
        bf16 = False
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def compiled(model: nn.Module, device: torch.device) -> Callable[..., Any]:
    """torch.compile(model) if a probe compiles on this device; else the model, with a warning."""
    try:
        torch.compile(torch.sin)(torch.zeros(2, device=device))  # needs the compiler toolchain
    except Exception as error:  # no C compiler, no Triton, an unsupported platform, ...
        reason = " ".join(str(error).split())[:200]
        warnings.warn(
            f"torch.compile is unavailable on {device} ({reason}); running eager", stacklevel=3
        )
        return model
    # static shapes: the last, smaller batch gets its own graph; a symbolic batch size breaks
    # torch.randn(shape, generator=...) in the reparameterization
    return torch.compile(model, dynamic=False)


def _in_jupyter() -> bool:
    """True inside a Jupyter kernel (where tqdm.auto draws a widget)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in shell.config


def progress_bar(epochs: range, total: int, progress: bool | None) -> Any:
    """A tqdm bar over epochs; where output is captured (no TTY, no Jupyter), one line in all."""
    if progress is False:
        return epochs
    from tqdm.auto import tqdm  # imported here: tqdm.auto inspects the notebook on import

    live = _in_jupyter() or sys.stderr.isatty()
    return tqdm(
        epochs,
        total=total,
        initial=epochs.start,
        unit="epoch",
        desc="fit",
        # captured: only the first and the final state
        mininterval=0.1 if live else math.inf,
        dynamic_ncols=live,
    )
