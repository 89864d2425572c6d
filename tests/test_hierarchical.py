"""The two-layer VAE: its ELBO and L_k against a float64 torch.distributions reference."""

import math

import pytest
import torch
from torch import nn
from torch.distributions import Bernoulli, Normal, kl_divergence

from vae_tutorial.hierarchical import HierarchicalVAE
from vae_tutorial.hierarchical_scores import active_units_per_layer
from vae_tutorial.sampling import hierarchical_mean_image, hierarchical_samples

D1, D2 = 4, 3


def tiny(seed: int = 0) -> HierarchicalVAE:
    """A float64 model, 784-6-5-z1(4)-5-z2(3), tanh, with random (nonzero) biases."""
    torch.manual_seed(seed)
    model = HierarchicalVAE(
        latent_dims=(D1, D2), hidden=((6, 5), (5,)), activation="tanh", init="glorot_uniform"
    ).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def binary(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, 784), 0.2, dtype=torch.float64), generator=gen)


# The reference: the layout written out by hand (tanh after each hidden layer, affine heads and
# output), densities from torch.distributions, all in float64.


def linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def affine(m: nn.Linear, h: torch.Tensor) -> torch.Tensor:
    return h @ m.weight.T + m.bias


def gaussian(layer: nn.Module, h: torch.Tensor) -> Normal:
    *body, to_mu, to_logvar = linears(layer)
    for m in body:
        h = torch.tanh(affine(m, h))
    return Normal(affine(to_mu, h), torch.exp(0.5 * affine(to_logvar, h)))


def logits_of(model: HierarchicalVAE, z1: torch.Tensor) -> torch.Tensor:
    *body, last = linears(model.decoder)
    for m in body:
        z1 = torch.tanh(affine(m, z1))
    return affine(last, z1)


def reference(model, x, eps1, eps2):
    """Per draw (k, B): log p(x|z1), log p(z1|z2), log p(z2), log q(z1|x), log q(z2|z1), KL2."""
    q1 = gaussian(model.q_z1, x)
    z1 = q1.mean + q1.stddev * eps1  # (k, B, D1)
    q2 = gaussian(model.q_z2, z1)
    z2 = q2.mean + q2.stddev * eps2  # (k, B, D2)
    p1 = gaussian(model.p_z1, z2)
    prior = Normal(torch.zeros_like(z2), torch.ones_like(z2))
    return {
        "log_px": Bernoulli(logits=logits_of(model, z1)).log_prob(x).sum(-1),
        "log_pz1": p1.log_prob(z1).sum(-1),
        "log_pz2": prior.log_prob(z2).sum(-1),
        "log_qz1": q1.log_prob(z1).sum(-1),
        "log_qz2": q2.log_prob(z2).sum(-1),
        "kl2": kl_divergence(q2, prior).sum(-1),
    }


def log_w(r):
    return r["log_px"] + r["log_pz1"] + r["log_pz2"] - r["log_qz1"] - r["log_qz2"]


def noise(k, b, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(k, b, D1, generator=gen, dtype=torch.float64),
        torch.randn(k, b, D2, generator=gen, dtype=torch.float64),
    )


# float64 sums of ~1e3 terms of size ~1: rounding ~1e3 * 1e-16 per value; 1e-9 is far above it
TOL = {"atol": 1e-9, "rtol": 0}


def test_log_weights_and_l1_match_the_reference():
    """log w for each draw, and L_1 = log w_1 for the same noise: the fully sampled ELBO."""
    model, x = tiny(), binary(5)
    eps = noise(3, 5)
    torch.testing.assert_close(
        model.log_weights(x, 3, noise=eps), log_w(reference(model, x, *eps)), **TOL
    )
    one = tuple(e[:1] for e in eps)
    l1 = model.importance_weighted_bound(x, 1, noise=one)
    torch.testing.assert_close(l1, log_w(reference(model, x, *one))[0], **TOL)


