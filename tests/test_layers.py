"""Layers: MLP layouts layer by layer, the Glorot bound against its formula, the output bias."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from vae_tutorial.layers import (
    MEAN_CLAMP,
    GaussianLayer,
    hidden_layers,
    init_output_bias_,
    initialise_,
    mlp,
)


def layout(module: nn.Module) -> list[tuple]:
    """Each leaf module as (type name, in, out) for Linear, (type name,) otherwise."""
    rows = []
    for m in module.modules():
        if isinstance(m, nn.Linear):
            rows.append(("Linear", m.in_features, m.out_features))
        elif not list(m.children()) and not isinstance(m, nn.Sequential):
            rows.append((type(m).__name__,))
    return rows


def test_mlp_layout_layer_by_layer():
    """Linear, activation, ..., Linear: an activation after each hidden layer, none at the end."""
    net = mlp(784, (200, 100), 50, "tanh")
    assert layout(net) == [
        ("Linear", 784, 200),
        ("Tanh",),
        ("Linear", 200, 100),
        ("Tanh",),
        ("Linear", 100, 50),
    ]
    assert layout(mlp(3, (), 2)) == [("Linear", 3, 2)]
    assert layout(hidden_layers(6, (5, 4), "relu")) == [
        ("Linear", 6, 5),
        ("ReLU",),
        ("Linear", 5, 4),
        ("ReLU",),
    ]
    assert layout(hidden_layers(6, ())) == []


def test_gaussian_layer_layout_and_shapes():
    """A tanh body, then two affine heads (mu, logvar) with nothing after them."""
    layer = GaussianLayer(10, (8, 6), 3, "tanh").double()  # float64, as the reference below
    assert layout(layer.body) == [("Linear", 10, 8), ("Tanh",), ("Linear", 8, 6), ("Tanh",)]
    assert layout(layer.to_mu) == layout(layer.to_logvar) == [("Linear", 6, 3)]
    h = torch.randn(4, 5, 10, dtype=torch.float64)
    mu, logvar = layer(h)
    assert mu.shape == logvar.shape == (4, 5, 3)
    # the heads are affine in the body's output: no activation bounds them to (-1, 1)
    features = torch.tanh(layer.body[2](torch.tanh(layer.body[0](h))))
    expected = features @ layer.to_mu.weight.T + layer.to_mu.bias
    torch.testing.assert_close(mu, expected)
    # and logvar comes from its own head, not mu's
    expected = features @ layer.to_logvar.weight.T + layer.to_logvar.bias
    torch.testing.assert_close(logvar, expected)


@pytest.mark.parametrize("fan_in, fan_out", [(784, 200), (200, 50), (50, 784)])
def test_glorot_uniform_bound_and_variance(fan_in, fan_out):
    """W ~ U(-a, a), a = sqrt(6 / (fan_in + fan_out)): |w| <= a, max near a, Var = a^2 / 3."""
    torch.manual_seed(0)
    layer = initialise_(nn.Linear(fan_in, fan_out), "glorot_uniform")
    w = layer.weight.detach().double().flatten()
    n = w.numel()
    a = math.sqrt(6 / (fan_in + fan_out))
    assert w.abs().max() <= a
    # P(max |w| < a (1 - t)) = (1 - t)^n <= e^{-n t}: with t = 20 / n, below e^{-20}
    assert w.abs().max() >= a * (1 - 20 / n)
    # E[w^2] = a^2/3; Var(w^2) = E w^4 - (E w^2)^2 = a^4/5 - a^4/9 = 4 a^4 / 45: 5 standard errors
    se = a**2 * math.sqrt(4 / 45 / n)
    assert abs(w.square().mean() - a**2 / 3) < 5 * se
    # E[w] = 0, Var(w) = a^2 / 3: 5 standard errors
    assert abs(w.mean()) < 5 * a / math.sqrt(3 * n)
    assert torch.equal(layer.bias, torch.zeros(fan_out))


def test_glorot_reaches_every_linear_and_pytorch_leaves_them():
    """glorot_uniform re-draws each Linear (biases 0); pytorch keeps nn.Linear's U(+-1/sqrt n)."""
    torch.manual_seed(0)
    net = mlp(784, (200, 200), 50, "tanh", "glorot_uniform")
    layer = GaussianLayer(784, (200,), 50, "tanh", "glorot_uniform")
    linears = [m for m in (*net.modules(), *layer.modules()) if isinstance(m, nn.Linear)]
    assert len(linears) == 6
    for m in linears:
        a = math.sqrt(6 / (m.in_features + m.out_features))
        assert m.weight.abs().max() <= a and m.weight.abs().max() > 0.9 * a
        assert not m.bias.any()
    torch.manual_seed(0)
    plain = mlp(784, (200,), 50, "tanh", "pytorch")
    for m in (plain[0], plain[2]):
        bound = 1 / math.sqrt(m.in_features)
        assert m.weight.abs().max() <= bound and m.bias.abs().max() <= bound
        assert m.bias.abs().max() > 0.5 * bound  # not zeroed


