"""MNIST as on-device tensors: whole splits, static and dynamic binarization, Batches."""

import math
import re
import struct

import numpy as np
import pytest
import torch

from vae_tutorial.data import Batches, load_mnist
from vae_tutorial.download import default_root


def test_load_mnist_returns_the_whole_split():
    images, labels = load_mnist("train")
    assert images.shape == (60_000, 784) and images.dtype == torch.float32
    assert labels.shape == (60_000,) and labels.dtype == torch.int64
    assert images.min() == 0 and images.max() == 1
    assert torch.bincount(labels).tolist()[:2] == [5923, 6742]  # the official class counts
    test_images, test_labels = load_mnist("test", flat=False)
    assert test_images.shape == (10_000, 1, 28, 28)
    # The same pixels and labels as the raw IDX files, read here by hand: a big-endian header
    # (magic number 2051 or 2049, count, rows, columns), then one unsigned byte per value.
    raw = default_root() / "MNIST" / "raw"
    pixels = (raw / "t10k-images-idx3-ubyte").read_bytes()
    assert struct.unpack(">4i", pixels[:16]) == (2051, 10_000, 28, 28)
    digits = np.frombuffer(pixels, dtype=np.uint8, offset=16).reshape(10_000, 1, 28, 28)
    assert np.array_equal(test_images.numpy(), digits.astype(np.float32) / np.float32(255))
    targets = (raw / "t10k-labels-idx1-ubyte").read_bytes()
    assert struct.unpack(">2i", targets[:8]) == (2049, 10_000)
    assert test_labels.tolist() == list(targets[8:])


def test_static_binarization_is_one_seeded_sample():
    first, _ = load_mnist("test", binarize="static", seed=3)
    again, _ = load_mnist("test", binarize="static", seed=3)
    other, _ = load_mnist("test", binarize="static", seed=4)
    grey, _ = load_mnist("test")
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert set(first.unique().tolist()) == {0.0, 1.0}
    assert (first[grey == 0] == 0).all() and (first[grey == 1] == 1).all()
    # Each pixel is Bernoulli(grey): the mean matches within 5 standard errors.
    n = grey.numel()
    assert abs(first.mean() - grey.mean()) < 5 * (0.25 / n) ** 0.5


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"split": "valid"}, "split: expected one of ('train', 'test'), got 'valid'"),
        (
            {"binarize": "dynamic"},
            "binarize: expected one of ('none', 'static'), got 'dynamic'; "
            "dynamic binarization is drawn per pass",
        ),
        ({"seed": True}, "seed: expected an int >= 0, got True (a bool)"),
        ({"seed": -1}, "seed: expected an int >= 0, got -1"),
        ({"flat": "yes"}, "flat: expected True or False, got 'yes' (a str)"),
        ({"device": "gpu"}, "device: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got 'gpu'"),
    ],
)
def test_load_mnist_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_mnist(**kwargs)


def test_load_mnist_on_a_missing_gpu_says_which_devices_there_are(monkeypatch):
    """Not the raw driver error: the devices this machine has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    message = "device: expected an available device (cpu"
    with pytest.raises(ValueError, match=re.escape(message)):
        load_mnist("test", device="cuda")


def labelled(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (n, 1) whose one pixel is label / n, so every batch shows which examples it holds."""
    labels = torch.arange(n)
    return (labels.float() / n)[:, None], labels


def order(batches: Batches) -> list[int]:
    """The labels of one pass, in order, after checking every image travelled with its label."""
    seen = []
    for x, y in batches:
        assert torch.equal(x[:, 0], y.float() / len(batches.labels))
        seen += y.tolist()
    return seen


def test_batches_visit_every_example_once_per_pass_in_a_seeded_order():
    images, labels = labelled(100)
    batches = Batches(images, labels, batch_size=32, seed=1)
    assert len(batches) == 4
    first, second = order(batches), order(batches)
    assert sorted(first) == sorted(second) == list(range(100))  # a permutation, every pass
    assert first != second and first != list(range(100))  # reshuffled each pass
    assert order(Batches(images, labels, batch_size=32, seed=1)) == first  # the same seed
    assert order(Batches(images, labels, batch_size=32, seed=2)) != first  # another seed
    assert len(Batches(images, labels, batch_size=32, drop_last=True)) == 3
    assert order(Batches(images, labels, 32, shuffle=False)) == list(range(100))


def test_batches_check_the_images_once_not_per_batch(monkeypatch):
    """No host sync per batch: iterating never reads a tensor's value back to Python."""
    images, labels = labelled(50)
    batches = Batches(images, labels, batch_size=8, binarize="dynamic")

    def no_sync(*args, **kwargs):
        raise AssertionError("a host sync inside the batch loop")

    for name in ("__bool__", "item", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, no_sync)
    assert sum(len(x) for x, _ in batches) == 50


