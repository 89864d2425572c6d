"""Input checks shared by the package: each raises ValueError naming the argument, what was
expected, what came, and how to fix it, in the form `name: expected ..., got ...; fix`.

Scalar checks return the value (as a plain Python number) so a caller can write
`n = checks.positive_int("n", n)`. Tensor value checks (finite, in a range, binary) read the data
back, which on a GPU is a host sync: call them once at a boundary, never per training step.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor


def _fail(name: str, expected: str, got: str, fix: str = "") -> ValueError:
    """The one message format: `name: expected ..., got ...; fix`."""
    return ValueError(f"{name}: expected {expected}, got {got}" + (f"; {fix}" if fix else ""))


def describe(value: object) -> str:
    """A short description of what came: `True (a bool)`, `2.5 (a float)`, `a tensor (3, 4)`."""
    if isinstance(value, Tensor) or (hasattr(value, "shape") and hasattr(value, "dtype")):
        kind = "tensor" if isinstance(value, Tensor) else type(value).__name__
        return f"a {kind} of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = " ".join(repr(value).split())
    text = text if len(text) <= 40 else text[:36] + " ..."
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return text
    return f"{text} (a {type(value).__name__})"


def int_at_least(name: str, value: object, low: int, fix: str = "") -> int:
    """An int >= low; bool (True is not a count), floats and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        fix = fix or f"pass a whole number >= {low}"
        raise _fail(name, f"an int >= {low}", describe(value), fix)
    return int(value)


def positive_int(name: str, value: object, fix: str = "") -> int:
    """An int >= 1 (a size, a count, a number of samples)."""
    return int_at_least(name, value, 1, fix)


def real(
    name: str,
    value: object,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    open_low: bool = False,
    open_high: bool = False,
    fix: str = "",
) -> float:
    """A finite real number in [low, high]; a bound is excluded where open_low / open_high."""
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    above = number and (value > low or (not open_low and value == low))
    below = number and (value < high or (not open_high and value == high))
    if not (number and math.isfinite(value) and above and below):
        left = "(" if open_low or math.isinf(low) else "["
        right = ")" if open_high or math.isinf(high) else "]"
        interval = f"{left}{low:g}, {high:g}{right}"
        raise _fail(name, f"a finite number in {interval}", describe(value), fix)
    return float(value)


def flag(name: str, value: object) -> bool:
    """True or False, nothing else (not 0, 1 or 'yes')."""
    if not isinstance(value, bool):
        raise _fail(name, "True or False", describe(value))
    return value


def one_of(name: str, value: object, choices: Sequence[object], fix: str = "") -> None:
    """value is one of the choices."""
    if value not in choices:
        raise _fail(name, f"one of {tuple(choices)}", repr(value), fix)


def tensor(name: str, value: object, shape: str = "") -> Tensor:
    """A torch.Tensor; shape, if given, names the expected layout in the message, e.g. '(B, D)'."""
    if not isinstance(value, Tensor):
        what = f"a torch.Tensor {shape}".rstrip()
        raise _fail(name, what, describe(value), "convert it with torch.as_tensor")
    return value


def floating(name: str, t: Tensor) -> None:
    """t has a floating-point dtype."""
    if not t.is_floating_point():
        hint = "convert uint8 images with x.float() / 255" if t.dtype == torch.uint8 else ""
        raise _fail(name, "a floating-point tensor", f"dtype {t.dtype}", hint or "call .float()")


def same_shape(fn: str, names: tuple[str, str], a: Tensor, b: Tensor) -> None:
    """a and b are floating tensors of one shape (..., N) with at least one axis."""
    tensor(f"{fn}: {names[0]}", a)
    tensor(f"{fn}: {names[1]}", b)
    if a.ndim < 1 or a.shape != b.shape:
        raise _fail(
            fn,
            f"{names[0]} and {names[1]} of the same shape (..., N)",
            f"{tuple(a.shape)} and {tuple(b.shape)}",
        )
    for name, t in zip(names, (a, b), strict=True):
        floating(f"{fn}: {name}", t)


