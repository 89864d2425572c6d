"""The ELBO's terms against independent references: torch.distributions, formulas, Monte Carlo."""

import math
import re

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from vae_tutorial.elbo import elbo_terms, kl_per_dimension, kl_to_standard_normal, negative_elbo
from vae_tutorial.likelihoods import bernoulli_log_likelihood, continuous_bce
from vae_tutorial.objective import kl_warmup


def random_terms(b: int = 4, d: int = 3, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Logits (b, 784), binary x (b, 784), mu and logvar (b, d), in float64.

    float64, so that the package and the reference (torch.distributions, a formula) are compared
    at float64's tolerances: float32 sums of 784 terms differ by their summation order alone.
    """
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(b, 784, generator=g, dtype=torch.float64)
    x = torch.bernoulli(torch.full((b, 784), 0.4, dtype=torch.float64), generator=g)
    mu, logvar = (torch.randn(b, d, generator=g, dtype=torch.float64) for _ in range(2))
    return logits, x, mu, logvar


def test_bernoulli_log_likelihood_matches_torch_distributions():
    logits, x, _, _ = random_terms()
    expected = Bernoulli(logits=logits).log_prob(x).sum(-1)
    torch.testing.assert_close(bernoulli_log_likelihood(logits, x), expected)


def test_bernoulli_log_likelihood_matches_the_float64_formula():
    """x log p + (1 - x) log(1 - p) with p = sigmoid(logits), in float64."""
    logits, x = random_terms()[:2]
    p = torch.sigmoid(logits)
    expected = (x * torch.log(p) + (1 - x) * torch.log1p(-p)).sum(-1)
    torch.testing.assert_close(bernoulli_log_likelihood(logits, x), expected)


def test_bernoulli_log_likelihood_is_exact_for_extreme_logits():
    """log sigmoid(-100) = -100 - log(1 + e^-100), where log(1 - sigmoid(100)) gives -inf."""
    logits = torch.tensor([[100.0, -100.0, 100.0]])
    x = torch.tensor([[0.0, 1.0, 1.0]])
    # exact: -200 - log1p(e^-100) = -200 in float32 (e^-100 < 2^-24); one ulp of 200 allowed
    got = bernoulli_log_likelihood(logits, x)
    torch.testing.assert_close(got, torch.tensor([-200.0]), rtol=0, atol=2**-16)


def test_continuous_bce_matches_the_formula_on_grey_levels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 784, generator=g, dtype=torch.float64)
    x = torch.rand(3, 784, generator=g, dtype=torch.float64)
    p = torch.sigmoid(logits)
    expected = (x * torch.log(p) + (1 - x) * torch.log1p(-p)).sum(-1)
    torch.testing.assert_close(continuous_bce(logits, x), expected)


def test_continuous_bce_is_not_a_normalised_density():
    """For one pixel, the integral over x in [0, 1] of exp(continuous BCE) is not 1.

    Closed form: (sigmoid(l) - sigmoid(-l)) / (log sigmoid(l) - log sigmoid(-l)), 1/2 at l = 0.
    """
    x = torch.linspace(0, 1, 10_001, dtype=torch.float64)[:, None]  # (G, 1): one pixel
    for logit in (0.0, 2.0):
        density = continuous_bce(torch.full_like(x, logit), x).exp()  # (G,)
        mass = torch.trapezoid(density, x[:, 0]).item()
        s, t = torch.sigmoid(torch.tensor(logit)), torch.sigmoid(torch.tensor(-logit))
        closed = 0.5 if logit == 0 else ((s - t) / (s.log() - t.log())).item()
        assert mass == pytest.approx(closed, rel=1e-6) and mass < 0.6


def test_kl_per_dimension_matches_torch_distributions():
    _, _, mu, logvar = random_terms()
    expected = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0))
    torch.testing.assert_close(kl_per_dimension(mu, logvar), expected)
    torch.testing.assert_close(kl_to_standard_normal(mu, logvar), expected.sum(-1))


def test_closed_form_kl_equals_monte_carlo():
    """KL = E_q[log q(z) - log p(z)]: n draws per example, within 4 standard errors."""
    n = 100_000
    mu = torch.tensor([[0.0, 0.0], [1.5, -0.5], [-2.0, 0.3]])
    logvar = torch.tensor([[0.0, 0.0], [math.log(0.2), math.log(3.0)], [math.log(0.05), 0.5]])
    q = Normal(mu, torch.exp(0.5 * logvar))
    z = q.sample((n,))  # (n, 3, 2)
    log_ratio = (q.log_prob(z) - Normal(0.0, 1.0).log_prob(z)).sum(-1)  # (n, 3)
    estimate, se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(n)
    kl = kl_to_standard_normal(mu, logvar)
    assert kl[0] == 0  # q = p
    assert torch.all((estimate[1:] - kl[1:]).abs() < 4 * se[1:])


def test_elbo_terms_and_negative_elbo():
    logits, x, mu, logvar = random_terms()
    terms = elbo_terms(logits, x, mu, logvar)
    reference_rec = Bernoulli(logits=logits).log_prob(x).sum(-1)
    reference_kl = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(terms.reconstruction, reference_rec)
    torch.testing.assert_close(terms.kl, reference_kl)
    torch.testing.assert_close(terms.elbo, reference_rec - reference_kl)
    loss = negative_elbo(logits, x, mu, logvar, beta=0.25)
    torch.testing.assert_close(loss, (-reference_rec + 0.25 * reference_kl).mean())
    assert loss.shape == ()
    torch.testing.assert_close(negative_elbo(logits, x, mu, logvar), -terms.elbo.mean())


def test_continuous_bce_likelihood_is_selected_by_name():
    logits, _, mu, logvar = random_terms()
    grey = torch.rand(4, 784, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    terms = elbo_terms(logits, grey, mu, logvar, likelihood="continuous_bce")
    torch.testing.assert_close(terms.reconstruction, continuous_bce(logits, grey))


@pytest.mark.parametrize(
    ("epoch", "warmup", "beta"),
    [(0, 0, 1.0), (5, 0, 1.0), (0, 4, 0.25), (1, 4, 0.5), (3, 4, 1.0), (10, 4, 1.0)],
)
def test_kl_warmup(epoch, warmup, beta):
    assert kl_warmup(epoch, warmup) == beta


def test_non_binary_x_is_not_a_bernoulli_likelihood():
    logits, x, mu, logvar = random_terms()
    x[0, 5] = 0.37
    message = (
        "bernoulli_log_likelihood: x: expected binary values in {0, 1}, "
        "got 1 other value(s) (first: 0.37); binarize x, or use continuous_bce"
    )
    for call in (
        lambda: bernoulli_log_likelihood(logits, x),
        lambda: elbo_terms(logits, x, mu, logvar),
        lambda: negative_elbo(logits, x, mu, logvar),
    ):
        with pytest.raises(ValueError, match=re.escape(message)):
            call()
    assert bernoulli_log_likelihood(logits, x, check=False).shape == (4,)


def nan_at(t: torch.Tensor, value: float = math.nan) -> torch.Tensor:
    """A copy of t with one entry replaced by value."""
    t = t.clone()
    t.view(-1)[1] = value
    return t


FINITE = "expected finite values, got 1 non-finite (first: {})"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda t: bernoulli_log_likelihood(nan_at(t[0]), t[1]),
            "bernoulli_log_likelihood: logits: " + FINITE.format("nan"),
        ),
        (
            lambda t: continuous_bce(nan_at(t[0], math.inf), t[1]),
            "continuous_bce: logits: " + FINITE.format("inf"),
        ),
        (
            lambda t: continuous_bce(t[0], nan_at(t[1])),
            "continuous_bce: x: " + FINITE.format("nan"),
        ),
        (
            lambda t: bernoulli_log_likelihood(t[0], nan_at(t[1])),
            "bernoulli_log_likelihood: x: expected binary values in {0, 1}, "
            "got 1 other value(s) (first: nan)",
        ),
        (
            lambda t: kl_to_standard_normal(nan_at(t[2], -math.inf), t[3]),
            "kl_per_dimension: mu: " + FINITE.format("-inf"),
        ),
        (
            lambda t: elbo_terms(t[0], t[1], t[2], nan_at(t[3])),
            "kl_per_dimension: logvar: " + FINITE.format("nan"),
        ),
        (
            lambda t: negative_elbo(nan_at(t[0]), *t[1:]),
            "bernoulli_log_likelihood: logits: " + FINITE.format("nan"),
        ),
    ],
)
def test_non_finite_inputs_are_refused_where_check_is_true(call, message):
    """NaN or inf would give a NaN loss (or a wrong finite one) far from its cause."""
    with pytest.raises(ValueError, match=re.escape(message)):
        call(random_terms())


def test_check_false_skips_the_value_checks():
    logits, x, mu, logvar = random_terms()
    assert bernoulli_log_likelihood(nan_at(logits), x, check=False).isnan().any()
    assert kl_to_standard_normal(mu, nan_at(logvar), check=False).isnan().any()
    terms = elbo_terms(nan_at(logits), x, mu, logvar, check=False)
    assert terms.elbo.isnan().any()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda t: continuous_bce(t[0], t[1] * 2),
            "continuous_bce: x: expected values in [0, 1], got min 0, max 2",
        ),
        (
            lambda t: bernoulli_log_likelihood(t[0], t[1][:, :10]),
            "bernoulli_log_likelihood: expected logits and x of the same shape (..., N), "
            "got (4, 784) and (4, 10)",
        ),
        (
            lambda t: bernoulli_log_likelihood(t[0], t[1].long()),
            "bernoulli_log_likelihood: x: expected a floating-point tensor, got dtype torch.int64",
        ),
        (
            lambda t: bernoulli_log_likelihood(t[0].tolist(), t[1]),
            "bernoulli_log_likelihood: logits: expected a torch.Tensor, got [[",
        ),
        (
            lambda t: kl_to_standard_normal(t[2], t[3][:, :2]),
            "kl_per_dimension: expected mu and logvar of the same shape (..., N), "
            "got (4, 3) and (4, 2)",
        ),
        (
            lambda t: elbo_terms(*t, likelihood="gaussian"),
            "likelihood: expected one of ('bernoulli', 'continuous_bce', 'continuous_bernoulli'), "
            "got 'gaussian'",
        ),
        (
            lambda t: elbo_terms(t[0], t[1], t[2][:3], t[3][:3]),
            "elbo_terms: expected logits and mu with the same batch shape, got (4, 784) and (3, 3)",
        ),
        (
            lambda t: negative_elbo(*t, beta=-1.0),
            "beta: expected a finite number in [0, inf), got -1.0 (a float); beta = 1 gives",
        ),
        (
            lambda t: negative_elbo(*t, beta=math.nan),
            "beta: expected a finite number in [0, inf), got nan (a float)",
        ),
        (
            lambda t: kl_warmup(-1, 3),
            "kl_warmup: epoch: expected an int >= 0, got -1; epochs count from 0",
        ),
        (
            lambda t: kl_warmup(True, 3),
            "kl_warmup: epoch: expected an int >= 0, got True (a bool)",
        ),
        (
            lambda t: kl_warmup(0, -2),
            "kl_warmup: warmup_epochs: expected an int >= 0, got -2",
        ),
        (
            lambda t: kl_warmup(0, 2.5),
            "kl_warmup: warmup_epochs: expected an int >= 0, got 2.5 (a float)",
        ),
    ],
)
def test_bad_inputs_name_expected_and_got(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call(random_terms())
