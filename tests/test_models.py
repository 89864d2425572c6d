"""Models: layouts, shapes, input checks, and the reparameterization trick against references."""

import math
import re

import pytest
import torch
from torch import nn
from torch.distributions import Normal

from vae_tutorial.config import ModelConfig
from vae_tutorial.models import VAE, Autoencoder, build_model, reparameterize


def small(kind: str = "vae", arch: str = "mlp") -> VAE | Autoencoder:
    torch.manual_seed(0)
    return build_model(ModelConfig(kind=kind, arch=arch, latent_dim=3, hidden_dim=16))


def binary_images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, 784), 0.3), generator=torch.Generator().manual_seed(seed))


def test_default_is_the_classic_layout():
    """784 -> 400 -> (mu, logvar in R^20) -> 400 -> 784: count the parameters by hand."""
    model = VAE()
    encoder = 784 * 400 + 400 + 2 * (400 * 20 + 20)
    decoder = 20 * 400 + 400 + 400 * 784 + 784
    assert sum(p.numel() for p in model.parameters()) == encoder + decoder == 652_824
    assert model.config == ModelConfig()
    linear = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]
    assert linear == [(784, 400), (400, 20), (400, 20), (20, 400), (400, 784)]


def test_conv_layout_has_two_stride_2_convolutions_and_their_mirror():
    model = small(arch="conv")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    deconvs = [m for m in model.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(c.out_channels, c.stride) for c in convs] == [(32, (2, 2)), (64, (2, 2))]
    assert [(c.out_channels, c.stride) for c in deconvs] == [(32, (2, 2)), (1, (2, 2))]


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_vae_shapes_for_flat_and_image_inputs(arch):
    model = small(arch=arch)
    x = binary_images(5)
    logits, mu, logvar, z = model(x, generator=torch.Generator().manual_seed(1))
    assert logits.shape == (5, 784) and mu.shape == logvar.shape == z.shape == (5, 3)
    again = model(x.reshape(5, 1, 28, 28), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(again[0], logits, rtol=0, atol=0)  # the same float32 operations
    assert model.decode(z).shape == (5, 784)
    model, z = model.double(), z.double()  # float64, as the reference
    logits = model.decode(z)
    torch.testing.assert_close(model.decode_mean(z), 1 / (1 + torch.exp(-logits)))


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_autoencoder_shapes(arch):
    model = small("ae", arch)
    x = binary_images(4).reshape(4, 1, 28, 28)
    z = model.encode(x)
    assert isinstance(model, Autoencoder) and z.shape == (4, 3)
    torch.testing.assert_close(model(x), model.decode(z), rtol=0, atol=0)  # the same operations
    assert model(x).shape == (4, 784)


def test_forward_is_reproducible_with_a_generator():
    model = small()
    x = binary_images(3)
    a = model(x, generator=torch.Generator().manual_seed(7))
    b = model(x, generator=torch.Generator().manual_seed(7))
    c = model(x, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(a[3], b[3], rtol=0, atol=0)  # the same draws, to the bit
    assert not torch.equal(a[3], c[3])


def test_forward_runs_under_bf16_autocast():
    """Under autocast the layers emit bf16, which decode must accept."""
    model = small()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, *_ = model(binary_images(2))
    assert logits.shape == (2, 784) and logits.dtype == torch.bfloat16


def test_reparameterize_has_the_right_moments():
    """z = mu + sigma eps: sample mean and variance within 4 standard errors of mu and sigma^2."""
    n = 200_000
    mu = torch.tensor([0.5, -2.0, 0.0]).expand(n, 3)
    logvar = torch.tensor([0.0, math.log(4.0), math.log(0.01)]).expand(n, 3)
    z = reparameterize(mu, logvar, torch.Generator().manual_seed(0))
    var = logvar[0].exp()
    assert torch.all((z.mean(0) - mu[0]).abs() < 4 * (var / n).sqrt())
    # The sample variance of a Gaussian has standard error sigma^2 sqrt(2 / (n - 1)).
    assert torch.all((z.var(0) - var).abs() < 4 * var * math.sqrt(2 / (n - 1)))


def test_pathwise_and_score_function_gradients_agree():
    """d/d(mu, logvar) of E_{z ~ N(mu, sigma^2)}[sin z] three ways: analytic, pathwise, REINFORCE.

    E[sin z] = sin(mu) exp(-sigma^2 / 2), so the gradient is cos(mu) e^{-sigma^2/2} for mu and
    -(sigma^2 / 2) sin(mu) e^{-sigma^2/2} for logvar (d sigma^2 / d logvar = sigma^2).
    Each of the n rows is one single-sample estimate; compare means within 4 standard errors.
    """
    n = 100_000
    mu0, logvar0 = torch.tensor([0.3, -1.2]), torch.tensor([math.log(0.5), math.log(2.0)])
    var0, damp = logvar0.exp(), torch.exp(-logvar0.exp() / 2)
    analytic = {"mu": torch.cos(mu0) * damp, "logvar": -var0 / 2 * torch.sin(mu0) * damp}

    def per_sample(score: bool) -> dict[str, torch.Tensor]:
        mu = mu0.repeat(n, 1).requires_grad_()
        logvar = logvar0.repeat(n, 1).requires_grad_()
        z = reparameterize(mu, logvar, torch.Generator().manual_seed(int(score)))
        if score:  # f(z) * grad log q(z), with z held fixed
            log_q = Normal(mu, torch.exp(0.5 * logvar)).log_prob(z.detach())
            (torch.sin(z.detach()) * log_q).sum().backward()
        else:  # grad f(mu + sigma eps)
            torch.sin(z).sum().backward()
        return {"mu": mu.grad, "logvar": logvar.grad}

    pathwise, score = per_sample(False), per_sample(True)
    for name, exact in analytic.items():
        for grads in (pathwise, score):
            se = grads[name].std(0) / math.sqrt(n)
            assert torch.all((grads[name].mean(0) - exact).abs() < 4 * se), name
        se = torch.hypot(pathwise[name].std(0), score[name].std(0)) / math.sqrt(n)
        assert torch.all((pathwise[name].mean(0) - score[name].mean(0)).abs() < 4 * se)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"kind": "gan"},
            "ModelConfig.kind: expected one of ('vae', 'ae', 'cvae', 'hvae'), got 'gan'",
        ),
        ({"arch": "rnn"}, "ModelConfig.arch: expected one of ('mlp', 'conv'), got 'rnn'"),
        ({"latent_dim": 0}, "ModelConfig.latent_dim: expected an int >= 1, got 0"),
        ({"hidden_dim": 2.5}, "ModelConfig.hidden_dim: expected an int >= 1, got 2.5 (a float)"),
        ({"latent_dim": True}, "ModelConfig.latent_dim: expected an int >= 1, got True (a bool)"),
    ],
)
def test_config_rejects_bad_fields(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ModelConfig(**kwargs)


def test_classes_reject_the_other_kind():
    with pytest.raises(ValueError, match=re.escape("VAE: expected a ModelConfig with kind='vae'")):
        VAE(ModelConfig(kind="ae"))
    with pytest.raises(ValueError, match="Autoencoder: expected a ModelConfig with kind='ae'"):
        Autoencoder(ModelConfig())
    assert isinstance(build_model(ModelConfig(kind="ae", latent_dim=2)), Autoencoder)
    message = "build_model: expected a ModelConfig, got 'vae' (a str); write build_model("
    with pytest.raises(ValueError, match=re.escape(message)):
        build_model("vae")


BAD_IMAGES = [
    (torch.zeros(2, 28, 28), "x: expected shape (B, 784) or (B, 1, 28, 28), got (2, 28, 28)"),
    (torch.zeros(2, 783), "x: expected shape (B, 784) or (B, 1, 28, 28), got (2, 783)"),
    (torch.zeros(784), "x: expected shape (B, 784) or (B, 1, 28, 28), got (784,)"),
    (
        torch.zeros(2, 784, dtype=torch.uint8),
        "x: expected dtype torch.float32 (the model's), got torch.uint8; convert uint8 images "
        "with x.float() / 255",
    ),
    (
        torch.zeros(2, 784, dtype=torch.float64),
        "x: expected dtype torch.float32 (the model's), got torch.float64; "
        "convert with .to(torch.float32)",
    ),
    (
        torch.full((2, 784), 255.0),
        "x (pixel values): expected values in [0, 1], got min 255, max 255; "
        "scale uint8 images with x.float() / 255",
    ),
    (
        torch.full((2, 784), -0.5),
        "x (pixel values): expected values in [0, 1], got min -0.5, max -0.5",
    ),
    (
        torch.full((2, 784), math.nan),
        "x (pixel values): expected finite values, got 1568 non-finite (first: nan)",
    ),
    (
        torch.zeros(2, 784).index_fill(1, torch.tensor([3]), math.inf),
        "x (pixel values): expected finite values, got 2 non-finite (first: inf)",
    ),
    (
        [[0.0] * 784],
        "x: expected a torch.Tensor of images (B, 784) or (B, 1, 28, 28), "
        "got [[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, ... (a list); convert it with torch.as_tensor",
    ),
]


@pytest.mark.parametrize("kind", ["vae", "ae"])
@pytest.mark.parametrize(("x", "message"), BAD_IMAGES)
def test_bad_images_name_expected_and_got(kind, x, message):
    model = small(kind)
    with pytest.raises(ValueError, match=re.escape(message)):
        model.encode(x)
    with pytest.raises(ValueError, match=re.escape(message)):
        model(x)


def test_check_false_skips_only_the_value_range():
    """The range check reads the data (a GPU sync); check=False skips it, not the shape check."""
    model = small()
    logits, *_ = model(torch.full((2, 784), 2.0), check=False)
    assert logits.shape == (2, 784)
    with pytest.raises(ValueError, match=re.escape("got (2, 783)")):
        model(torch.zeros(2, 783), check=False)


@pytest.mark.parametrize(
    ("z", "message"),
    [
        (torch.zeros(2, 4), "z: expected shape (B, 3), got (2, 4)"),
        (torch.zeros(3), "z: expected shape (B, 3), got (3,)"),
        (torch.zeros(2, 3, dtype=torch.int64), "z: expected dtype torch.float32 (the model's)"),
        (torch.full((2, 3), math.nan), "z: expected finite values, got 6 non-finite (first: nan)"),
        ("z", "z: expected a torch.Tensor (B, 3), got 'z' (a str)"),
    ],
)
def test_bad_latents_name_expected_and_got(z, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        small().decode(z)


def test_reparameterize_rejects_mismatched_shapes():
    message = (
        "reparameterize: expected mu and logvar of the same shape (..., N), got (2, 3) and (2, 4)"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        reparameterize(torch.zeros(2, 3), torch.zeros(2, 4))


def test_images_on_another_device_are_rejected():
    x = torch.zeros(2, 784, device="meta")
    with pytest.raises(
        ValueError,
        match=re.escape(
            "x: expected a tensor on cpu (the model's), got meta; move it with .to('cpu')"
        ),
    ):
        small().encode(x)