def test_output_bias_takes_the_clamp_it_is_given():
    """A mean pixel of 0 or 1 is clamped to [eps, 1 - eps] with the eps passed, not the default."""
    layer = nn.Linear(4, 784)
    mean = torch.zeros(784)
    mean[0] = 1.0
    init_output_bias_(layer, mean, clamp=0.01)
    logit = math.log(0.01 / 0.99)  # logit(0.01) = -4.595, where the default eps gives -9.21
    assert layer.bias[1:].tolist() == pytest.approx([logit] * 783, abs=1e-5)
    assert layer.bias[0].item() == pytest.approx(-logit, abs=1e-5)


def test_output_bias_is_the_logit_of_the_clamped_mean():
    """b_i = log(m_i / (1 - m_i)), m clamped to [1e-4, 1 - 1e-4], computed in numpy float64."""
    gen = torch.Generator().manual_seed(0)
    images = torch.bernoulli(torch.rand(1, 784, generator=gen).expand(500, 784), generator=gen)
    images[:, :30] = 0  # a border that is never on
    images[:, 30:40] = 1  # pixels always on
    mean = images.mean(0)
    layer = nn.Linear(200, 784)
    init_output_bias_(layer, mean)
    m = np.clip(images.numpy().astype(np.float64).mean(0), 1e-4, 1 - 1e-4)
    expected = np.log(m) - np.log1p(-m)
    assert MEAN_CLAMP == 1e-4
    # float32 near 1 - 1e-4 is spaced 6e-8 = 6e-4 (1 - m), and d logit = dm / (m (1 - m)), so the
    # float32 logit errs by up to 6e-4 at the upper clamp; elsewhere by far less
    np.testing.assert_allclose(layer.bias.detach().double().numpy(), expected, atol=1e-3, rtol=0)
    assert layer.bias[:30].max().item() == pytest.approx(math.log(1e-4 / (1 - 1e-4)), abs=1e-3)
    # with zero weights the decoder's Bernoulli means are the clamped mean image
    with torch.no_grad():
        layer.weight.zero_()
    probs = torch.sigmoid(layer(torch.randn(3, 200))).detach().double()
    np.testing.assert_allclose(probs.numpy(), np.broadcast_to(m, (3, 784)), rtol=1e-5)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: mlp(5, (4,), 2, "sigmoid"), "activation: expected one of"),
        (lambda: mlp(5, (4,), 2, "tanh", "he"), "init: expected one of"),
        (lambda: mlp(5, 200, 2), "expected a tuple of hidden sizes"),
        (lambda: hidden_layers(5, (4, 0)), r"hidden\[1\]: expected an int >= 1"),
        (lambda: GaussianLayer(5, (4,), 0), "latent_dim: expected an int >= 1"),
        (lambda: init_output_bias_(nn.Linear(3, 784), torch.rand(783)), "a mean image of 784"),
        (lambda: init_output_bias_(nn.Linear(3, 2), torch.tensor([0.5, 1.5])), r"\[0, 1\]"),
        (lambda: init_output_bias_(nn.Linear(3, 2), torch.full((2,), 0.5), 0.0), "clamp"),
        (lambda: init_output_bias_(nn.Linear(3, 2, bias=False), torch.rand(2)), "with a bias"),
    ],
)
def test_bad_input_is_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()
