"""MNIST as tensors on a device: `load_mnist` returns a whole split, `Batches` iterates over it.

The files come from `download.ensure_mnist` (fetched and verified on first use). `Batches` shuffles
and binarizes on the device, without a DataLoader or PIL. Both check their arguments once, up
front (`Batches` reads its images back once, to check they are finite and in [0, 1]), and never
per batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import torch
from torchvision import datasets

from vae_tutorial import checks
from vae_tutorial import device as devices
from vae_tutorial.config import Binarize, TestBinarize
from vae_tutorial.download import default_root, ensure_mnist

# How dynamic binarization draws x ~ Bernoulli(pixel); a model trained with another draw sees
# another random stream, so the draw is part of a cached model's key (cache.config_key).
DYNAMIC_DRAW = "uniform < pixel, 16-bit uniforms on a CPU"


def bernoulli_draw(p: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """x ~ Bernoulli(p), one draw per element of p (values in [0, 1]): x = [u < p], u ~ U(0, 1).

    On a CPU, u takes 16 random bits, u = (m + 1/2) / 2**16 with m uniform on {0, ..., 2**16 - 1},
    so P(x = 1) is p within 2**-17, and exactly 0 or 1 at p = 0 or 1. Four such u come from each
    64-bit draw of the CPU's generator, where torch.rand spends a 32-bit draw on each u: half the
    generator's work. On other devices drawing is cheap (and MPS draws no 64-bit words): u is
    torch.rand's.
    """
    if p.device.type != "cpu":
        return torch.rand(p.shape, device=p.device, generator=generator).lt_(p).to(p.dtype)
    n = p.numel()
    words = torch.empty(-(-n // 4), dtype=torch.int64)  # 64 random bits each, four u per word
    words.random_(-(2**63), None, generator=generator)  # the whole int64 range
    shifted = words.view(torch.int16)[:n].view(p.shape)  # each word as four int16: m - 2**15
    # $x = [\,u < p\,]$, $u = (m + \frac12) / 2^{16}$: compared as $m + \frac12 < 2^{16} p$, exactly
    return shifted.float().add_(2**15 + 0.5).lt_(p.float() * 2**16).to(p.dtype)


def load_mnist(
    split: str = "train",
    *,
    root: str | Path | None = None,
    device: str | torch.device = "cpu",
    flat: bool = True,
    binarize: TestBinarize = "none",
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole split as (images, labels): float32 in [0, 1], (N, 784) or (N, 1, 28, 28); int64 (N,).

    binarize="static" draws one seeded Bernoulli sample x ~ Bernoulli(pixel) on the CPU, the same on
    every device (a fixed binary test set); dynamic binarization is done per pass by `Batches`.
    """
    checks.one_of("split", split, ("train", "test"))
    fix = "dynamic binarization is drawn per pass: Batches(..., binarize='dynamic')"
    checks.one_of("binarize", binarize, get_args(TestBinarize), fix)
    checks.flag("flat", flat)
    seed = checks.int_at_least("seed", seed, 0)
    if not isinstance(device, torch.device):  # a torch.device was resolved by the caller
        device = devices.pick_device(device)  # a clear error for "cuda" on a machine without one
    root = Path(root) if root is not None else default_root()
    ensure_mnist(root, verbose=False)
    mnist = datasets.MNIST(root, train=split == "train", download=False)
    images = mnist.data.to(torch.float32).div_(255.0)  # (N, 28, 28)
    if binarize == "static":
        images = torch.bernoulli(images, generator=torch.Generator().manual_seed(seed))
    images = images.reshape(-1, 784) if flat else images.unsqueeze(1)  # (N, 784) or (N, 1, 28, 28)
    return images.to(device), mnist.targets.to(device)


class Batches:
    """Shuffled mini-batches of tensors on their device: no DataLoader, no PIL, no host copies.

    Under data parallelism (world_size = N > 1) batch_size is the global batch B: every rank draws
    the same shuffled order and binarization, and yields rows rank * B/N .. (rank + 1) * B/N of each
    global batch, so the ranks' shards are disjoint and together are the single-process batches.
    The last partial global batch is dropped (drop_last=True), so every rank takes len() steps.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int = 128,
        *,
        shuffle: bool = True,
        seed: int = 0,
        binarize: Binarize = "none",
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        checks.tensor("images", images, "(N, ...)")
        checks.tensor("labels", labels, "(N,)")
        if images.ndim < 1 or len(images) == 0 or labels.shape != images.shape[:1]:
            raise ValueError(
                "Batches: expected images (N, ...) and labels (N,) with N >= 1, "
                f"got {tuple(images.shape)} and {tuple(labels.shape)}"
            )
        if images.device != labels.device:
            raise ValueError(
                f"Batches: expected images and labels on one device, got {images.device} and "
                f"{labels.device}; move both with .to(device)"
            )
        checks.floating("images", images)
        self.batch_size = checks.positive_int("batch_size", batch_size)
        self.shuffle = checks.flag("shuffle", shuffle)
        self.drop_last = checks.flag("drop_last", drop_last)
        checks.one_of("binarize", binarize, get_args(Binarize))
        self.binarize = binarize
        if drop_last and self.batch_size > len(images):
            raise ValueError(
                f"Batches: expected batch_size <= {len(images)} examples with drop_last=True, "
                f"got {self.batch_size}, which gives no batch at all; lower batch_size"
            )
        self.world_size = checks.positive_int("world_size", world_size)
        self.rank = checks.int_at_least("rank", rank, 0)
        if self.rank >= self.world_size:
            raise ValueError(f"Batches: expected rank < world_size = {world_size}, got rank={rank}")
        if self.batch_size % self.world_size:
            raise ValueError(
                f"Batches: expected a global batch_size divisible by world_size = {world_size} "
                f"(B/N examples per rank), got batch_size={batch_size}; pick a multiple of "
                f"{world_size}, or another number of processes"
            )
        if self.world_size > 1 and not self.drop_last:
            raise ValueError(
                "Batches: expected drop_last=True with world_size > 1, got drop_last=False; a last "
                "partial batch would give the ranks unequal shards"
            )
        # Once, here: a host sync per batch would stall the GPU.
        checks.unit_interval("images", images)
        self.images, self.labels = images, labels
        seed = checks.int_at_least("seed", seed, 0)
        self.generator = torch.Generator(device=images.device).manual_seed(seed)

    def __len__(self) -> int:
        n = self.images.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, device = self.images.shape[0], self.images.device
        if self.shuffle:
            order = torch.randperm(n, device=device, generator=self.generator)
        else:
            order = torch.arange(n, device=device)
        for i in range(len(self)):
            index = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = self.images.index_select(0, index)  # 5x faster than images[index] on a CPU
            if self.binarize == "dynamic":  # a fresh x ~ Bernoulli(pixel) each pass
                x = bernoulli_draw(x, self.generator)
            if self.world_size > 1:  # this rank's rows of the global batch, (B/N, ...)
                local = self.batch_size // self.world_size
                shard = slice(self.rank * local, (self.rank + 1) * local)
                x, index = x[shard], index[shard]
            yield x, self.labels[index]
