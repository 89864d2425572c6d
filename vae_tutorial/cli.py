"""The command line: train a model, evaluate a checkpoint, draw samples.

    python -m vae_tutorial train --epochs 10 --latent-dim 20      # -> runs/vae-mlp-z20/
    python -m vae_tutorial evaluate runs/vae-mlp-z20/checkpoint.pt --k 100
    python -m vae_tutorial sample runs/vae-mlp-z20/checkpoint.pt --n 64 --out samples.png

`train` writes checkpoint.pt, metrics.json and samples.png into --out. A bad argument, including a
missing checkpoint file, gives one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import NoReturn

import matplotlib.pyplot as plt
import torch

from vae_tutorial.data import MNISTUnavailable, load_mnist
from vae_tutorial.evaluate import evaluate_elbo, importance_weighted_bound, nats_to_bits_per_dim
from vae_tutorial.models import VAE, ModelConfig
from vae_tutorial.plots import show_images
from vae_tutorial.sampling import sample_prior
from vae_tutorial.train import (
    TEST_SEED,
    TrainConfig,
    TrainingDiverged,
    fit,
    load_checkpoint,
)

PROG = "python -m vae_tutorial"
IWAE_BATCH = 100  # test images per importance_weighted_bound call


class _Parser(argparse.ArgumentParser):
    """argparse with errors on one line: `prog: error: message (see prog --help)`."""

    def error(self, message: str) -> NoReturn:
        message = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _checkpoint_file(text: str) -> Path:
    """An argparse type: a path to an existing checkpoint file."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"expected a checkpoint file, got {text!r} (no such file)")
    return path


def _write_figure(images: torch.Tensor, path: Path, title: str, nrow: int) -> None:
    """Save a grid of digits as a PNG with a white background."""
    fig = show_images(images, nrow=nrow, title=title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, facecolor="white")
    plt.close(fig)


def _write_json(metrics: dict, path: Path | None) -> None:
    """Print metrics as JSON, and write them to path if given."""
    text = json.dumps(metrics, indent=2)
    print(text)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")