def test_dynamic_binarization_draws_a_fresh_sample_each_pass():
    grey = torch.full((2000, 784), 0.3)
    batches = Batches(grey, torch.zeros(2000, dtype=torch.int64), 2000, binarize="dynamic")
    (first, _), (second, _) = next(iter(batches)), next(iter(batches))
    assert set(first.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(first, second)
    n = first.numel()
    assert abs(first.mean() - 0.3) < 5 * (0.3 * 0.7 / n) ** 0.5


def test_dynamic_binarization_keeps_each_pixel_probability():
    """Column j of p = j/10 is binarized to mean p_j (within 5 standard errors), 0 and 1 exactly."""
    p = torch.linspace(0, 1, 11).expand(4000, 11).contiguous()
    batches = Batches(p, torch.zeros(4000, dtype=torch.int64), 4000, binarize="dynamic", seed=3)
    x, _ = next(iter(batches))
    assert x.dtype == p.dtype and set(x.unique().tolist()) <= {0.0, 1.0}
    se = (p[0] * (1 - p[0]) / len(x)).sqrt()
    assert ((x.mean(0) - p[0]).abs() <= 5 * se).all()
    labels = torch.zeros(4000, dtype=torch.int64)
    again, _ = next(iter(Batches(p, labels, 4000, binarize="dynamic", seed=3)))
    assert torch.equal(x, again)


def test_dynamic_binarization_draws_every_pixel_independently():
    """Neighbouring pixels, which share a 64-bit random word on a CPU, are uncorrelated, and a shape
    whose size is no multiple of 4 is drawn whole."""
    p, labels = torch.full((20_000, 7), 0.5), torch.zeros(20_000, dtype=torch.int64)
    x, _ = next(iter(Batches(p, labels, 20_000, binarize="dynamic")))
    assert x.shape == p.shape and set(x.unique().tolist()) == {0.0, 1.0}
    assert ((x.mean(0) - 0.5).abs() <= 5 * (0.25 / len(x)) ** 0.5).all()
    corr = torch.corrcoef(x.T)  # (7, 7): pixel j against pixel k over 20,000 draws
    assert (corr - torch.eye(7)).abs().max() < 5 / len(x) ** 0.5


def with_value(value: float) -> torch.Tensor:
    images = torch.zeros(3, 2)
    images[1, 1] = value
    return images


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        (
            (torch.zeros(3, 2), torch.zeros(4)),
            {},
            "Batches: expected images (N, ...) and labels (N,) with N >= 1, got (3, 2) and (4,)",
        ),
        (
            (torch.zeros(0, 2), torch.zeros(0)),
            {},
            "Batches: expected images (N, ...) and labels (N,) with N >= 1, got (0, 2) and (0,)",
        ),
        (([[0.0]], torch.zeros(1)), {}, "images: expected a torch.Tensor (N, ...), got [[0.0]]"),
        (
            (torch.zeros(3, 2, dtype=torch.uint8), torch.zeros(3)),
            {},
            "images: expected a floating-point tensor, got dtype torch.uint8; "
            "convert uint8 images with x.float() / 255",
        ),
        (
            (torch.zeros(3, 2), torch.zeros(3, device="meta")),
            {},
            "Batches: expected images and labels on one device, got cpu and meta",
        ),
        (
            (torch.zeros(3, 2), torch.zeros(3)),
            {"batch_size": 0},
            "batch_size: expected an int >= 1, got 0",
        ),
        (
            (torch.zeros(3, 2), torch.zeros(3)),
            {"batch_size": True},
            "batch_size: expected an int >= 1, got True (a bool)",
        ),
        (
            (torch.zeros(3, 2), torch.zeros(3)),
            {"batch_size": 2.5},
            "batch_size: expected an int >= 1, got 2.5 (a float)",
        ),
        (
            (torch.zeros(3, 2), torch.zeros(3)),
            {"binarize": "static"},
            "binarize: expected one of ('none', 'dynamic'), got 'static'",
        ),
        (
            (torch.zeros(3, 2), torch.zeros(3)),
            {"shuffle": "yes"},
            "shuffle: expected True or False, got 'yes' (a str)",
        ),
        (
            (torch.zeros(3, 2), torch.zeros(3)),
            {"seed": 1.5},
            "seed: expected an int >= 0, got 1.5 (a float)",
        ),
        (
            (torch.zeros(3, 2), torch.zeros(3)),
            {"batch_size": 4, "drop_last": True},
            "Batches: expected batch_size <= 3 examples with drop_last=True, got 4, "
            "which gives no batch at all",
        ),
        (
            (with_value(math.nan), torch.zeros(3)),
            {},
            "images: expected finite values, got 1 non-finite (first: nan)",
        ),
        (
            (with_value(1.5), torch.zeros(3)),
            {"binarize": "dynamic"},
            "images: expected values in [0, 1], got min 0, max 1.5; "
            "scale uint8 images with x.float() / 255",
        ),
        (
            (with_value(-0.1), torch.zeros(3)),
            {},
            "images: expected values in [0, 1], got min -0.1, max 0",
        ),
    ],
)
def test_batches_reject_bad_arguments(args, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Batches(*args, **kwargs)
