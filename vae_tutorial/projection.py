"""Where a run's validation curve leads: the power law s(t) = a + b t^(-c), fitted on many windows.

A curve that still falls does not identify its asymptote: fits on later or earlier stretches of
the same curve agree on the data and disagree on the limit. So `projection` reports ranges, not a
number: every window that starts at a curve point from epoch `skip` on (after any warm-up) and
keeps at least `MIN_POINTS` points is fitted, the fits whose residual is at most `RMS_FACTOR`
times the best are kept, and the min and max of their values at t = `at` and of their asymptotes
are returned, both as projected test -log p(x) (the validation score plus the offset measured at
the selected epoch). A kept fit at the grid's smallest exponent has no limit the curve identifies:
its asymptote is -inf where the window falls (so the verdict cannot be "never"), inf where it rises.
"""

from __future__ import annotations

import math
import statistics

import numpy as np

from vae_tutorial.results import Result

BURDA_PASSES = 3280  # Burda et al. 2016: eight stages of 3^i passes, i = 0..7
MIN_POINTS = 6  # the fewest curve points a window keeps
RMS_FACTOR = 2.0  # fits kept: residual at most this times the best window's
RMS_FLOOR = 1e-6  # nats: residuals below this count as equal (float32 scores are not finer)
EXPONENTS = np.arange(0.01, 2.0, 0.001)  # the grid searched for c


def power_law_fit(t: np.ndarray, s: np.ndarray) -> tuple[float, float, float, float]:
    """The least-squares fit s ≈ a + b t^(-c): (a, b, c, rms), c on a grid, a and b exact."""
    u = t[None, :] ** -EXPONENTS[:, None]  # (C, T): t^(-c) for each c
    n, su, ss = len(t), u.sum(1), s.sum()
    suu, sus = (u * u).sum(1), (u * s).sum(1)
    det = n * suu - su**2  # the normal equations of [1, t^-c] @ [a, b] = s, solved for each c
    b = (n * sus - su * ss) / det
    a = (ss - b * su) / n
    sse = ((a[:, None] + b[:, None] * u - s) ** 2).sum(1)  # (C,)
    best = int(np.argmin(sse))
    return float(a[best]), float(b[best]), float(EXPONENTS[best]), math.sqrt(sse[best] / n)


def projection(result: Result, *, at: int = BURDA_PASSES, skip: int = 20) -> dict:
    """Ranges of the projected test -log p(x) at `at` epochs and at t -> inf, over windows.

    s(t) is the selection column (-ELBO, or -L_k for an IWAE run). Returns value_at and asymptote
    as (min, max) in nats, the kept fits (a, b, c, rms, start epoch of the window), the offset,
    and seconds_per_epoch: the run's median pace between curve points, validation included.
    """
    curve = result.select(row="curve")
    column = "validation_neg_L_k" if "validation_neg_L_k" in curve[0] else "validation_neg_elbo"
    start = max(skip, result.config["train"].get("warmup_epochs", 0))
    points = [(row["epoch"], row[column]) for row in curve if row["epoch"] >= start]
    if len(points) < MIN_POINTS:
        raise ValueError(
            f"projection: expected at least {MIN_POINTS} curve points from epoch {start} on, got "
            f"{len(points)}; train longer, or project a run with a longer curve"
        )
    t, s = (np.array(values, dtype=np.float64) for values in zip(*points, strict=True))
    fits = [(*power_law_fit(t[i:], s[i:]), float(t[i])) for i in range(len(t) - MIN_POINTS + 1)]
    best = min(fit[3] for fit in fits)
    kept = [fit for fit in fits if fit[3] <= RMS_FACTOR * max(best, RMS_FLOOR)]
    k = max(row["k"] for row in result.select(row="test", estimator="neg_L_k"))
    test = next(row for row in result.select(row="test", estimator="neg_L_k") if row["k"] == k)
    selected = next(row[column] for row in curve if row["epoch"] == test["epoch"])
    offset = test["nats"] - selected  # test -L_k minus the validation score, at the selected epoch
    values = [a + b * at**-c + offset for a, b, c, _, _ in kept]  # $a + b t^{-c} + o$ at t = at
    # $a + o$ as t -> inf; a fit at the grid's smallest c leaves the limit open: as c -> 0, a runs
    # to -inf on a falling stretch (b > 0) and to +inf on a rising one (b < 0)
    limits = [
        a + offset if c > EXPONENTS[0] else math.copysign(math.inf, -b) for a, b, c, *_ in kept
    ]
    paces = [
        row["seconds"] / (row["epoch"] - before)
        for before, row in zip([0] + [r["epoch"] for r in curve], curve, strict=False)
    ]
    return {
        "at": at,
        "value_at": (min(values), max(values)),
        "asymptote": (min(limits), max(limits)),
        "fits": [dict(zip(("a", "b", "c", "rms", "start"), fit, strict=True)) for fit in kept],
        "offset": offset,
        "seconds_per_epoch": statistics.median(paces),
    }


def verdict(fit: dict, goal: float) -> str:
    """'reaches' when every kept fit is below `goal` at fit['at'], 'never' when every asymptote
    stays above it, 'undecided' otherwise: the data do not tell."""
    if fit["value_at"][1] <= goal:
        return "reaches"
    if fit["asymptote"][0] > goal:
        return "never"
    return "undecided"
