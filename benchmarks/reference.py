"""Reference results: the book's models at full budget, scored under one stated protocol.

Protocol (issue 11), the same for every run:

- training on the first 50,000 training images, dynamically binarized (a fresh x ~ Bernoulli(pixel)
  each pass); the last 10,000 training images are the validation split, binarized once
  (seed `VALIDATION_SEED`);
- model selection on validation only: every `--every` epochs the validation score is measured
  and the best checkpoint kept: the -ELBO (z sampled, seeded), or for a run trained on L_k
  (IWAE) its training objective -L_k, since IWAE gives up ELBO for L_k; training stops when it
  has not improved for `--patience` measurements, after `--max-epochs`, or when `--train-hours`
  of training are spent. The test -ELBO that `fit` records after each epoch is reporting,
  never selection;
- the 10,000 test images binarized once with seed 0 (`test_set.TEST_SEED`, as `fit` scores them);
- the selected model scored on the full test set: -ELBO (one z per image, closed-form KL),
  -L_k for each k of `--ks` (the largest estimates -log p(x); Burda et al. 2016 use k = 5000),
  each with its standard error across the test images, and the active units.

Every step resumes: checkpoints live outside the work tree, in `<data folder>/reference/<run>/`
(`download.default_root()`), with `state.json` (the validation curve, the best epoch, the time
spent) and the per-image L_k values computed so far. Run the same command again to continue; a
larger `--max-epochs` or `--train-hours` continues training (and rescores if the best changes).
`--export-checkpoint` copies that folder to `benchmarks/checkpoints/<run>-seed<seed>/` (commit it
at a stop); a run whose folder is empty resumes from there, on any machine.
The result file, `benchmarks/results/reference-<run>-cpu-<start>.json`, is rewritten after every
measurement (complete=false until the test scores are in). Runs:

    nice -n 15 python benchmarks/reference.py --run mlp-400-20 [--threads 1] [--train-hours 1]

and the default model on Burda et al.'s schedule, all of its 3,280 passes (issue 22):

    nice -n 19 python benchmarks/reference.py --run mlp-400-20-burda --max-epochs 3280 \
        --patience 328 --train-hours 24 --ks 100,5000 --threads 1

`--list` shows the runs. README ("Reference results") says how long each took. Burda et al.'s two
runs (`--run burda-vae-1l`, `--run burda-iwae5-2l`) follow their own protocol, checkpointed under
`~/.cache/vae_tutorial/reference/`: see `reference_burda.py`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

import reference_burda  # Burda et al.'s runs and protocol, beside this file
import torch
from arguments import THREADS, OneLineParser, hours, int_in  # beside this file

from vae_tutorial.checkpoint import load_checkpoint
from vae_tutorial.config import ModelConfig, TrainConfig
from vae_tutorial.data import load_mnist
from vae_tutorial.download import default_root
from vae_tutorial.elbo import elbo_terms
from vae_tutorial.evaluate import active_units, nats_to_bits_per_dim
from vae_tutorial.iwae import importance_weighted_bound
from vae_tutorial.limits import EPOCHS, SEED
from vae_tutorial.results import CHECKOUT, Result, hardware, write_result
from vae_tutorial.test_set import TEST_SEED
from vae_tutorial.train import fit

TRAIN_SIZE = 50_000  # the first 50,000 training images train; the last 10,000 validate
VALIDATION_SEED = 1  # the validation split's one binarization
BLOCK = 500  # test images per block of the L_k scoring (saved after each block)
UNITS = {
    "epoch": "epochs finished",
    "validation_neg_elbo": "nats per example",
    "validation_neg_L_k": "nats per example, -L_k with the run's training k (IWAE runs)",
    "train_neg_elbo": "nats per example",
    "test_neg_elbo": "nats per example (reporting, not selection)",
    "nats": "nats per example",
    "se_images": "nats, standard error of the mean across test images",
    "bits_per_dim": "bits per dimension",
    "seconds": "s",
    "train_seconds": "s, training and validation scoring",
    "test_seconds": "s, scoring the selected model on the test set",
    "wall_seconds": "s, the whole run (all sessions), on a shared machine",
    "from_epoch": "epochs done when a session of the run started on the machine of its row",
}
EXPORTED = ("checkpoint.pt", "best.pt", "state.json")  # and lk-epoch<best>.pt, scores so far
# name: (model config, train config without epochs, what a reader should know)
RUNS = {
    "mlp-400-20": (
        ModelConfig(arch="mlp", hidden_dim=400, latent_dim=20),
        {"lr": 1e-3, "batch_size": 128},
        "the book's default 784-400-20 MLP VAE, trained on the -ELBO",
    ),
    "mlp-400-50-warmup": (
        ModelConfig(arch="mlp", hidden_dim=400, latent_dim=50),
        {"lr": 1e-3, "batch_size": 128, "warmup_epochs": 20},
        "a 784-400-50 MLP VAE with a 20-epoch KL warm-up: a candidate for the best model",
    ),
    "mlp-400-20-burda": (
        ModelConfig(arch="mlp", hidden_dim=400, latent_dim=20),
        {"lr": 1e-3, "batch_size": 128, "lr_schedule": "burda"},
        "the book's default 784-400-20 MLP VAE on the -ELBO with Burda et al.'s eight-stage "
        "learning rate schedule (3,280 passes), batch 128",
    ),
}
if "iwae_k" in TrainConfig.__dataclass_fields__:  # the IWAE objective, where the package has it
    RUNS["mlp-400-50-iwae5"] = (
        ModelConfig(arch="mlp", hidden_dim=400, latent_dim=50),
        {"lr": 1e-3, "batch_size": 128, "iwae_k": 5},
        "a 784-400-50 MLP trained on L_5 (IWAE, k = 5): a candidate for the best model",
    )


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def atomic_json(path: Path, values: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(values, indent=1) + "\n")
    os.replace(tmp, path)


def train_config(name: str, epochs: int, seed: int) -> TrainConfig:
    _, settings, _ = RUNS[name]
    return TrainConfig(
        epochs=epochs, seed=seed, train_size=TRAIN_SIZE, binarize="dynamic", **settings
    )


@torch.no_grad()
def validation_scores(name: str, model, images: torch.Tensor) -> dict:
    """The validation -ELBO and, for an IWAE run, -L_k with its k: {column: nats per example}."""
    scores = {
        "validation_neg_elbo": float(per_image_neg_elbo(model, images, VALIDATION_SEED).mean())
    }
    k = RUNS[name][1].get("iwae_k", 1)
    if k > 1:
        generator = torch.Generator().manual_seed(VALIDATION_SEED)
        bound = torch.cat(
            [
                importance_weighted_bound(model, x, k, generator=generator)
                for x in images.split(1000)
            ]
        )
        scores["validation_neg_L_k"] = -float(bound.double().mean())
    return scores


def selection_key(name: str) -> str:
    """The validation column that selects the epoch: the training objective."""
    return "validation_neg_L_k" if RUNS[name][1].get("iwae_k", 1) > 1 else "validation_neg_elbo"


@torch.no_grad()
def per_image_neg_elbo(model, images: torch.Tensor, seed: int) -> torch.Tensor:
    """-ELBO of each image, one z ~ q(z|x) each (seeded), closed-form KL: (N,) nats, float64."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for x in images.split(1000):
        logits, mu, logvar, _ = model(x, generator=generator)
        out.append(-elbo_terms(logits, x, mu, logvar).elbo.double())
    return torch.cat(out)