@pytest.mark.parametrize("chunk", [None, 1, 3, 7])
def test_lk_matches_the_reference(chunk):
    """L_k = log mean_i w_i with the max taken out by hand, for any chunking of the k draws."""
    model, x = tiny(), binary(4)
    eps = noise(7, 4)
    lw = log_w(reference(model, x, *eps))  # (7, 4)
    top = lw.max(0).values
    expected = top + torch.log(torch.exp(lw - top).mean(0))
    torch.testing.assert_close(
        model.importance_weighted_bound(x, 7, chunk=chunk, noise=eps), expected, **TOL
    )


def test_elbo_terms_match_the_reference():
    """reconstruction, the sampled z1 term, the closed-form KL of z2, and their sum."""
    model, x = tiny(), binary(5)
    eps = noise(1, 5)
    terms = model.elbo_terms(x, noise=eps)
    r = {name: value[0] for name, value in reference(model, x, *eps).items()}
    torch.testing.assert_close(terms.reconstruction, r["log_px"], **TOL)
    torch.testing.assert_close(terms.kl_z1, r["log_qz1"] - r["log_pz1"], **TOL)
    torch.testing.assert_close(terms.kl_z2, r["kl2"], **TOL)
    torch.testing.assert_close(
        terms.elbo, r["log_px"] - (r["log_qz1"] - r["log_pz1"]) - r["kl2"], **TOL
    )


