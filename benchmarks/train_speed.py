"""One epoch of MNIST training three ways, on one device: the classic loop, `fit`, the floor.

All three train the 784-400-20 VAE (`ModelConfig()`) on the 60,000 training images with batch 128
and Adam at lr 1e-3, with the same loss: the grey-level BCE of the classic PyTorch example
(`likelihood="continuous_bce"`, `binarize="none"`), so what differs is the data pipeline, the loop
and the Adam kernel (fit uses `fused=True`, the classic example the default).

1. classic: a DataLoader over `torchvision.datasets.MNIST(root, transform=ToTensor())`, one PIL
   image at a time, and `loss.item()` every step, as in pytorch/examples/vae;
2. fit: `vae_tutorial.train.fit` for one epoch. Timed: its training pass (`History.train_seconds`);
   loading the data before it and the test evaluation after it are reported on separate rows;
3. floor: the same number of optimizer steps (ceil(60000 / 128) = 469) on one fixed batch already
   on the device: the compute alone.

Each is run --repeats times, interleaved, and the best time is kept (the least disturbed by other
processes). A fourth row, not in the JSON, times fit with the book's default dynamic binarization.
Prints a table and, as its last line, one JSON object.

    python benchmarks/train_speed.py [--device cpu] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import ToTensor

from vae_tutorial.data import default_root, ensure_mnist
from vae_tutorial.elbo import elbo_terms, negative_elbo
from vae_tutorial.models import ModelConfig, build_model
from vae_tutorial.train import TrainConfig, fit, pick_device

BATCH, LR, TRAIN_IMAGES = 128, 1e-3, 60_000
STEPS = math.ceil(TRAIN_IMAGES / BATCH)  # 469
LOSS = "continuous_bce"  # the classic example's loss, used by all three


def _sync(device: torch.device) -> None:
    """Wait for queued device work, so that a timer reads finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _model_and_optimizer(
    device: torch.device, fused: bool
) -> tuple[torch.nn.Module, torch.optim.Adam]:
    """The 784-400-20 VAE, seeded, and Adam at lr 1e-3 (fused as in fit, or the default)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig()).to(device)
    return model, torch.optim.Adam(model.parameters(), lr=LR, fused=fused)


def classic_loop(device: torch.device) -> float:
    """Seconds for one epoch of the classic tutorial loop (pytorch/examples/vae)."""
    model, optimizer = _model_and_optimizer(device, fused=False)  # the example's default Adam
    dataset = datasets.MNIST(default_root(), train=True, transform=ToTensor())
    extra = {"num_workers": 1, "pin_memory": True} if device.type == "cuda" else {}
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, **extra)
    train_loss = 0.0
    start = time.perf_counter()
    for data, _ in loader:
        data = data.to(device).view(-1, 784)  # (B, 784)
        optimizer.zero_grad()
        logits, mu, logvar, _ = model(data, check=False)
        loss = negative_elbo(logits, data, mu, logvar, likelihood=LOSS, check=False)
        loss.backward()
        train_loss += loss.item()  # a host sync every step
        optimizer.step()
    return time.perf_counter() - start


def fit_epoch(device: torch.device, binarize: str = "none") -> dict[str, float]:
    """fit for one epoch: its training pass, its test evaluation and the whole call, in seconds."""
    likelihood = LOSS if binarize == "none" else "bernoulli"
    config = TrainConfig(
        epochs=1, batch_size=BATCH, lr=LR, binarize=binarize, likelihood=likelihood
    )
    start = time.perf_counter()
    history = fit(ModelConfig(), config, device=device, progress=False).history
    total = time.perf_counter() - start
    train, test = history.train_seconds[0], history.test_seconds[0]
    return {"train": train, "test": test, "setup": total - train - test, "total": total}


def floor(device: torch.device) -> float:
    """Seconds for STEPS optimizer steps on one fixed batch already on the device."""
    fused = device.type in ("cpu", "cuda")  # as fit chooses
    model, optimizer = _model_and_optimizer(device, fused)
    x = torch.rand(BATCH, 784, generator=torch.Generator().manual_seed(0)).to(device)  # (B, 784)
    _sync(device)
    start = time.perf_counter()
    for _ in range(STEPS):
        logits, mu, logvar, _ = model(x, check=False)
        terms = elbo_terms(logits, x, mu, logvar, likelihood=LOSS, check=False)
        loss = (terms.kl - terms.reconstruction).mean()  # the same loss as fit computes
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(device)
    return time.perf_counter() - start


def _describe(device: torch.device) -> str:
    """The device in words, for the record."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    cores = os.cpu_count()
    name = platform.processor() or platform.machine()
    return f"{device.type} ({name}, {cores} cores, {torch.get_num_threads()} torch threads)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: auto)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each, best kept")
    args = parser.parse_args()
    device = pick_device(args.device)
    ensure_mnist(verbose=False)
    floor(device)  # warm-up: first-call allocations and kernel selection are not timed

    runs: dict[str, list] = {"classic": [], "fit": [], "floor": [], "fit_dynamic": []}
    measures: dict[str, Callable[[], object]] = {
        "classic": lambda: classic_loop(device),
        "fit": lambda: fit_epoch(device),
        "floor": lambda: floor(device),
        "fit_dynamic": lambda: fit_epoch(device, binarize="dynamic"),
    }
    for _ in range(args.repeats):
        for name, measure in measures.items():
            runs[name].append(measure())
    classic = min(runs["classic"])
    fitted = min(runs["fit"], key=lambda r: r["train"])
    dynamic = min(runs["fit_dynamic"], key=lambda r: r["train"])
    floor_s = min(runs["floor"])

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"device: {_describe(device)}; best of {args.repeats}; 1-min load average {load:.2f}")
    print(f"one epoch = {TRAIN_IMAGES} images, {STEPS} steps of batch {BATCH}, Adam lr {LR:g}")
    rows = [
        ("classic DataLoader loop, .item() each step", classic, ""),
        ("fit, training pass (timed)", fitted["train"], "binarize='none', as classic"),
        ("  fit, data loading before it (not timed)", fitted["setup"], ""),
        ("  fit, test evaluation after it (not timed)", fitted["test"], "10,000 images"),
        ("  fit, whole call", fitted["total"], ""),
        ("floor: same steps on one fixed batch", floor_s, ""),
        ("fit, book default (info)", dynamic["train"], "binarize='dynamic', bernoulli"),
    ]
    print(f"{'':45} {'seconds':>8} {'steps/s':>8}")
    for label, seconds, note in rows:
        rate = f"{STEPS / seconds:8.0f}" if not label.startswith("  ") else " " * 8
        print(f"{label:45} {seconds:8.2f} {rate}  {note}")
    result = {
        "device": _describe(device),
        "seed_loop_s": round(classic, 3),
        "fit_s": round(fitted["train"], 3),
        "floor_s": round(floor_s, 3),
        "speedup_vs_seed_loop": round(classic / fitted["train"], 2),
        "fit_over_floor": round(fitted["train"] / floor_s, 3),
    }
    print(
        f"fit is {result['speedup_vs_seed_loop']}x faster than the classic loop "
        f"and {result['fit_over_floor']}x the floor"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