def mean_se(values: torch.Tensor) -> tuple[float, float]:
    """Mean and its standard error across images: std / sqrt(N)."""
    return float(values.mean()), float(values.std() / math.sqrt(len(values)))


class Run:
    """One run's folder, state and result file."""

    def __init__(self, name: str, seed: int, root: Path, exports: Path) -> None:
        self.name, self.seed = name, seed
        self.dir = root / f"{name}-seed{seed}"
        self.export = exports / f"{name}-seed{seed}"  # in the repository: one folder per run
        self.dir.mkdir(parents=True, exist_ok=True)
        self.checkpoint, self.best = self.dir / "checkpoint.pt", self.dir / "best.pt"
        self.state_path = self.dir / "state.json"
        if not self.state_path.exists() and (self.export / "state.json").exists():
            log(f"{name}: resuming from the exported {self.export}")
            for file in sorted(self.export.iterdir(), key=lambda f: f.name == "state.json"):
                reference_burda.atomic_copy(file, self.dir / file.name)  # the state last
        self.state = (
            json.loads(self.state_path.read_text())
            if self.state_path.exists()
            else {
                "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "curve": [],  # one row per validation measurement
                "best_epoch": None,
                "best_validation": None,
                "stopped": None,  # why training stopped
                "wall_seconds": 0.0,
                "test": None,  # the test scores of best_epoch
            }
        )

    def save(self) -> None:
        atomic_json(self.state_path, self.state)

    def result(self, args: argparse.Namespace, command: str) -> Result:
        model_config, _, notes = RUNS[self.name]
        epochs = self.state["curve"][-1]["epoch"] if self.state["curve"] else 0
        rows = [{"row": "curve", **row} for row in self.state["curve"]]
        test = self.state["test"]
        if test is not None:
            rows += test["rows"]
        rows += [{"row": "session", **session} for session in self.state.get("sessions", [])]
        rows.append(
            {
                "row": "time",
                "epochs": epochs,
                "train_seconds": sum(row["seconds"] for row in self.state["curve"]),
                "test_seconds": None if test is None else test["seconds"],
                "wall_seconds": self.state["wall_seconds"],  # every session of the run, summed
            }
        )
        return Result(
            kind="reference",
            command=command,
            config={
                "run": self.name,
                "seed": self.seed,
                "model": asdict(model_config),
                "train": asdict(train_config(self.name, epochs, self.seed)),
                "protocol": {
                    "train_images": f"the first {TRAIN_SIZE} training images, "
                    "dynamically binarized",
                    "validation_images": f"the last {60_000 - TRAIN_SIZE} training images, "
                    f"binarized once with seed {VALIDATION_SEED}",
                    "test_images": f"the 10000 test images, binarized once with seed {TEST_SEED}",
                    "selection": f"{selection_key(self.name)} every {args.every} epochs, "
                    "best kept; "
                    f"patience {args.patience} measurements, at most {args.max_epochs} epochs "
                    f"and {args.train_hours} h of training",
                    "ks": list(args.ks),
                },
                "checkpoints": str(self.dir),
            },
            # the machine as the run found it: recorded at its first write, kept after
            hardware=self.state.setdefault("hardware", {**hardware("cpu"), "nice": os.nice(0)}),
            date_utc=self.state["date_utc"],
            complete=test is not None and test["epoch"] == self.state["best_epoch"],
            notes=f"{notes}. Stopped: {self.state['stopped']}. Best validation epoch "
            f"{self.state['best_epoch']}. Wall time includes other work on a shared machine.",
            units=UNITS,
            rows=rows,
        )


