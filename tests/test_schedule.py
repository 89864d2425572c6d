"""Learning-rate schedules: Burda et al.'s stage table, the LambdaLR wrapper, resuming mid-stage."""

import bisect
import io
from collections import Counter

import pytest
import torch

from vae_tutorial.schedule import (
    burda_stage,
    learning_rate,
    lr_factor,
    scheduler,
    total_passes,
)

# Burda et al. 2016, section 5: stage i lasts 3^i passes; the passes done by the end of each stage
BOUNDARIES = [1, 4, 13, 40, 121, 364, 1093, 3280]


def table_stage(epoch: int) -> int:
    """The stage of a 0-based epoch read off the cumulative boundaries (7 past 3280)."""
    return min(bisect.bisect_right(BOUNDARIES, epoch), 7)


def test_burda_stages_against_the_table():
    """Each epoch's stage and rate; stage i holds 3^i epochs; 1e-3 first, 1e-4 last; 3280 in all."""
    assert total_passes("burda") == 3280 == BOUNDARIES[-1] == (3**8 - 1) // 2
    assert total_passes("constant") is None
    stages = [burda_stage(e) for e in range(3280)]
    assert stages == [table_stage(e) for e in range(3280)]
    assert Counter(stages) == {i: 3**i for i in range(8)}
    for e in (0, 1, 3, 4, 12, 13, 39, 40, 120, 121, 363, 364, 1092, 1093, 3279):
        expected = 1e-3 * 10 ** (-table_stage(e) / 7)
        assert learning_rate("burda", 1e-3, e) == pytest.approx(expected, rel=1e-12)
    assert learning_rate("burda", 1e-3, 0) == pytest.approx(1e-3, rel=1e-12)
    assert learning_rate("burda", 1e-3, 3279) == pytest.approx(1e-4, rel=1e-12)
    # the stage rates fall by 10^(1/7) each: a factor 10 over the seven steps
    rates = [learning_rate("burda", 1.0, b - 1) for b in BOUNDARIES]
    for before, after in zip(rates[:-1], rates[1:], strict=True):
        assert before / after == pytest.approx(10 ** (1 / 7), rel=1e-12)
    # past the end, the last rate
    assert learning_rate("burda", 1e-3, 5000) == pytest.approx(1e-4, rel=1e-12)


def test_constant_is_constant():
    assert [learning_rate("constant", 3e-4, e) for e in (0, 5, 4000)] == [3e-4] * 3
    assert lr_factor("constant", 100) == 1.0


def run(opt, sched, epochs):
    """The lr of each epoch, stepping the optimizer then the scheduler once per epoch."""
    lrs = []
    for _ in range(epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def fresh(name):
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.ones(3)
    opt = torch.optim.Adam([p], lr=2e-3, eps=1e-4)
    return opt, scheduler(opt, name)


def test_scheduler_gives_the_schedule_per_epoch():
    opt, sched = fresh("burda")
    lrs = run(opt, sched, 45)
    assert lrs == pytest.approx([2e-3 * 10 ** (-table_stage(e) / 7) for e in range(45)], rel=1e-12)
    opt, sched = fresh("constant")
    assert run(opt, sched, 5) == [2e-3] * 5


@pytest.mark.parametrize("stop", [2, 7, 50])
def test_resuming_mid_stage_gives_the_same_rates(stop):
    """Save optimizer and scheduler at epoch `stop` (inside a stage), load into new ones, go on."""
    opt, sched = fresh("burda")
    whole = run(opt, sched, 130)

    opt, sched = fresh("burda")
    first = run(opt, sched, stop)
    buffer = io.BytesIO()
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    opt, sched = fresh("burda")
    opt.load_state_dict(saved["optimizer"])
    sched.load_state_dict(saved["scheduler"])
    assert first + run(opt, sched, 130 - stop) == whole
    assert table_stage(stop - 1) == table_stage(stop)  # a stop inside a stage


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: learning_rate("cosine", 1e-3, 0), "schedule: expected one of"),
        (lambda: learning_rate("burda", 0.0, 0), "base_lr"),
        (lambda: learning_rate("burda", 1e-3, -1), "epoch: expected an int >= 0"),
        (lambda: burda_stage(1.5), "epoch: expected an int >= 0"),
        (lambda: total_passes("step"), "schedule: expected one of"),
        (lambda: scheduler("adam", "burda"), "expected a torch.optim.Optimizer"),
    ],
)
def test_bad_input_is_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()
