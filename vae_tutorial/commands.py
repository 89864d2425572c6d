"""The three commands of the command line (`cli`): train a model, evaluate and sample a checkpoint.

Each takes the parsed arguments and returns the exit status; a bad argument raises ValueError, a
failure CommandFailed (or the package's own errors), and `cli.main` turns them into one line.
"""

from __future__ import annotations

import argparse
import io
import json
import math
from dataclasses import asdict, fields
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from vae_tutorial import checks, limits, models, resources
from vae_tutorial import device as devices
from vae_tutorial.checkpoint import ensure_writable, load_checkpoint
from vae_tutorial.config import check_run
from vae_tutorial.distributed import join
from vae_tutorial.evaluate import evaluate_elbo, nats_to_bits_per_dim
from vae_tutorial.hierarchical import HierarchicalVAE
from vae_tutorial.hierarchical_scores import evaluate_hierarchical_elbo, hierarchical_dataset_bound
from vae_tutorial.iwae import dataset_bound
from vae_tutorial.labels import CLASSES
from vae_tutorial.models import CVAE, VAE, check_model
from vae_tutorial.plots import INCHES_PER_DIGIT, show_images
from vae_tutorial.resume import open_checkpoint
from vae_tutorial.sampling import sample_prior
from vae_tutorial.test_set import load_test_set
from vae_tutorial.train import fit

PROG = "python -m vae_tutorial"
DPI = 100  # of the PNG grids


class CommandFailed(RuntimeError):
    """A failure that is not a bad argument: exit status 1."""


def write_figure(images: torch.Tensor, path: Path, title: str, nrow: int) -> None:
    """Save a grid of digits as a PNG with a white background."""
    fig = show_images(images, nrow=nrow, title=title)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=DPI, facecolor="white")
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    resources.write_bytes(path, png.getvalue())  # whole, or not at all (a full disk)