def train(run: Run, args: argparse.Namespace, write) -> None:
    """Train in steps of args.every epochs, keeping the checkpoint of the best validation -ELBO."""
    model_config = RUNS[run.name][0]
    validation, _ = load_mnist("train", binarize="static", seed=VALIDATION_SEED)
    validation = validation[TRAIN_SIZE:]  # (10000, 784)
    state = run.state
    done = state["curve"][-1]["epoch"] if state["curve"] else 0
    since_best = sum(1 for row in state["curve"] if row["epoch"] > (state["best_epoch"] or 0))
    spent = sum(row["seconds"] for row in state["curve"])
    while True:
        if since_best >= args.patience:
            state["stopped"] = f"validation -ELBO not better for {args.patience} measurements"
        elif done >= args.max_epochs:
            state["stopped"] = f"at --max-epochs {args.max_epochs}"
        elif spent >= args.train_hours * 3600:
            state["stopped"] = f"after --train-hours {args.train_hours} of training"
        else:
            state["stopped"] = None
        if state["stopped"] is not None:
            run.save()
            log(f"{run.name}: training stopped: {state['stopped']}")
            return
        tick = time.perf_counter()
        target = min(done + args.every, args.max_epochs)
        fitted = fit(
            model_config,
            train_config(run.name, target, run.seed),
            device="cpu",
            checkpoint_path=run.checkpoint,
            resume=True,
            progress=False,
        )
        history = fitted.history
        scores = validation_scores(run.name, fitted.model, validation)
        score = scores[selection_key(run.name)]
        seconds = time.perf_counter() - tick
        done, spent = target, spent + seconds
        state["curve"].append(
            {
                "epoch": done,
                **scores,
                "train_neg_elbo": history.train_neg_elbo[-1],
                "test_neg_elbo": history.test_neg_elbo[-1],
                "seconds": seconds,
            }
        )
        if state["best_validation"] is None or score < state["best_validation"]:
            state["best_epoch"], state["best_validation"] = done, score
            tmp = run.dir / ".best.pt.tmp"
            shutil.copyfile(run.checkpoint, tmp)
            os.replace(tmp, run.best)
            since_best = 0
        else:
            since_best += 1
        run.save()
        write()
        log(
            f"{run.name}: epoch {done}: validation {selection_key(run.name)} {score:.2f} "
            f"(best {state['best_validation']:.2f} at {state['best_epoch']}), "
            f"train {history.train_neg_elbo[-1]:.2f}, "
            f"test {history.test_neg_elbo[-1]:.2f}, {seconds / args.every:.1f} s/epoch"
        )