def finite(name: str, t: Tensor, fix: str = "") -> None:
    """Every entry of t is finite (no NaN, no +-inf). Reads t back: a host sync on a GPU."""
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        first = t[bad][0].item()
        fix = fix or "look for a diverged model, a division by zero or a log of 0 upstream"
        raise _fail(name, "finite values", f"{int(bad.sum())} non-finite (first: {first})", fix)


def finite_inputs(fn: str, **tensors: Tensor) -> None:
    """Raise ValueError naming fn and the argument if any tensor holds NaN or +-inf."""
    for name, t in tensors.items():
        finite(f"{fn}: {name}", t, "pass check=False only for inputs known to be finite")


def in_range(name: str, t: Tensor, low: float, high: float, fix: str = "") -> None:
    """Every entry of t is finite and in [low, high]. Reads t back: a host sync on a GPU."""
    finite(name, t, fix)
    if t.numel() and not bool(((t >= low) & (t <= high)).all()):
        lo, hi = torch.aminmax(t.detach().float())
        got = f"min {lo.item():.4g}, max {hi.item():.4g}"
        raise _fail(name, f"values in [{low:g}, {high:g}]", got, fix)


def unit_interval(name: str, t: Tensor, fix: str = "") -> None:
    """Every entry of t is a probability or a pixel intensity in [0, 1]."""
    in_range(name, t, 0.0, 1.0, fix or "scale uint8 images with x.float() / 255")


def binary(name: str, t: Tensor, fix: str = "") -> None:
    """Every entry of t is exactly 0 or 1. Reads t back: a host sync on a GPU."""
    bad = (t != 0) & (t != 1)
    if bool(bad.any()):
        got = f"{int(bad.sum())} other value(s) (first: {t[bad][0].item():.4g})"
        raise _fail(name, "binary values in {0, 1}", got, fix)


def symmetric_positive_definite(name: str, m: Tensor) -> Tensor:
    """m (..., n, n) is symmetric (to 100 ulps of its largest entry) and positive definite.

    Returns the Cholesky factor L (m = L L^T), which the caller can reuse for log det m.
    """
    scale = m.abs().amax() if m.numel() else m.new_zeros(())
    tol = 100 * torch.finfo(m.dtype).eps * scale
    asym = (m - m.mT).abs().amax() if m.numel() else m.new_zeros(())
    if bool(asym > tol):
        got = f"a matrix with |m - m^T| up to {asym.item():.3g}"
        raise _fail(name, "a symmetric matrix", got, "symmetrise it with (m + m.mT) / 2")
    chol, info = torch.linalg.cholesky_ex(m)
    if bool((info != 0).any()):
        fix = "a covariance must have positive eigenvalues; add a small multiple of the identity"
        raise _fail(name, "a positive definite matrix", "one that is not (Cholesky failed)", fix)
    return chol


def model_kind(fn: str, model: object, serves: Sequence[type], fix: str = "") -> type:
    """The class of `serves` that model is an instance of, by kind (a CVAE is not served where a
    VAE is); else ValueError naming what fn serves and, from the class, what to do instead.

    Reads the class (its `kind`, `title` and `misfit`), not the weights or the config, so a model
    is refused before any work: e.g. a CVAE where no labels can be passed.
    """
    kind = getattr(type(model), "kind", None)
    match = [c for c in serves if c.kind == kind and isinstance(model, torch.nn.Module)]
    if match:
        return match[0]
    expected = " or ".join(f"{c.title} (kind {c.kind!r})" for c in serves)
    make = f"build one with build_model(ModelConfig(kind={serves[0].kind!r}))"
    if hasattr(type(model), "title") and isinstance(model, torch.nn.Module):
        got, fix = f"{model.title} (kind {kind!r})", fix or model.misfit or f"pass {expected}"
    else:
        got, fix = describe(model), fix or make
    raise _fail(fn, expected, got, fix)
