"""The shared input checks: what each accepts, what it refuses, and the message it gives."""

import math
import re

import numpy as np
import pytest
import torch

from vae_tutorial import checks


@pytest.mark.parametrize("value", [1, 128, np.int64(3)])
def test_positive_int_accepts_whole_numbers(value):
    assert checks.positive_int("n", value) == int(value)
    assert type(checks.positive_int("n", value)) is int


@pytest.mark.parametrize(
    ("value", "got"),
    [
        (True, "True (a bool)"),
        (2.5, "2.5 (a float)"),
        (3.0, "3.0 (a float)"),
        ("3", "'3' (a str)"),
        (None, "None (a NoneType)"),
        (0, "0"),
        (-4, "-4"),
        (torch.tensor(3), "a tensor of shape () and dtype torch.int64"),
    ],
)
def test_positive_int_refuses_everything_else(value, got):
    message = f"batch_size: expected an int >= 1, got {got}; pass a whole number >= 1"
    with pytest.raises(ValueError, match=re.escape(message)):
        checks.positive_int("batch_size", value)


def test_int_at_least_uses_its_bound_and_fix():
    assert checks.int_at_least("epoch", 0, 0) == 0
    with pytest.raises(ValueError, match=re.escape("epoch: expected an int >= 0, got -1; count")):
        checks.int_at_least("epoch", -1, 0, "count from 0")


@pytest.mark.parametrize(
    ("kwargs", "value", "interval"),
    [
        ({"low": 0.0}, -1e-9, "[0, inf)"),
        ({"low": 0.0, "open_low": True}, 0.0, "(0, inf)"),
        ({"low": 0.0, "high": 0.5, "open_high": True}, 0.5, "[0, 0.5)"),
        ({}, math.inf, "(-inf, inf)"),
        ({}, math.nan, "(-inf, inf)"),
        ({}, False, "(-inf, inf)"),
    ],
)
def test_real_names_its_interval(kwargs, value, interval):
    with pytest.raises(ValueError, match=re.escape(f"x: expected a finite number in {interval}")):
        checks.real("x", value, **kwargs)


def test_real_accepts_the_closed_ends_and_numpy_floats():
    assert checks.real("x", 0, low=0.0, high=1.0) == 0.0
    assert checks.real("x", np.float32(1.0), low=0.0, high=1.0) == 1.0


def test_flag_and_one_of():
    assert checks.flag("shuffle", False) is False
    with pytest.raises(ValueError, match=re.escape("shuffle: expected True or False, got 1")):
        checks.flag("shuffle", 1)
    checks.one_of("kind", "vae", ("vae", "ae"))
    with pytest.raises(ValueError, match=re.escape("kind: expected one of ('vae', 'ae'), got 'x'")):
        checks.one_of("kind", "x", ("vae", "ae"))


def test_value_checks_report_the_count_and_the_first_bad_value():
    t = torch.tensor([0.0, math.inf, 1.0, math.nan])
    with pytest.raises(ValueError, match=re.escape("t: expected finite values, got 2 non-finite")):
        checks.finite("t", t)
    with pytest.raises(ValueError, match=re.escape("t: expected finite values")):
        checks.unit_interval("t", t)  # NaN is not in [0, 1]
    with pytest.raises(ValueError, match=re.escape("got min -2, max 3")):
        checks.in_range("t", torch.tensor([-2.0, 3.0]), -1.0, 1.0)
    with pytest.raises(ValueError, match=re.escape("got 1 other value(s) (first: 0.5)")):
        checks.binary("t", torch.tensor([0.0, 0.5, 1.0]))
    for check in (checks.finite, checks.unit_interval, checks.binary):
        check("empty", torch.zeros(0))  # nothing to refuse


def test_symmetric_positive_definite_tolerates_rounding_only():
    a = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    chol = checks.symmetric_positive_definite("cov", a)
    torch.testing.assert_close(chol @ chol.T, a)
    nearly = a.clone()
    nearly[0, 1] += 1e-15  # rounding
    checks.symmetric_positive_definite("cov", nearly)
    skewed = a.clone()
    skewed[0, 1] += 1e-6
    with pytest.raises(ValueError, match=re.escape("cov: expected a symmetric matrix")):
        checks.symmetric_positive_definite("cov", skewed)
    with pytest.raises(ValueError, match=re.escape("cov: expected a positive definite matrix")):
        checks.symmetric_positive_definite("cov", torch.diag(torch.tensor([1.0, 0.0])))


def test_describe_keeps_messages_short():
    assert checks.describe(list(range(100))).endswith(" ... (a list)")
    assert len(checks.describe(list(range(100)))) < 60
    assert checks.describe(np.zeros((2, 3))) == "a ndarray of shape (2, 3) and dtype float64"
