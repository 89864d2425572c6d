"""Training speed on one device: what chapter 5 teaches, measured, and written to a result file.

Every variant trains the 784-400-20 VAE (`ModelConfig()`) with Adam at lr 1e-3 on the book's
default data: dynamically binarized MNIST, the Bernoulli likelihood. Rows (see the file's notes):

1. classic: a DataLoader over `torchvision.datasets.MNIST(root, transform=ToTensor())`, one PIL
   image at a time, a copy to the device, and `loss.item()` every step, as in pytorch/examples/vae
   (and PyTorch's default Adam, as there);
2. fit: the training pass of `vae_tutorial.train.fit` (`History.train_seconds` of its second
   epoch; loading the data and scoring the test set are not timed), in four versions: float32 or
   bf16 autocast, eager or `torch.compile`. For compiled runs `first_epoch_seconds` includes
   the compilation (a cold cache: a fresh Inductor cache directory per run);
3. floor: the same steps on one fixed batch already on the device: the compute alone;
4. fit at other batch sizes (float32, eager), over the same number of images.

Each variant processes `--steps` batches of 128 (one epoch is 469, the default on a GPU; on a CPU
the default, 100, keeps the run short, and `epoch_seconds` is extrapolated from them). Variants
take turns for `--repeats` rounds, and each row holds its median round: a burst of other work on
the machine slows some rounds, which the median leaves out, and the turns spread a slower stretch
of the machine over every variant alike. The file is rewritten atomically after every measurement
(`complete` is false until every variant has been measured once, and `repeats` in each row says
how many rounds it has), so a run cut short by a time limit still leaves its finished rows.

    python benchmarks/train_speed.py [--device cpu|cuda|mps] [--steps N] [--repeats N]
        [--batch-sizes 32,128,512] [--no-compile] [--out benchmarks/results]

Then `python benchmarks/report.py` writes the new figures into README.md.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from arguments import OneLineParser, int_in, ints_in, usable_device  # beside this file
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import ToTensor

from vae_tutorial.config import ModelConfig, TrainConfig
from vae_tutorial.device import pick_device
from vae_tutorial.download import default_root, ensure_mnist
from vae_tutorial.elbo import elbo_terms, negative_elbo
from vae_tutorial.limits import MNIST_TRAIN
from vae_tutorial.models import build_model
from vae_tutorial.results import CHECKOUT, Result, hardware, write_result
from vae_tutorial.train import fit

LR, TRAIN_IMAGES, BATCH = 1e-3, 60_000, 128
CACHE_VARIABLE = "TORCHINDUCTOR_CACHE_DIR"  # where Inductor keeps compiled kernels between runs
UNITS = {
    "steps": "optimizer steps timed",
    "images": "training images timed",
    "seconds": "s, median round",
    "seconds_fastest": "s, fastest round",
    "seconds_slowest": "s, slowest round",
    "ms_per_step": "ms",
    "images_per_second": "images/s",
    "epoch_seconds": "s per epoch of 60,000 images (extrapolated from the timed steps)",
    "first_epoch_seconds": "s, first epoch of the first round (compilation included)",
}


def _sync(device: torch.device) -> None:
    """Wait for queued device work, so that a timer reads finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def classic(device: torch.device, batch: int, steps: int) -> float:
    """Seconds for `steps` steps of the classic tutorial loop, after 3 untimed ones."""
    torch.manual_seed(0)
    model = build_model(ModelConfig()).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)  # the example's default Adam
    dataset = datasets.MNIST(default_root(), train=True, transform=ToTensor())
    extra = {"num_workers": 1, "pin_memory": True} if device.type == "cuda" else {}
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True, **extra)

    def batches():
        while True:
            yield from loader

    stream, train_loss = batches(), 0.0
    for i in range(3 + steps):
        if i == 3:
            _sync(device)
            start = time.perf_counter()
        data, _ = next(stream)
        x = torch.bernoulli(data.to(device).view(-1, 784))  # (B, 784), binarized like fit's
        optimizer.zero_grad()
        logits, mu, logvar, _ = model(x, check=False)
        loss = negative_elbo(logits, x, mu, logvar, check=False)  # nats per example
        loss.backward()
        train_loss += loss.item()  # a host sync every step
        optimizer.step()
    _sync(device)
    return time.perf_counter() - start


def floor(device: torch.device, batch: int, steps: int) -> float:
    """Seconds for `steps` optimizer steps on one fixed batch on the device, after 3 untimed."""
    torch.manual_seed(0)
    model = build_model(ModelConfig()).to(device)
    fused = device.type in ("cpu", "cuda")  # as fit chooses
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, fused=fused)
    x = torch.bernoulli(torch.rand(batch, 784, generator=torch.Generator().manual_seed(0)))
    x = x.to(device)  # (B, 784)
    for i in range(3 + steps):
        if i == 3:
            _sync(device)
            start = time.perf_counter()
        logits, mu, logvar, _ = model(x, check=False)
        terms = elbo_terms(logits, x, mu, logvar, check=False)
        loss = (terms.kl - terms.reconstruction).mean()  # the same loss as fit computes
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(device)
    return time.perf_counter() - start