def train(args: argparse.Namespace) -> int:
    """Fit a model; write checkpoint.pt, metrics.json and samples.png into --out."""
    model_config = ModelConfig(args.kind, args.arch, args.latent_dim, args.hidden_dim)
    train_config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        beta=args.beta,
        warmup_epochs=args.warmup_epochs,
        binarize=args.binarize,
        likelihood=args.likelihood,
        train_size=args.train_size,
        bf16=args.bf16,
        compile=args.compile,
    )
    name = args.name or f"{args.kind}-{args.arch}-z{args.latent_dim}"
    out = Path("runs") / name if args.out is None else args.out
    result = fit(
        model_config,
        train_config,
        device=args.device,
        checkpoint_path=out / "checkpoint.pt",
        resume=args.resume,
        data_root=args.data_root,
    )
    history = result.history
    test = None
    if history.epochs_done:
        test = {
            "neg_elbo_nats": history.test_neg_elbo[-1],
            "reconstruction_nats": history.test_reconstruction[-1],
            "kl_nats": history.test_kl[-1],
            "bits_per_dim": nats_to_bits_per_dim(history.test_neg_elbo[-1]),
        }
    metrics = {
        "name": name,
        "device": str(next(result.model.parameters()).device),
        "seconds": result.seconds,
        "model_config": asdict(model_config),
        "train_config": asdict(train_config),
        "test": test,
        "history": history.to_dict(),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    samples = sample_prior(result.model, args.samples, seed=args.seed)  # (n, 784)
    _write_figure(samples, out / "samples.png", f"{name}: decoded z ~ N(0, I)", nrow=8)
    summary = "no epochs run" if test is None else f"test -ELBO {test['neg_elbo_nats']:.2f} nats"
    print(f"{name}: {summary}; wrote checkpoint.pt, metrics.json, samples.png to {out}")
    return 0


def evaluate(args: argparse.Namespace) -> int:
    """Score a checkpoint on the binarized test set: -ELBO, bits/dim, and -L_k with --k."""
    model = load_checkpoint(args.checkpoint, args.device).model
    if not isinstance(model, VAE):
        raise ValueError(f"evaluate: expected a VAE checkpoint, got kind={model.config.kind!r}")
    device = next(model.parameters()).device
    images, _ = load_mnist(
        "test", root=args.data_root, device=device, binarize="static", seed=TEST_SEED
    )
    scores = evaluate_elbo(model, images, seed=args.seed)
    metrics = {
        "checkpoint": str(args.checkpoint),
        "test_images": len(images),
        "neg_elbo_nats": scores["neg_elbo"],
        "reconstruction_nats": scores["reconstruction"],
        "kl_nats": scores["kl"],
        "bits_per_dim": scores["bits_per_dim"],
    }
    if args.k is not None:
        generator = torch.Generator(device=device).manual_seed(args.seed)
        subset = images[: args.iwae_images]  # L_k costs k decoder passes per image
        bounds = [
            importance_weighted_bound(model, x, args.k, generator=generator)  # (batch,)
            for x in subset.split(IWAE_BATCH)
        ]
        neg_bound = -torch.cat(bounds).mean().item()  # $-\mathcal L_k \ge -\log p(x)$
        metrics.update(
            iwae_k=args.k,
            iwae_images=len(subset),
            neg_iwae_bound_nats=neg_bound,
            iwae_bits_per_dim=nats_to_bits_per_dim(neg_bound),
        )
    _write_json(metrics, args.out)
    return 0


def sample(args: argparse.Namespace) -> int:
    """Decode z ~ N(0, I) from a checkpoint's model into a PNG grid."""
    model = load_checkpoint(args.checkpoint, args.device).model
    samples = sample_prior(model, args.n, seed=args.seed)  # (n, 784)
    _write_figure(samples, args.out, f"Samples from {args.checkpoint.parent.name}", args.nrow)
    print(f"wrote {args.n} samples to {args.out}")
    return 0


def _positive(text: str) -> int:
    """An argparse type: an int >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The parser with its three subcommands."""
    parser = _Parser(prog=PROG, description="Train, evaluate and sample VAEs on MNIST.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shared = _Parser(add_help=False)
    shared.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: auto)")
    shared.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="MNIST folder (default: data/ or $VAE_TUTORIAL_DATA)",
    )
    shared.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")

    t = commands.add_parser(
        "train", parents=[shared], help="train a model", description=train.__doc__
    )
    t.add_argument("--name", help="run name (default: KIND-ARCH-zLATENT)")
    t.add_argument("--out", type=Path, help="output folder (default: runs/NAME)")
    t.add_argument("--kind", choices=("vae", "ae"), default="vae", help="default: %(default)s")
    t.add_argument("--arch", choices=("mlp", "conv"), default="mlp", help="default: %(default)s")
    t.add_argument("--latent-dim", type=int, default=20, help="D, the size of z: %(default)s")
    t.add_argument("--hidden-dim", type=int, default=400, help="H, hidden width: %(default)s")
    t.add_argument("--epochs", type=int, default=10, help="default: %(default)s")
    t.add_argument("--batch-size", type=int, default=128, help="default: %(default)s")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate: %(default)s")
    t.add_argument("--beta", type=float, default=1.0, help="KL weight, 1 = the ELBO: %(default)s")
    t.add_argument("--warmup-epochs", type=int, default=0, help="KL warm-up epochs (0 = off)")
    t.add_argument(
        "--binarize", choices=("dynamic", "none"), default="dynamic", help="default: %(default)s"
    )
    t.add_argument(
        "--likelihood",
        choices=("bernoulli", "continuous_bce"),
        default="bernoulli",
        help="%(default)s",
    )
    t.add_argument("--train-size", type=int, default=None, help="use the first N training images")
    t.add_argument("--bf16", action="store_true", help="bfloat16 autocast where supported")
    t.add_argument("--compile", action="store_true", help="torch.compile where it works")
    t.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.pt")
    t.add_argument("--samples", type=_positive, default=64, help="samples in samples.png")
    t.set_defaults(run=train, parser=t)

    e = commands.add_parser(
        "evaluate", parents=[shared], help="score a checkpoint", description=evaluate.__doc__
    )
    e.add_argument("checkpoint", type=_checkpoint_file)
    e.add_argument("--k", type=_positive, default=None, help="importance samples for L_k")
    e.add_argument("--iwae-images", type=_positive, default=1000, help="test images for L_k")
    e.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    e.set_defaults(run=evaluate, parser=e)

    s = commands.add_parser(
        "sample", parents=[shared], help="draw samples", description=sample.__doc__
    )
    s.add_argument("checkpoint", type=_checkpoint_file)
    s.add_argument("--n", type=_positive, default=64, help="number of samples")
    s.add_argument("--nrow", type=_positive, default=8, help="samples per row")
    s.add_argument("--out", type=Path, default=Path("samples.png"), help="PNG file")
    s.set_defaults(run=sample, parser=s)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; bad arguments exit with status 2, training failures with 1."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as error:
        args.parser.error(str(error))
    except (TrainingDiverged, MNISTUnavailable) as error:
        print(f"{args.parser.prog}: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
