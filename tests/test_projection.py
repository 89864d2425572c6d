"""The projection of a validation curve: ranges over windows that cover the truth, or a refusal."""

import math

import numpy as np
import pytest

from vae_tutorial.projection import BURDA_PASSES, power_law_fit, projection, verdict
from vae_tutorial.results import Result

A, B, C = 90.0, 40.0, 0.5  # the true curve s(t) = A + B t^(-C)
OFFSET = -5.0  # the test -L_5000 lies 5 nats below the validation curve at the selected epoch


def run(epochs, noise: float = 0.0, seed: int = 0, warmup: int = 0) -> Result:
    """A reference run whose validation curve is A + B t^-C plus Gaussian noise of sd `noise`."""
    rng = np.random.default_rng(seed)
    s = (
        A
        + B * np.asarray(epochs, dtype=np.float64) ** -C
        + noise * rng.standard_normal(len(epochs))
    )
    curve = [
        {"row": "curve", "epoch": int(e), "validation_neg_elbo": float(v), "seconds": 6.0 * 10}
        for e, v in zip(epochs, s, strict=True)
    ]
    curve[3]["seconds"] = 10.0  # a fast stretch: the median pace (6 s per epoch) ignores it
    last = curve[-1]
    test = {"row": "test", "epoch": last["epoch"], "estimator": "neg_L_k", "k": 5000}
    return Result(
        kind="reference",
        command="benchmarks/reference.py --run test",
        config={"run": "test", "train": {"iwae_k": 1, "warmup_epochs": warmup}},
        hardware={"device": "cpu"},
        date_utc="2026-01-02T03:04:05Z",
        complete=True,
        units={"nats": "nats"},
        rows=curve + [test | {"nats": last["validation_neg_elbo"] + OFFSET}],
    )


def truth(t: float) -> float:
    return A + B * t**-C + OFFSET


def test_a_noise_free_power_law_is_recovered_by_every_window():
    t = np.arange(20.0, 400.0, 10.0)
    a, b, c, rms = power_law_fit(t, A + B * t**-C)
    assert (a, b, c) == pytest.approx((A, B, C), abs=1e-6) and rms < 1e-9
    fit = projection(run(range(10, 410, 10)))
    low, high = fit["value_at"]
    assert low == pytest.approx(truth(BURDA_PASSES), abs=1e-6)
    assert high == pytest.approx(truth(BURDA_PASSES), abs=1e-6)
    assert fit["asymptote"] == pytest.approx((A + OFFSET, A + OFFSET), abs=1e-6)
    assert fit["offset"] == pytest.approx(OFFSET) and fit["seconds_per_epoch"] == 6.0
    assert min(f["start"] for f in fit["fits"]) == 20  # windows start from epoch 20 on


@pytest.mark.parametrize("seed", range(5))
def test_with_noise_the_range_covers_the_truth_and_is_wide(seed):
    # noise of 0.1 nats on a curve that falls 0.5 nats over its last 300 epochs: the limit is
    # not identified, and one fit would give one confident, wrong number
    fit = projection(run(range(10, 410, 10), noise=0.1, seed=seed))
    low, high = fit["value_at"]
    assert low <= truth(BURDA_PASSES) <= high
    assert fit["asymptote"][0] <= A + OFFSET <= fit["asymptote"][1]
    assert high - low > 0.1 and len(fit["fits"]) > 1


def test_only_fits_within_twice_the_best_residual_are_kept():
    # the curve is a power law only from epoch 100 on: windows that start earlier fit it badly
    result = run(range(10, 410, 10), noise=0.01)
    for row in result.select(row="curve"):
        row["validation_neg_elbo"] += 1.0 if row["epoch"] < 100 else 0.0
    fit = projection(result)
    best = min(f["rms"] for f in fit["fits"])
    assert all(f["rms"] <= 2 * best for f in fit["fits"])
    assert min(f["start"] for f in fit["fits"]) >= 90
    assert fit["value_at"][0] <= truth(BURDA_PASSES) <= fit["value_at"][1]


def test_the_verdict_says_never_only_when_every_asymptote_is_above_the_goal():
    fit = projection(run(range(10, 410, 10)))  # value at 3280: 85.70, asymptote 85.00
    assert verdict(fit, goal=86.0) == "reaches"
    assert verdict(fit, goal=84.9) == "never"
    # above 85.5 at 3,280 epochs, below it in the limit: "never" would say more than the fits do
    assert verdict(fit, goal=85.5) == "undecided"
    noisy = projection(run(range(10, 410, 10), noise=0.1, seed=0))
    assert verdict(noisy, goal=truth(BURDA_PASSES)) == "undecided"


def test_a_curve_too_short_after_the_warm_up_is_refused():
    with pytest.raises(ValueError, match="at least 6 curve points from epoch 360 on, got 5"):
        projection(run(range(10, 410, 10), warmup=360))
    with pytest.raises(ValueError, match="got 4"):
        projection(run(range(10, 60, 10)))
    assert math.isfinite(projection(run(range(10, 80, 10)))["value_at"][0])  # 6 points: enough


def test_an_iwae_run_is_projected_from_its_validation_L_k_not_its_elbo():
    result = run(range(10, 410, 10))
    for row in result.select(row="curve"):  # it selects on -L_k; its -ELBO is another curve
        row["validation_neg_L_k"] = row["validation_neg_elbo"]
        row["validation_neg_elbo"] = 95.0 + 10.0 * row["epoch"] ** -2.0
    result.config["train"]["iwae_k"] = 5
    fit = projection(result)
    assert fit["offset"] == pytest.approx(OFFSET)
    assert fit["value_at"] == pytest.approx((truth(BURDA_PASSES),) * 2, abs=1e-6)


def test_the_residual_is_the_rms_of_what_the_power_law_cannot_follow():
    # s(t) = A + B t^-C + 0.1 (-1)^i on 40 points: alternating noise no smooth curve follows, so
    # the rms is about 0.1; three fitted parameters take a little: sqrt(37 / 40) 0.1 = 0.096
    t = np.arange(20.0, 420.0, 10.0)
    _, _, c, rms = power_law_fit(t, A + B * t**-C + 0.1 * (-1.0) ** np.arange(len(t)))
    assert 0.09 < rms < 0.1 and c == pytest.approx(C, abs=0.05)


def test_the_pace_is_the_median_between_curve_points_not_the_fastest():
    result = run(range(10, 410, 10))
    rows = result.select(row="curve")
    for row in rows[:5]:  # a fast start: 1 s per epoch for the first five stretches
        row["seconds"] = 10.0
    assert projection(result)["seconds_per_epoch"] == 6.0  # 35 of 40 stretches at 6 s


@pytest.mark.parametrize("slope", [2.0, -2.0])
def test_a_fit_at_the_smallest_exponent_leaves_the_limit_open(slope):
    # s = A - slope ln t is the c -> 0 limit of a + b t^-c: no power law on the grid has a limit
    result = run(range(10, 410, 10))
    for row in result.select(row="curve"):
        row["validation_neg_elbo"] = A - slope * math.log(row["epoch"])
    fit = projection(result)
    assert any(f["c"] == pytest.approx(0.01) for f in fit["fits"])
    floor, ceiling = fit["asymptote"]
    if slope > 0:  # falling: the limit may lie anywhere below
        assert floor == -math.inf and verdict(fit, goal=0.0) == "undecided"
    else:  # rising: anywhere above
        assert floor == ceiling == math.inf
