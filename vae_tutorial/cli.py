"""The command line: train a model, evaluate a checkpoint, draw samples (`commands`).

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

The options of `train` are built from the fields of `ModelConfig` and `TrainConfig` (`add_options`):
a new config field is a new option, with its default, choices and help, and no edit here.
"""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal, NoReturn

import torch

from vae_tutorial import checks, limits
from vae_tutorial.commands import PROG, CommandFailed, evaluate, sample, train
from vae_tutorial.config import ModelConfig, TrainConfig
from vae_tutorial.distributed import RankFailed, leave
from vae_tutorial.download import MNISTUnavailable
from vae_tutorial.labels import CLASSES
from vae_tutorial.models import NonFiniteWeights
from vae_tutorial.resources import ResourceExhausted, exhausted
from vae_tutorial.train import TrainingDiverged


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


def _int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an int in [low, high], with the message of `checks.int_at_least`."""

    def parse(text: str) -> int:
        try:
            value: object = int(text)
        except ValueError:
            value = text
        try:
            value = checks.int_at_least("value", value, low)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error).removeprefix("value: ")) from None
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"expected an int <= {high}, got {value}")
        return value

    return parse


_positive, _seed = _int_at_least(1), _int_at_least(0, limits.SEED)


def _digit(text: str) -> int:
    """An argparse type: a digit label 0..9."""
    if text not in {str(d) for d in range(CLASSES)}:
        raise argparse.ArgumentTypeError(f"expected a digit label 0..9, got {text!r}")
    return int(text)


def _whole(text: str) -> int | str:
    """An argparse type of an int field: the int, or the text as it came (the config refuses it)."""
    try:
        return int(text)
    except ValueError:
        return text


def _widths(text: str) -> tuple[int | str, ...]:
    """An argparse type of a tuple field: "200,200" -> (200, 200), "" -> (); the config checks."""
    return tuple(_whole(part) for part in text.split(",") if part.strip())


def _field_type(hint: Any) -> tuple[Any, tuple | None]:
    """The argparse type and choices of a config field's type hint (Optional unwrapped)."""
    if typing.get_origin(hint) is tuple:  # hidden sizes, comma-separated
        return _widths, None
    if typing.get_origin(hint) is Literal:
        return str, typing.get_args(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if args:  # X | None
        return _field_type(args[0])
    return hint, None  # int, float: argparse names a bad number; the config, a bad range


def add_options(parser: argparse.ArgumentParser, config: type, skip: tuple[str, ...] = ()) -> None:
    """An option --field-name per field of the dataclass config: its type, default, choices and the
    help in its metadata; a bool field is a switch (--name / --no-name). Ranges are the config's."""
    hints = typing.get_type_hints(config)
    for f in fields(config):
        if f.name in skip or f.metadata.get("deprecated"):
            continue
        flag, help = "--" + f.name.replace("_", "-"), f.metadata.get("help", "")
        if hints[f.name] is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=f.default, help=help
            )
            continue
        kind, choices = _field_type(hints[f.name])
        meta = f.metadata
        if choices is None and not isinstance(f.default, tuple):  # a number: its range
            span = limits.describe(meta.get("low"), meta.get("high"), meta.get("open_low", False))
            help += f" (range: {span}{'; memory checked at the start' * meta.get('memory', 0)})"
        parser.add_argument(
            flag,
            type=kind,
            choices=choices,
            default=f.default,
            help=f"{help} (default: %(default)s)",
        )


def build_parser(
    configs: tuple[type, type] = (ModelConfig, TrainConfig),
) -> argparse.ArgumentParser:
    """The parser with its three subcommands; `train` takes an option per field of `configs`."""
    parser = _Parser(prog=PROG, description="Train, evaluate and sample VAEs on MNIST.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shared = _Parser(add_help=False)
    shared.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: auto)")
    data_help = "MNIST folder (default: data/ or $VAE_TUTORIAL_DATA)"
    shared.add_argument("--data-root", type=Path, default=None, help=data_help)
    shared.add_argument(
        "--seed",
        type=_seed,
        default=TrainConfig.seed,
        help=f"random seed, 0 to {limits.SEED} (default: %(default)s)",
    )

    t = commands.add_parser(
        "train", parents=[shared], help="train a model", description=train.__doc__
    )
    t.add_argument("--name", help="run name (default: KIND-ARCH-zLATENT)")
    t.add_argument("--out", type=Path, help="output folder (default: runs/NAME)")
    for config in configs:  # every field of the configs, but the shared --seed
        add_options(t, config, skip=("seed",))
    again = t.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue --out/checkpoint.pt, if any")
    again.add_argument("--overwrite", action="store_true", help="replace --out/checkpoint.pt")
    t.add_argument(
        "--samples", type=_positive, default=64, help="samples in samples.png, >= 1 (a grid of 8)"
    )
    t.add_argument(
        "--backend", choices=("gloo", "nccl"), help="under torchrun: gloo (CPU) or nccl (CUDA)"
    )
    t.set_defaults(run=train, parser=t, configs=configs)

    e = commands.add_parser(
        "evaluate", parents=[shared], help="score a checkpoint", description=evaluate.__doc__
    )
    e.add_argument("checkpoint", type=_checkpoint_file)
    e.add_argument(
        "--k", type=_positive, default=None, help="importance samples for L_k, >= 1 (time ~ k)"
    )
    e.add_argument(
        "--iwae-images",
        type=_int_at_least(1, limits.MNIST_TEST),
        default=1000,
        help=f"test images for L_k, 1 to {limits.MNIST_TEST} (default: %(default)s)",
    )
    e.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    e.set_defaults(run=evaluate, parser=e)

    s = commands.add_parser(
        "sample", parents=[shared], help="draw samples", description=sample.__doc__
    )
    s.add_argument("checkpoint", type=_checkpoint_file)
    grid = "; the grid fits matplotlib's canvas and the memory, checked at the start"
    s.add_argument("--n", type=_positive, default=64, help=f"number of samples, >= 1{grid}")
    s.add_argument("--nrow", type=_positive, default=8, help=f"samples per row, >= 1{grid}")
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
    except NonFiniteWeights as error:  # a diverged run's checkpoint: a failure, not an argument
        print(f"{prog}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    except ValueError as error:  # CheckpointError included: a file that is not a checkpoint
        args.parser.error(str(error))
    except (ResourceExhausted, TrainingDiverged, MNISTUnavailable, CommandFailed, RankFailed) as e:
        print(f"{prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    except (MemoryError, OSError, RuntimeError) as error:  # memory or disk ran out, or a rank died
        known = exhausted(error, args.command)  # out of memory or disk where no API named it
        if known is not None or isinstance(error, OSError):
            print(f"{prog}: error: {' '.join(str(known or error).split())}", file=sys.stderr)
            return 1
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
