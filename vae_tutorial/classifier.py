"""A small convolutional digit classifier: the instrument that reads which digit an image shows.

Chapter 8 uses it to count how many samples of a conditional VAE are the digit asked for. It is
trained with the cross-entropy (nats per image) on grey MNIST, from a seed, so every run of a
chapter reads samples with the same classifier up to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vae_tutorial import checks


class DigitClassifier(nn.Module):
    """Two 5x5 convolutions with max pooling, then a linear layer: (N, 784) -> logits (N, 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 5),  # (N, 16, 24, 24)
            nn.ReLU(),
            nn.MaxPool2d(2),  # (N, 16, 12, 12)
            nn.Conv2d(16, 32, 5),  # (N, 32, 8, 8)
            nn.ReLU(),
            nn.MaxPool2d(2),  # (N, 32, 4, 4)
            nn.Flatten(),
        )
        self.head = nn.Linear(32 * 4 * 4, 10)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images.reshape(-1, 1, 28, 28)))

    @torch.no_grad()
    def predict(self, images: Tensor, batch_size: int = 1000) -> Tensor:
        """The most probable digit of each image: (N, 784) in [0, 1] -> (N,) int64."""
        _check_images("predict", images)
        self.eval()
        return torch.cat([self(b).argmax(1) for b in images.split(batch_size)])


def _check_images(fn: str, images: object) -> None:
    checks.tensor(f"{fn}: images", images, "(N, 784)")
    if images.ndim != 2 or images.shape[1] != 784 or len(images) == 0:
        raise ValueError(
            f"{fn}: images: expected a tensor (N, 784) with N >= 1, got {tuple(images.shape)}; "
            "flatten 28x28 images with images.reshape(-1, 784)"
        )
    checks.floating(f"{fn}: images", images)


def train_digit_classifier(
    images: Tensor,
    labels: Tensor,
    *,
    epochs: int = 2,
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 1e-3,
) -> DigitClassifier:
    """Adam on the mean cross-entropy -log softmax(f(x))_y over shuffled mini-batches; seeded."""
    _check_images("train_digit_classifier", images)
    checks.tensor("train_digit_classifier: labels", labels, "(N,)")
    if labels.shape != images.shape[:1] or labels.dtype != torch.int64:
        raise ValueError(
            "train_digit_classifier: labels: expected int64 of shape "
            f"({len(images)},), got {labels.dtype} of shape {tuple(labels.shape)}"
        )
    epochs = checks.positive_int("epochs", epochs)
    batch_size = checks.positive_int("batch_size", batch_size)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the initial weights
        model = DigitClassifier().to(images.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator).to(images.device)
        for batch in order.split(batch_size):
            loss = F.cross_entropy(model(images[batch]), labels[batch])  # nats per image
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()