@pytest.mark.usefixtures("one_thread")
def test_closed_form_kl_is_the_mean_of_the_sampled_one():
    """Given z1, E_eps2[L_1 - ELBO] = E_q[log p(z2) - log q(z2|z1)] + KL = 0 (the KL's definition).

    N draws of eps2 with eps1 fixed, 5 standard errors of the sample mean.
    """
    model, n = tiny(), 5000
    x = binary(1).expand(n, 784)
    eps1 = noise(1, 1)[0].expand(1, n, D1)
    eps2 = torch.randn(1, n, D2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        diff = (
            model.log_weights(x, 1, noise=(eps1, eps2))[0]
            - model.elbo_terms(x, noise=(eps1, eps2)).elbo
        )
    assert diff.std() > 0.1  # the two estimators differ draw by draw
    assert abs(diff.mean()) < 5 * diff.std() / math.sqrt(n)


@pytest.mark.usefixtures("one_thread")
def test_lk_grows_with_k_in_expectation():
    """E[L_1] <= E[L_2] <= E[L_5] <= E[L_20]: R repeats each, 5 standard errors of a difference.

    On an untrained model q is far from the posterior, so L_20 - L_1 is many standard errors.
    """
    model, repeats = tiny(), 400
    x = binary(3).repeat(repeats, 1)  # R independent draws of L_k for each of 3 images
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        bounds = {
            k: model.importance_weighted_bound(x, k, generator=gen).view(repeats, 3).sum(1)
            for k in (1, 2, 5, 20)
        }  # (R,) each
    ks = sorted(bounds)
    for small, large in zip(ks[:-1], ks[1:], strict=True):
        d = bounds[large] - bounds[small]  # (R,), independent draws
        assert d.mean() > -5 * d.std() / math.sqrt(repeats)
    d = bounds[20] - bounds[1]
    assert d.mean() > 5 * d.std() / math.sqrt(repeats)


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_gradients_reach_every_parameter(objective):
    model, x = tiny(), binary(6)
    model.float()
    x = x.float()
    gen = torch.Generator().manual_seed(0)
    if objective == "elbo":
        loss = -model.elbo_terms(x, generator=gen).elbo.mean()
    else:
        loss = -model.importance_weighted_bound(x, 5, generator=gen).mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_lk_gradients_match_the_reference():
    """d L_5 / d theta, phi for fixed noise: the reparameterised gradient, through both layers."""
    model, x = tiny(), binary(4)
    eps = noise(5, 4)
    model.importance_weighted_bound(x, 5, noise=eps).sum().backward()
    got = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    lw = log_w(reference(model, x, *eps))
    top = lw.max(0).values.detach()
    (top + torch.log(torch.exp(lw - top).mean(0))).sum().backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(got[name], p.grad, atol=1e-9, rtol=1e-9, msg=name)


def test_decoding_and_samples():
    """mean_image decodes the mean of p(z1|z2); a drawn z1 differs; sample is seeded, in (0, 1)."""
    model = tiny()
    z2 = torch.randn(4, D2, dtype=torch.float64)
    expected = torch.sigmoid(logits_of(model, gaussian(model.p_z1, z2).mean))
    torch.testing.assert_close(hierarchical_mean_image(model, z2), expected, **TOL)
    gen = torch.Generator().manual_seed(0)
    drawn = hierarchical_mean_image(model, z2, sample_z1=True, generator=gen)
    assert drawn.shape == (4, 784) and not torch.allclose(drawn, expected)
    one = hierarchical_samples(model, 6, generator=torch.Generator().manual_seed(1))
    two = hierarchical_samples(model, 6, generator=torch.Generator().manual_seed(1))
    assert one.shape == (6, 784) and torch.equal(one, two)
    assert ((one > 0) & (one < 1)).all()
    x = binary(2)
    mu, logvar = model.encode(x)
    q = gaussian(model.q_z1, x)
    torch.testing.assert_close(mu, q.mean, **TOL)
    torch.testing.assert_close(torch.exp(0.5 * logvar), q.stddev, **TOL)
    torch.testing.assert_close(model.decode(mu), logits_of(model, q.mean), **TOL)


def test_active_units_per_layer():
    """A unit with a constant mean is inactive; with sigma_1 ~ 0, E_q[z2|x] = mu2(mu1(x))."""
    model, x = tiny(), binary(50)
    with torch.no_grad():
        model.q_z1.to_mu.weight[0] = 0  # z1 unit 0: mean constant across x
        model.q_z2.to_mu.weight[1] = 0  # z2 unit 1: mean constant across z1
        model.q_z1.to_mu.weight.mul_(30)  # the others move a lot with x
        model.q_z2.to_mu.weight.mul_(30)
        model.q_z1.to_logvar.weight.zero_()
        model.q_z1.to_logvar.bias.fill_(-60.0)  # sigma_1 = e^-30: z1 = mu1(x) to 1e-13
    (n1, var1), (n2, var2) = active_units_per_layer(model, x, samples=3, seed=0)
    mu1 = gaussian(model.q_z1, x).mean
    torch.testing.assert_close(var1, mu1.var(0), **TOL)
    torch.testing.assert_close(var2, gaussian(model.q_z2, mu1).mean.var(0), atol=1e-8, rtol=0)
    assert var1[0] == 0 and var2[1] == 0
    assert (n1, n2) == (
        int((mu1.var(0) > 0.01).sum()),
        int((gaussian(model.q_z2, mu1).mean.var(0) > 0.01).sum()),
    )
    assert (n1, n2) == (D1 - 1, D2 - 1)
    assert active_units_per_layer(model, x, threshold=1e9)[0][0] == 0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: m.log_weights(torch.full((2, 784), 0.5, dtype=torch.float64)), "binary"),
        (lambda m: m.log_weights(binary(2).float()), "expected dtype torch.float64"),
        (lambda m: m.log_weights(binary(2)[:, :700]), r"expected shape \(B, 784\)"),
        (lambda m: m.log_weights(binary(2), 0), "k: expected an int >= 1"),
        (
            lambda m: m.log_weights(binary(2), 3, noise=noise(2, 2)),
            r"eps1: expected shape \(3, 2, 4\)",
        ),
        (lambda m: m.importance_weighted_bound(binary(2), 4, chunk=0), "chunk"),
        (
            lambda m: hierarchical_mean_image(m, torch.zeros(2, D1, dtype=torch.float64)),
            r"z2: expected shape \(B, 3\)",
        ),
        (lambda m: m.decode(torch.full((1, D1), math.nan, dtype=torch.float64)), "finite"),
        (lambda m: active_units_per_layer(m, binary(1)), "at least 2 image"),
        (
            lambda m: HierarchicalVAE(
                latent_dims=(4, 3, 2), hidden=((6,), (5,)), activation="tanh", init="pytorch"
            ),
            r"latent_dims: expected \(D1, D2\)",
        ),
        (
            lambda m: HierarchicalVAE(
                latent_dims=(4, 3), hidden=(6, 5), activation="tanh", init="pytorch"
            ),
            "expected a tuple of hidden sizes",
        ),
    ],
)
def test_bad_input_is_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call(tiny())