def fit_pass(
    device: torch.device, batch: int, images: int, bf16: bool, compile: bool
) -> dict[str, float | bool]:
    """fit for two epochs over `images` images: the second epoch's training pass is timed."""
    config = TrainConfig(
        epochs=2, batch_size=batch, lr=LR, train_size=images, bf16=bf16, compile=compile
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = fit(ModelConfig(), config, device=device, progress=False).history
    said = " ".join(str(w.message) for w in caught)
    return {
        "seconds": history.train_seconds[1],
        "first_epoch_seconds": history.train_seconds[0],
        "compiled": compile and "torch.compile is unavailable" not in said,
        "bf16_used": bf16 and "bf16 is not supported" not in said,
    }


def variants(
    device: torch.device, steps: int, batch_sizes: list[int], with_compile: bool
) -> list[tuple[dict, Callable[[], object]]]:
    """(row keys, measurement) for every variant, cheapest and most telling first."""
    images = steps * BATCH  # every variant sees the same number of images

    def fitted(batch: int, bf16: bool = False, compile: bool = False):
        n = images // batch * batch  # whole batches only: no odd last batch to recompile for
        keys = {"loop": "fit", "batch_size": batch, "precision": "bf16" if bf16 else "fp32"}
        keys |= {"compile": compile, "steps": n // batch, "images": n}
        return keys, lambda: fit_pass(device, batch, n, bf16, compile)

    base = {"batch_size": BATCH, "precision": "fp32", "compile": False}
    steady = {"steps": steps, "images": images}
    out = [
        fitted(BATCH),
        ({"loop": "floor", **base, **steady}, lambda: floor(device, BATCH, steps)),
        ({"loop": "classic", **base, **steady}, lambda: classic(device, BATCH, steps)),
        fitted(BATCH, bf16=True),
    ]
    out += [fitted(b) for b in batch_sizes if b != BATCH]
    if with_compile:
        out += [fitted(BATCH, compile=True), fitted(BATCH, bf16=True, compile=True)]
    return out


def row(keys: dict, runs: list) -> dict:
    """One row of the file from the rounds measured so far."""
    seconds = [r["seconds"] if isinstance(r, dict) else r for r in runs]
    median = statistics.median(seconds)
    out = {**keys, "repeats": len(runs), "seconds": round(median, 4)}
    out["seconds_fastest"] = round(min(seconds), 4)
    out["seconds_slowest"] = round(max(seconds), 4)
    out["ms_per_step"] = round(1000 * median / keys["steps"], 3)
    out["images_per_second"] = round(keys["images"] / median, 1)
    out["epoch_seconds"] = round(TRAIN_IMAGES / (keys["images"] / median), 3)
    if isinstance(runs[0], dict):  # a fit row
        out["first_epoch_seconds"] = round(runs[0]["first_epoch_seconds"], 4)
        out["compiled"] = runs[0]["compiled"]
        out["bf16_used"] = runs[0]["bf16_used"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="benchmarks/train_speed.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device", type=usable_device, default=None, help="cpu, cuda, mps (default: the best)"
    )
    parser.add_argument(
        "--steps",
        type=int_in(1, 10**6),
        default=None,
        help="batches of 128 per variant (469 = one epoch; default: 469 on a GPU, 100 on a CPU)",
    )
    parser.add_argument(
        "--repeats",
        type=int_in(1, 1000),
        default=None,
        help="rounds, the median kept (default: 5 on a CPU, 2)",
    )
    parser.add_argument(
        "--batch-sizes", type=ints_in(1, MNIST_TRAIN), default=[32, 128, 512], help="a,b,c"
    )
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--out", type=Path, default=CHECKOUT, help="folder of result files")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    args.steps = args.steps or (100 if device.type == "cpu" else 469)
    args.repeats = args.repeats or (5 if device.type == "cpu" else 2)  # a shared CPU is noisier
    batch_sizes = sorted(set(args.batch_sizes) | {BATCH})
    ensure_mnist(verbose=False)
    # A cold compiler cache, as on a reader's first run: compile times are not from a warm cache.
    cache, before = tempfile.mkdtemp(prefix="inductor-cache-"), os.environ.get(CACHE_VARIABLE)
    os.environ[CACHE_VARIABLE] = cache

    command = "benchmarks/train_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = Result(
        kind="train_speed",
        command=command.strip(),
        config={
            "model": "784-400-20 MLP VAE (ModelConfig())",
            "data": "MNIST training images, dynamically binarized; Bernoulli likelihood",
            "optimizer": f"Adam, lr {LR:g}: fused in fit and floor, the default in classic",
            "steps_at_batch_128": args.steps,
            "repeats": args.repeats,
            "batch_sizes": batch_sizes,
            "compile": not args.no_compile,
            "cuda_tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        },
        hardware=hardware(device),
        units=UNITS,
        notes=(
            f"Each variant timed {args.steps} steps at batch 128 ({args.steps * BATCH} images; "
            f"one epoch is 469 steps{': a fraction of an epoch' if args.steps < 469 else ''}); "
            "fit rows time the training pass of fit's second epoch (data loading and the test "
            "evaluation excluded); classic and floor time their steps after 3 untimed ones. "
            "Median of the rounds; seconds_fastest and seconds_slowest show the spread."
        ),
    )
    todo = variants(device, args.steps, batch_sizes, not args.no_compile)
    runs: list[list] = [[] for _ in todo]
    floor(device, BATCH, 3)  # warm-up: first-call allocations and kernel selection
    try:
        for round_ in range(args.repeats):
            for (keys, measure), done in zip(todo, runs, strict=True):
                done.append(measure())
                r = row(keys, done)
                print(
                    f"round {round_ + 1}: {r['loop']:7} batch {r['batch_size']:4} "
                    f"{r['precision']} {'compiled' if r['compile'] else 'eager':8} "
                    f"{r['ms_per_step']:8.3f} ms/step {r['images_per_second']:10.0f} images/s",
                    flush=True,
                )
                result.rows = [row(k, d) for (k, _), d in zip(todo, runs, strict=True) if d]
                result.complete = all(runs)  # every variant measured at least once
                path = write_result(result, args.out)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        if before is None:
            os.environ.pop(CACHE_VARIABLE)
        else:
            os.environ[CACHE_VARIABLE] = before
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