def score_test(run: Run, args: argparse.Namespace, write) -> None:
    """-ELBO, L_k for each k and active units of the best checkpoint on the full test set."""
    state = run.state
    best = state["best_epoch"]
    if state["test"] is not None and state["test"]["epoch"] == best and state["test"]["done"]:
        return
    model = load_checkpoint(run.best, device="cpu").model
    images, _ = load_mnist("test", binarize="static", seed=TEST_SEED)  # (10000, 784)
    partial = run.dir / f"lk-epoch{best}.pt"  # per-image -L_k so far: {k: (N,) with NaN for todo}
    values = torch.load(partial) if partial.exists() else {}
    tick = time.perf_counter()
    neg_elbo = per_image_neg_elbo(model, images, seed=TEST_SEED)
    rows = [_row("neg_elbo", 1, neg_elbo, best)]
    for k in args.ks:
        todo = values.setdefault(k, torch.full((len(images),), math.nan, dtype=torch.float64))
        for block, start in enumerate(range(0, len(images), BLOCK)):
            if not torch.isnan(todo[start]):
                continue
            # one generator per block and k: a resumed run draws what an uninterrupted one would
            generator = torch.Generator().manual_seed(TEST_SEED * 1_000_003 + 1000 * k + block)
            x = images[start : start + BLOCK]
            todo[start : start + BLOCK] = -importance_weighted_bound(
                model, x, k, generator=generator
            ).double()
            tmp = partial.with_name(f".{partial.name}.tmp")
            torch.save(values, tmp)
            os.replace(tmp, partial)
            log(
                f"{run.name}: -L_{k} images {start + len(x)}: "
                f"{float(todo[: start + len(x)].mean()):.2f}"
            )
        rows.append(_row("neg_L_k", k, todo, best))
    count, _ = active_units(model, images)
    rows.append(
        {
            "row": "units",
            "epoch": best,
            "active_units": count,
            "latent_dim": model.config.latent_dim,
        }
    )
    state["test"] = {
        "epoch": best,
        "done": True,
        "rows": rows,
        "seconds": time.perf_counter() - tick,
    }
    run.save()
    write()
    for row in rows:
        log(f"{run.name}: {row}")


