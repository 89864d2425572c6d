"""The bounds of the numeric options, each with the reason a run cannot go past it.

`config` declares each option's range from these, and the command line states it in `--help`.
Sizes that only memory limits (k, B, n, the widths) are checked against the machine instead
(`resources.check_fits`), when the device is known.
"""

from __future__ import annotations

import math

import torch

# beta, kappa: the KL term of the loss is at most beta * D * max(kappa, KL_j) < 1e6 * 1e6 * D,
# far below float32's largest value, 3.4e38, for any D; beyond it the loss overflows to inf.
WEIGHT = 1e6
# lr: Adam moves each weight by about lr per step, whatever the gradient's scale; above 10, a step
# or two moves a log-variance past 88, where exp overflows float32, and every loss is inf.
LR = 10.0
# Adam's epsilon is added to sqrt(v) in float32: below float32's smallest normal number it
# rounds to 0 (or loses its precision), and a zero gradient divides 0 by 0; above 1e6 the step
# lr / eps is below float32's resolution of any weight near 1 and training stops.
ADAM_EPS = (torch.finfo(torch.float32).tiny, 1e6)
# seeds: torch's generators take a 64-bit seed; every seed derived from a run's seed
# (`distributed.rank_seed`, the resume reseed) is reduced below 2**64, and 2**32 - 1 keeps a seed
# a 32-bit number in numpy and other libraries too.
SEED = 2**32 - 1
# epochs, warm-up epochs: a run's seeds per epoch, seed * 1_000_003 + epoch (`rank_seed`), are
# distinct for epochs below 1_000_003; 1e6 passes over MNIST are years of training anyway.
EPOCHS = 10**6
MNIST_TRAIN, MNIST_TEST = (
    60_000,
    10_000,
)  # a batch, a subset or train_size beyond the set is refused
# A PNG grid: matplotlib's Agg canvas holds at most 2**16 pixels per side; at 100 dpi and 0.6 inch
# per digit, 1092 digits per row or column.
CANVAS = 2**16 - 1


def describe(low: float | None, high: float | None, open_low: bool = False) -> str:
    """An option's range for its help: '>= 1', '[0, 1e+06]', '(0, 10]'."""
    if high is None:
        return "any" if low is None else f"{'>' if open_low else '>='} {low:g}"
    return f"{'(' if open_low else '['}{-math.inf if low is None else low:g}, {high:g}]"
