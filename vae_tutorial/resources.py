"""Memory and disk: an estimate checked before the work, and one error when either runs out.

On Linux the kernel's OOM killer ends a process that over-allocates before Python can raise, so a
run that would allocate k x B x P values or n images compares an estimate with the machine's memory
first (`check_fits`): the device's free memory on CUDA, the total RAM elsewhere. What runs out
anyway (the estimate is a floor, and other processes share the machine) is reported as one of the
package's errors, `OutOfMemory` or `DiskFull`, whichever exception PyTorch, numpy or the OS raised
(`exhausted`). Files are written whole or not at all (`write_bytes`).
"""

from __future__ import annotations

import errno
import functools
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import torch

from vae_tutorial.config import ModelConfig

FLOAT32 = 4  # bytes per value
PIXELS = 784
P, T = ParamSpec("P"), TypeVar("T")


class ResourceExhausted(RuntimeError):
    """The machine ran out of memory or disk: exit status 1 at the command line."""


class OutOfMemory(ResourceExhausted):
    """Too little memory for the work, found by the estimate up front or by the allocator."""


class DiskFull(ResourceExhausted):
    """A write failed for want of space; the file it was replacing is kept."""


def size(n: float) -> str:
    """Bytes in binary units: 1536 -> '1.5 KiB'."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def available(device: str | torch.device) -> tuple[int | None, str]:
    """Bytes a run may use on device, and where: CUDA's free memory, else the total RAM (None
    where the OS does not say)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0], f"free on {device}"
    try:  # POSIX (Linux, macOS)
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "of RAM on this machine"
    except (AttributeError, ValueError, OSError):
        return None, "unknown"


def row_values(config: ModelConfig) -> int:
    """Values one image's pass holds besides its 784 logits: the hidden layers on both sides and
    mu, logvar, z (a floor: the layers' own temporaries are left out)."""
    convs = 32 * 14 * 14 + 64 * 7 * 7  # `networks.conv_features`, mirrored in the decoder
    hidden = convs if config.arch == "conv" else sum(config.widths) + sum(config.hidden2)
    return 2 * hidden + 3 * (config.latent_dim + config.latent_dim2)


def check_rows(
    what: str,
    rows: int,
    config: ModelConfig,
    device: str | torch.device,
    fix: str,
    *,
    copies: int = 1,
    extra: int = 0,
) -> None:
    """check_fits for `rows` images decoded at once, `copies` times (a training step keeps the
    values, their gradients and a temporary: 3), and `extra` bytes besides."""
    needed = FLOAT32 * copies * rows * (PIXELS + row_values(config)) + extra
    check_fits(f"{what}: {rows:,} images decoded at once", needed, device, fix)


def check_fits(what: str, needed: float, device: str | torch.device, fix: str) -> None:
    """OutOfMemory, naming the estimate and the fix, if `needed` bytes exceed what device has."""
    have, where = available(device)
    if have is not None and needed > have:
        raise OutOfMemory(
            f"{what}: needs about {size(needed)} of memory, more than the {size(have)} {where}; "
            f"{fix}"
        )


_OOM = re.compile(r"out of memory|can't allocate|cannot allocate", re.IGNORECASE)
_ASKED = re.compile(r"allocate (\d+) bytes|allocate ([\d.]+ [KMGT]iB)")
# torch.save's zip writer on a full disk: "[enforce fail at inline_container.cc:...] unexpected
# pos ..." or "PytorchStreamWriter failed writing file ...: file write failed"
_FULL = re.compile(r"unexpected pos|file write failed")


def exhausted(error: BaseException, what: str) -> ResourceExhausted | None:
    """The package's error for an exception that says memory or disk ran out; None for others."""
    text = " ".join(str(error).split())
    oom = isinstance(error, (MemoryError, torch.OutOfMemoryError))
    if oom or (isinstance(error, RuntimeError) and _OOM.search(text)):
        asked = _ASKED.search(text)
        need = "" if asked is None else f" ({size(int(asked[1])) if asked[1] else asked[2]} asked)"
        return OutOfMemory(
            f"{what}: out of memory{need}; use a smaller batch (--batch-size), fewer samples "
            "(--k, --n, --iwae-k), or a machine with more memory"
        )
    full = isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
    if full or (isinstance(error, RuntimeError) and _FULL.search(text)):
        return DiskFull(
            f"{what}: the disk is full; free some space there, or write elsewhere (--out); "
            "a file it was replacing is kept whole"
        )
    return None


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write data to path through a temporary file and a rename: the old file or the new, whole.

    A full disk raises DiskFull and leaves no temporary file behind.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise exhausted(error, f"writing {path}") or error from error


def reported(fn: Callable[P, T]) -> Callable[P, T]:
    """fn, raising OutOfMemory or DiskFull (named after fn) where the machine ran out."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except (MemoryError, RuntimeError, OSError) as error:
            mapped = None if isinstance(error, ResourceExhausted) else exhausted(error, fn.__name__)
            if mapped is None:
                raise
            raise mapped from error

    return wrapper