def export(run: Run, write) -> None:
    """Copy the run's checkpoints, scores so far and state into the repository (commit them)."""
    files = [f for f in run.dir.iterdir() if f.name in EXPORTED or f.name.startswith("lk-epoch")]
    if not run.state_path.exists():
        raise SystemExit(f"{run.name}: no state in {run.dir} to export")
    for stale in run.export.glob("*") if run.export.exists() else []:
        if stale.name not in {f.name for f in files}:
            stale.unlink()
    for file in sorted(files, key=lambda f: f.name == "state.json"):  # the state last
        reference_burda.atomic_copy(file, run.export / file.name)
    write()
    log(f"{run.name}: exported epoch {run.state['curve'][-1]['epoch']} to {run.export}; commit it")


def _row(estimator: str, k: int, values: torch.Tensor, epoch: int) -> dict:
    nats, se = mean_se(values)
    return {
        "row": "test",
        "epoch": epoch,
        "estimator": estimator,
        "k": k,
        "nats": nats,
        "se_images": se,
        "bits_per_dim": nats_to_bits_per_dim(nats),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a.startswith(("burda-", "--run=burda-")) for a in argv):  # Burda et al.'s protocol
        return reference_burda.main(argv)
    parser = OneLineParser(prog="benchmarks/reference.py", description=__doc__.splitlines()[0])
    parser.add_argument("--run", choices=sorted(RUNS), default="mlp-400-20")
    parser.add_argument("--list", action="store_true", help="list the runs and exit")
    parser.add_argument("--seed", type=int_in(0, SEED), default=0)
    every = int_in(1, EPOCHS)
    parser.add_argument("--every", type=every, default=10, help="epochs between validation scores")
    parser.add_argument("--patience", type=every, default=5, help="scores without improvement")
    parser.add_argument("--max-epochs", type=every, default=3000)
    parser.add_argument("--train-hours", type=hours, default=1.0, help="training budget, h")
    parser.add_argument(
        "--ks", type=reference_burda.ks, default=[100, 1000, 5000], help="k of the test L_k, a,b,c"
    )
    parser.add_argument("--threads", type=int_in(1, THREADS), default=1, help="torch threads")
    parser.add_argument("--root", type=Path, default=None, help="default: <data>/reference")
    parser.add_argument("--out", type=Path, default=CHECKOUT, help="where the result file goes")
    exports, help_export = reference_burda.EXPORTS, "export for a commit, exit"
    parser.add_argument("--exports", type=Path, default=exports, help="exported checkpoints")
    parser.add_argument("--export-checkpoint", action="store_true", help=help_export)
    args = parser.parse_args(argv)
    if args.list:
        for name, (_, _, notes) in {**RUNS, **reference_burda.RUNS}.items():
            print(f"{name}: {notes}")
        return 0
    try:  # a schedule with a length of its own is not run past it
        train_config(args.run, args.max_epochs, args.seed)
    except ValueError as error:
        parser.error(f"--max-epochs: {error}")
    torch.set_num_threads(args.threads)
    run = Run(args.run, args.seed, args.root or default_root() / "reference", args.exports)
    command = "benchmarks/reference.py " + " ".join(sys.argv[1:] if argv is None else argv)
    start, wall0 = time.perf_counter(), run.state["wall_seconds"]

    def write() -> None:
        run.state["wall_seconds"] = wall0 + time.perf_counter() - start
        run.save()
        path = write_result(run.result(args, command), args.out)
        log(f"wrote {path}")

    if args.export_checkpoint:
        export(run, write)
        return 0
    log(f"{run.name}: checkpoints in {run.dir}")

    def stop(signum, frame) -> None:  # SIGTERM, a stop of work: the time spent is kept
        write()
        log(f"{run.name}: stopped; the time spent is saved")
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    # A run moves between machines across stops: each start records the machine it trains on.
    now, done = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), run.state["curve"]
    machine = {**hardware("cpu"), "torch": torch.__version__, "nice": os.nice(0)}
    sessions = run.state.setdefault("sessions", [])
    sessions.append({"from_epoch": done[-1]["epoch"] if done else 0, "date_utc": now, **machine})
    train(run, args, write)
    score_test(run, args, write)
    write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
