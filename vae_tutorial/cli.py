"""The command line: train a model, evaluate a checkpoint, draw samples.

    python -m vae_tutorial train --epochs 10 --latent-dim 20      # -> runs/vae-mlp-z20/
    python -m vae_tutorial evaluate runs/vae-mlp-z20/checkpoint.pt --k 100
    python -m vae_tutorial sample runs/vae-mlp-z20/checkpoint.pt --n 64 --out samples.png

`train` writes checkpoint.pt, metrics.json and samples.png into --out; a folder that already holds a
checkpoint is refused unless --resume continues it or --overwrite replaces it. `--epochs 0` writes
the untrained model. Every output path is checked for writing before any work starts.

    python -m vae_tutorial train --kind cvae                      # -> runs/cvae-mlp-z20/
    python -m vae_tutorial sample runs/cvae-mlp-z20/checkpoint.pt --label 3 7 --out 37.png

A conditional VAE (`--kind cvae`) is evaluated on the test labels (its bound is on log p(x|y)), and
samples the digits --label names, in turn (0..9 without it); --label for any other kind is refused.

    torchrun --nproc_per_node=2 -m vae_tutorial train --device cpu    # 2 processes, one model

Under torchrun, --batch-size is the global batch (split among the ranks) and rank 0 writes the
files; metrics.json records the world size, the nodes and where each rank ran (`distributed`).

Every mistake ends in one line on stderr saying what was expected, what came and what to do: exit
status 2 for a bad argument (a checkpoint file that is missing, broken or foreign included), 1 for
a failure (no data, a diverged run, non-finite weights or scores, a full disk); no traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import NoReturn

import matplotlib.pyplot as plt
import torch

from vae_tutorial import checks
from vae_tutorial.checkpoint import ensure_writable, load_checkpoint
from vae_tutorial.device import pick_device
from vae_tutorial.distributed import RankFailed, join, leave
from vae_tutorial.download import MNISTUnavailable
from vae_tutorial.elbo import LIKELIHOODS
from vae_tutorial.evaluate import evaluate_elbo, importance_weighted_bound, nats_to_bits_per_dim
from vae_tutorial.models import CLASSES, VAE, ModelConfig
from vae_tutorial.plots import show_images
from vae_tutorial.sampling import sample_prior
from vae_tutorial.train import TrainConfig, TrainingDiverged, fit, load_test_set

PROG = "python -m vae_tutorial"
IWAE_BATCH = 100  # test images per importance_weighted_bound call


class CommandFailed(RuntimeError):
    """A failure that is not a bad argument: exit status 1."""


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


def _json(metrics: dict) -> str:
    """Strict JSON (no NaN or Infinity, which JSON does not have)."""
    return json.dumps(metrics, indent=2, allow_nan=False) + "\n"


def _finite_weights(model: torch.nn.Module, command: str) -> None:
    """CommandFailed if any weight is NaN or infinite (a run that diverged before it was saved)."""
    bad = {n: int((~torch.isfinite(p)).sum()) for n, p in model.state_dict().items()}
    bad = {n: count for n, count in bad.items() if count}
    if bad:
        raise CommandFailed(
            f"{command}: expected finite weights, got {sum(bad.values())} NaN or infinite values "
            f"(in {', '.join(bad)}); the run that wrote this checkpoint diverged: use an earlier "
            "checkpoint or train again with a lower --lr"
        )


def _checkpoint_in(out: Path, resume: bool, overwrite: bool) -> Path:
    """out/checkpoint.pt, checked for writing; an existing one only with --resume or --overwrite."""
    checkpoint = ensure_writable(out / "checkpoint.pt", "--out")
    if checkpoint.exists() and not (resume or overwrite):
        raise ValueError(
            f"--out: expected a folder without a checkpoint, got {str(out)!r}, which holds "
            "checkpoint.pt; pass --resume to continue that run (same settings), --overwrite to "
            "replace it, or another --out"
        )
    return checkpoint


def train(args: argparse.Namespace) -> int:
    """Fit a model; write checkpoint.pt, metrics.json and samples.png into --out."""
    model_config = ModelConfig(args.kind, args.arch, args.latent_dim, args.hidden_dim)
    train_config = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    name = args.name or f"{args.kind}-{args.arch}-z{args.latent_dim}"
    out = Path("runs") / name if args.out is None else args.out
    device = pick_device(args.device)  # a missing GPU is a bad argument: found before any file
    world = join(device, backend=args.backend)  # under torchrun: this process's rank of N
    checkpoint = world.from_main(_checkpoint_in, out, args.resume, args.overwrite)  # rank 0's disk
    result = fit(
        model_config,
        train_config,
        device=world.device,
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
    (out / "metrics.json").write_text(_json(metrics))
    labels = _sample_labels(result.model, args.samples, None)  # a CVAE: digits 0..9 in turn
    samples = sample_prior(
        result.model,
        args.samples,
        labels=labels,
        seed=args.seed,
        likelihood=train_config.likelihood,
    )  # E[x|z] of the model's likelihood, (n, 784)
    title = f"{name}: decoded z ~ N(0, I)" + ("" if labels is None else ", y = 0..9 by column")
    _write_figure(samples, out / "samples.png", title, nrow=8 if labels is None else CLASSES)
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
    saved = load_checkpoint(args.checkpoint, args.device)
    model, config = saved.model, saved.train_config
    if not isinstance(model, VAE):
        raise ValueError(
            f"evaluate: expected a VAE checkpoint, got kind={model.config.kind!r}; an autoencoder "
            "has no ELBO (its samples: `sample`)"
        )
    _finite_weights(model, "evaluate")
    if args.out is not None:
        ensure_writable(args.out, "--out")
    device = next(model.parameters()).device
    images, test_labels = load_test_set(config, root=args.data_root, device=device)
    labels = test_labels if model.config.kind == "cvae" else None  # a CVAE bounds log p(x|y)
    scores = evaluate_elbo(
        model, images, labels=labels, seed=args.seed, likelihood=config.likelihood
    )
    metrics = {
        "checkpoint": str(args.checkpoint),
        "bound_on": "log p(x)" if labels is None else "log p(x|y)",
        "likelihood": config.likelihood,
        "test_data": config.test_data,
        "test_images": len(images),
        "neg_elbo_nats": scores["neg_elbo"],
        "reconstruction_nats": scores["reconstruction"],
        "kl_nats": scores["kl"],
        "bits_per_dim": scores["bits_per_dim"],
    }
    if args.k is not None:
        generator = torch.Generator(device=device).manual_seed(args.seed)
        subset = images[: args.iwae_images]  # L_k costs k decoder passes per image
        parts = subset.split(IWAE_BATCH)
        label_parts = (
            [None] * len(parts) if labels is None else labels[: len(subset)].split(IWAE_BATCH)
        )
        bounds = [
            importance_weighted_bound(
                model, x, args.k, generator=generator, likelihood=config.likelihood, labels=y
            )  # (batch,)
            for x, y in zip(parts, label_parts, strict=True)
        ]
        neg_bound = -torch.cat(bounds).mean().item()  # $-\mathcal L_k \ge -\log p(x)$
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
        args.out.write_text(text)
    return 0


def _sample_labels(model: torch.nn.Module, n: int, chosen: list[int] | None) -> torch.Tensor | None:
    """The digit of each of n samples: None for an unconditional model; for a CVAE the chosen
    digits in turn (default 0..9). Chosen digits for an unconditional model: ValueError."""
    conditional = model.config.kind == "cvae"
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

    The pixels are E[x|z] under the likelihood the model was trained with.
    """
    saved = load_checkpoint(args.checkpoint, args.device)
    model, likelihood = saved.model, saved.train_config.likelihood
    labels = _sample_labels(model, args.n, args.label)
    _finite_weights(model, "sample")
    ensure_writable(args.out, "--out")
    samples = sample_prior(model, args.n, labels=labels, seed=args.seed, likelihood=likelihood)
    title = f"Samples from {args.checkpoint.parent.name}"
    if labels is not None:
        title += f", y = {', '.join(map(str, args.label or range(CLASSES)))} in turn"
    _write_figure(samples, args.out, title, args.nrow)
    print(f"wrote {args.n} samples to {args.out}")
    return 0


