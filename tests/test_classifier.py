"""The digit classifier learns: it reads a class that only the image shows, seeded and checked."""

import pytest
import torch

from vae_tutorial.classifier import DigitClassifier, train_digit_classifier

pytestmark = pytest.mark.usefixtures("one_thread")


def bars(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose class c is a bright 3-pixel-wide bar at column 2 + 2.4 c, in noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    images = 0.3 * torch.rand(n, 28, 28, generator=g)
    for i, c in enumerate(labels.tolist()):
        col = 2 + int(2.4 * c)
        images[i, 4:24, col : col + 3] = 1.0
    return images.reshape(n, 784), labels


def test_it_learns_a_class_that_only_the_image_shows():
    x, y = bars(1500, seed=0)
    x_new, y_new = bars(500, seed=1)
    model = train_digit_classifier(x, y, epochs=2, seed=0)
    accuracy = (model.predict(x_new) == y_new).float().mean().item()
    untrained = (DigitClassifier().predict(x_new) == y_new).float().mean().item()
    assert accuracy > 0.95 > untrained


def test_the_same_seed_gives_the_same_classifier():
    x, y = bars(300, seed=0)
    a = train_digit_classifier(x, y, epochs=1, seed=3)
    b = train_digit_classifier(x, y, epochs=1, seed=3)
    c = train_digit_classifier(x, y, epochs=1, seed=4)
    logits = [m(x[:50]) for m in (a, b, c)]
    assert torch.equal(logits[0], logits[1])
    assert not torch.equal(logits[0], logits[2])


def test_predict_gives_one_digit_per_image():
    out = DigitClassifier().predict(torch.rand(7, 784), batch_size=3)
    assert out.shape == (7,) and out.dtype == torch.int64 and out.max() < 10


def test_bad_input_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"\(N, 784\).*reshape"):
        DigitClassifier().predict(torch.rand(5, 28, 28))
    with pytest.raises(ValueError, match="labels: expected int64"):
        train_digit_classifier(torch.rand(4, 784), torch.zeros(4))
    with pytest.raises(ValueError, match="epochs"):
        train_digit_classifier(torch.rand(4, 784), torch.zeros(4, dtype=torch.int64), epochs=0)