def check_grid(name: str, n: int, nrow: int) -> None:
    """A PNG grid of n digits, nrow per row, fits matplotlib's canvas and the RAM: else an error
    before any work (ValueError for the canvas, resources.OutOfMemory for the memory)."""
    rows, cols = -(-n // nrow), min(nrow, n)
    # the figure of `show_images`, in pixels at DPI
    width, height = DPI * (INCHES_PER_DIGIT * cols + 0.4), DPI * (INCHES_PER_DIGIT * rows + 0.6)
    most = int((limits.CANVAS / DPI - 0.6) / INCHES_PER_DIGIT)  # digits a side
    if max(width, height) > limits.CANVAS:
        raise ValueError(
            f"{name}: expected a grid of at most {most} digits a side ({limits.CANVAS} pixels, "
            f"matplotlib's limit), got {rows} rows of {cols}; use --n <= {most * min(nrow, most)}"
            f" with --nrow <= {most}"
        )
    # the RGBA canvas, its resampled image and the PNG's rows; make_grid's 3 float32 channels
    needed = 3 * 4 * width * height + 3 * resources.FLOAT32 * (30 * rows) * (30 * cols)
    resources.check_fits(name, needed, "cpu", "draw fewer samples (--n)")


def _json(metrics: dict) -> str:
    """Strict JSON (no NaN or Infinity, which JSON does not have)."""
    return json.dumps(metrics, indent=2, allow_nan=False) + "\n"


def train(args: argparse.Namespace) -> int:
    """Fit a model; write checkpoint.pt, metrics.json and samples.png into --out."""
    model_class, train_class = args.configs  # ModelConfig and TrainConfig, or a test's own
    model_config = model_class(**{f.name: getattr(args, f.name) for f in fields(model_class)})
    options = {f.name: getattr(args, f.name) for f in fields(train_class) if hasattr(args, f.name)}
    model_config, train_config = check_run(model_config, train_class(**options))
    check_grid("--samples", args.samples, 8 if model_config.kind != "cvae" else CLASSES)
    name = args.name or f"{args.kind}-{args.arch}-z{args.latent_dim}"
    out = Path("runs") / name if args.out is None else args.out
    device = devices.pick_device(args.device)  # a missing GPU: a bad argument, before any file
    world = join(device, backend=args.backend)  # under torchrun: this process's rank of N
    flags = ("--resume", "--overwrite")
    checkpoint, _ = world.from_main(  # rank 0 looks at its disk; fit reads the checkpoint
        lambda: open_checkpoint(
            out / "checkpoint.pt", False, args.resume or args.overwrite, name="--out", flags=flags
        )
    )
    result = fit(
        model_config,
        train_config,
        world=world,
        checkpoint_path=checkpoint,
        resume=args.resume,
        overwrite=args.overwrite,
        data_root=args.data_root,
    )
    if not world.is_main:  # rank 0 writes metrics.json and samples.png
        return 0
    history = result.history
    test = None
    if history.epochs_done:
        test = {
            "neg_elbo_nats": history.test_neg_elbo[-1],
            "reconstruction_nats": history.test_reconstruction[-1],
            "kl_nats": history.test_kl[-1],
            "bits_per_dim": nats_to_bits_per_dim(history.test_neg_elbo[-1]),
            "likelihood": history.test_likelihood,  # scored on the model's own terms
            "test_data": history.test_data,
        }
    metrics = {
        "name": name,
        "device": str(next(result.model.parameters()).device),
        "seconds": result.seconds,
        "model_config": asdict(model_config),
        "train_config": asdict(train_config),
        "test": test,
        "history": history.to_dict(),
        "distributed": result.world.record(),  # world size, nodes, backend, where each rank ran
    }
    resources.write_bytes(out / "metrics.json", _json(metrics).encode())
    labels = _sample_labels(result.model, args.samples, None)  # a CVAE: digits 0..9 in turn
    samples = sample_prior(result.model, args.samples, labels=labels, seed=args.seed)  # E[x|z]
    title = f"{name}: decoded z ~ N(0, I)" + ("" if labels is None else ", y = 0..9 by column")
    write_figure(samples, out / "samples.png", title, nrow=8 if labels is None else CLASSES)
    if test is None:
        summary = f"0 epochs: the untrained model (score it with `{PROG} evaluate`)"
    else:
        summary = f"test -ELBO {test['neg_elbo_nats']:.2f} nats per example"
    if result.world.size > 1:
        summary += f", trained by {result.world.size} processes on {result.world.nodes} node(s)"
    print(f"{name}: {summary}; wrote checkpoint.pt, metrics.json, samples.png to {out}")
    return 0


def evaluate(args: argparse.Namespace) -> int:
    """Score a checkpoint on its own terms: -ELBO, bits/dim, and -L_k with --k.

    With the likelihood it was trained with, on the test images it models (grey, or binarized).
    """
    device = devices.pick_device(args.device)
    saved = load_checkpoint(args.checkpoint, device)
    model, config = saved.model, saved.train_config
    fix = "an autoencoder has no ELBO (its samples: `sample`)"
    served = checks.model_kind("evaluate", model, (VAE, CVAE, HierarchicalVAE), fix)
    hierarchical = served is HierarchicalVAE  # two stochastic layers: their own scores
    models.check_weights("evaluate", model)  # the one weights check: the scores below skip theirs
    if args.out is not None:
        ensure_writable(args.out, "--out")
    images, test_labels = load_test_set(config, root=args.data_root, device=device)
    labels = test_labels if model.conditional else None  # a CVAE bounds log p(x|y)
    if hierarchical:
        scores = evaluate_hierarchical_elbo(model, images, seed=args.seed)
    else:
        scores = evaluate_elbo(model, images, labels=labels, seed=args.seed, check=False)
    metrics = {
        "checkpoint": str(args.checkpoint),
        "bound_on": "log p(x)" if labels is None else "log p(x|y)",
        "likelihood": model.config.likelihood,
        "test_data": config.test_data,
        "test_images": len(images),
        "neg_elbo_nats": scores["neg_elbo"],
        "reconstruction_nats": scores["reconstruction"],
        "kl_nats": scores["kl"],
        "bits_per_dim": scores["bits_per_dim"],
    }
    if args.k is not None:
        subset = images[: args.iwae_images]  # L_k costs k decoder passes per image
        subset_labels = None if labels is None else labels[: len(subset)]
        if hierarchical:
            bounds = hierarchical_dataset_bound(
                model, subset, args.k, seed=args.seed, progress=True
            )
        else:
            bounds = dataset_bound(
                model,
                subset,
                args.k,
                labels=subset_labels,
                seed=args.seed,
                check=False,
                progress=True,  # on a terminal: a bar with the time left
            )
        neg_bound = -bounds.mean().item()  # $-\mathcal L_k \ge -\log p(x)$
        metrics.update(
            iwae_k=args.k,
            iwae_images=len(subset),
            neg_iwae_bound_nats=neg_bound,
            iwae_bits_per_dim=nats_to_bits_per_dim(neg_bound),
        )
    bad = [f"{k}={v}" for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise CommandFailed(
            f"evaluate: expected finite scores, got {', '.join(bad)}; "
            "the model's outputs overflow: use an earlier checkpoint or train again"
        )
    text = _json(metrics)
    print(text, end="")
    if args.out is not None:
        resources.write_bytes(args.out, text.encode())
    return 0


def _sample_labels(model: torch.nn.Module, n: int, chosen: list[int] | None) -> torch.Tensor | None:
    """The digit of each of n samples: None for an unconditional model; for a CVAE the chosen
    digits in turn (default 0..9). Chosen digits for an unconditional model: ValueError."""
    conditional = model.conditional
    if chosen is not None and not conditional:
        raise ValueError(
            f"--label: expected a conditional model (kind 'cvae'), got kind="
            f"{model.config.kind!r}, which takes no label; drop --label, or train --kind cvae"
        )
    if not conditional:
        return None
    digits = torch.tensor(list(range(CLASSES)) if chosen is None else chosen)  # (L,)
    device = next(model.parameters()).device
    return digits.repeat(-(-n // len(digits)))[:n].to(device)  # (n,), the digits in turn


def sample(args: argparse.Namespace) -> int:
    """Decode z ~ N(0, I) from a checkpoint's model into a PNG grid; a CVAE's digits: --label.

    The pixels are the mean image E[x|z] of the model's likelihood.
    """
    check_grid("--n", args.n, args.nrow)
    model = load_checkpoint(args.checkpoint, devices.pick_device(args.device)).model
    labels = _sample_labels(model, args.n, args.label)
    if isinstance(model, HierarchicalVAE):
        models.check_weights("sample", model)  # the one weights check: sample_prior skips its
    else:
        check_model("sample", model, vae=False)  # the one weights check: sample_prior skips its
    ensure_writable(args.out, "--out")
    samples = sample_prior(model, args.n, labels=labels, seed=args.seed, check=False)
    title = f"Samples from {args.checkpoint.parent.name}"
    if labels is not None:
        title += f", y = {', '.join(map(str, args.label or range(CLASSES)))} in turn"
    write_figure(samples, args.out, title, args.nrow)
    print(f"wrote {args.n} samples to {args.out}")
    return 0