def _int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an int >= low, with the message of `checks.int_at_least`."""

    def parse(text: str) -> int:
        try:
            value: object = int(text)
        except ValueError:
            value = text
        try:
            return checks.int_at_least("value", value, low)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error).removeprefix("value: ")) from None

    return parse


_positive, _natural = _int_at_least(1), _int_at_least(0)


def _digit(text: str) -> int:
    """An argparse type: a digit label 0..9."""
    if text not in {str(d) for d in range(CLASSES)}:
        raise argparse.ArgumentTypeError(f"expected a digit label 0..9, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    """The parser with its three subcommands."""
    parser = _Parser(prog=PROG, description="Train, evaluate and sample VAEs on MNIST.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shared = _Parser(add_help=False)
    shared.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: auto)")
    data_help = "MNIST folder (default: data/ or $VAE_TUTORIAL_DATA)"
    shared.add_argument("--data-root", type=Path, default=None, help=data_help)
    shared.add_argument("--seed", type=_natural, default=0, help="random seed (default: 0)")

    t = commands.add_parser(
        "train", parents=[shared], help="train a model", description=train.__doc__
    )
    t.add_argument("--name", help="run name (default: KIND-ARCH-zLATENT)")
    t.add_argument("--out", type=Path, help="output folder (default: runs/NAME)")
    t.add_argument(
        "--kind",
        choices=("vae", "ae", "cvae"),
        default="vae",
        help="cvae: conditioned on the digit label (default: %(default)s)",
    )
    t.add_argument("--arch", choices=("mlp", "conv"), default="mlp", help="default: %(default)s")
    t.add_argument("--latent-dim", type=int, default=20, help="D, the size of z: %(default)s")
    t.add_argument("--hidden-dim", type=int, default=400, help="H, hidden width: %(default)s")
    t.add_argument("--epochs", type=int, default=10, help="default: %(default)s")
    t.add_argument("--batch-size", type=int, default=128, help="default: %(default)s")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate: %(default)s")
    t.add_argument("--beta", type=float, default=1.0, help="KL weight, 1 = the ELBO: %(default)s")
    t.add_argument("--warmup-epochs", type=int, default=0, help="KL warm-up epochs (0 = off)")
    t.add_argument(
        "--free-bits", type=float, default=0.0, help="kappa, free nats per latent (0 = off)"
    )
    t.add_argument(
        "--iwae-k", type=int, default=1, help="train on L_k with k samples (1 = the ELBO)"
    )
    t.add_argument(
        "--binarize", choices=("dynamic", "none"), default="dynamic", help="default: %(default)s"
    )
    t.add_argument(
        "--likelihood",
        choices=LIKELIHOODS,
        default="bernoulli",
        help="%(default)s",
    )
    t.add_argument("--train-size", type=int, default=None, help="use the first N training images")
    t.add_argument("--bf16", action="store_true", help="bfloat16 autocast where supported")
    t.add_argument("--compile", action="store_true", help="torch.compile where it works")
    again = t.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue --out/checkpoint.pt, if any")
    again.add_argument("--overwrite", action="store_true", help="replace --out/checkpoint.pt")
    t.add_argument("--samples", type=_positive, default=64, help="samples in samples.png")
    t.add_argument(
        "--backend", choices=("gloo", "nccl"), help="under torchrun: gloo (CPU) or nccl (CUDA)"
    )
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
    s.add_argument(
        "--label",
        type=_digit,
        nargs="+",
        default=None,
        help="a cvae's digit(s) 0-9, used in turn (default: 0..9); refused for other kinds",
    )
    s.set_defaults(run=sample, parser=s)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; bad arguments exit with status 2, failures with 1."""
    args = build_parser().parse_args(argv)
    prog = args.parser.prog
    try:
        return args.run(args)
    except ValueError as error:  # CheckpointError included: a file that is not a checkpoint
        args.parser.error(str(error))
    except (TrainingDiverged, MNISTUnavailable, CommandFailed, OSError, RankFailed) as error:
        print(f"{prog}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    except RuntimeError as error:  # under torchrun: a collective in DDP's backward failed
        if not torch.distributed.is_initialized():
            raise
        text = " ".join(str(error).split())[:200]
        print(f"{prog}: error: lost the other ranks ({text}); one died or stalled", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; any checkpoint written so far is whole", file=sys.stderr)
        return 130
    finally:
        leave()  # the process group, if torchrun's ranks joined one
