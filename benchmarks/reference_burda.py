"""Burda et al.'s reference runs (issue 22): their recipe and protocol, resumable across machines.

Protocol "burda" (Burda, Grosse and Salakhutdinov 2016, section 5 and table 1):

- all 60,000 training images, dynamically binarized (a fresh x ~ Bernoulli(pixel) each pass);
- batch 20, Adam with eps = 1e-4, lr 1e-3 on their eight-stage schedule (`schedule`, "burda"):
  3,280 passes; Glorot-uniform weights, tanh; the decoder's output bias starts at the logit of
  the mean training image (a deviation from the paper, recorded as `output_bias_from_mean`);
- no selection and no early stopping: the model after the last pass is the one scored;
- a curve every `--every` passes and at each stage's end: the test set's -ELBO (one z per image,
  seeded) and, for a run trained on L_k, its -L_k, with the pass's lr: reporting, never selection;
- at the end: -L_5000 on the 10,000 test images (binarized once with seed 0; Burda et al.
  binarize the test set afresh: ours is one such draw), with its standard error across images,
  the -ELBO, active units per stochastic layer, wall and core time;
- a `session` row for each start of training: the pass it started from and its machine (a run
  moves between machines across stops; `hardware` names the first).

Checkpoints (weights, Adam, schedule position, random states; `fit` writes one atomically after
every pass) and `state.json` (the curve, and the final scores block by block as they are done)
live in `~/.cache/vae_tutorial/reference/<run>-seed<seed>/`, outside any work tree.
`--export-checkpoint` copies the latest checkpoint and state to `benchmarks/checkpoints/<run>.pt`
/ `.json` (one path per run, overwritten) and writes the incomplete result file; a run whose cache
folder is empty starts from those files. So, at a stop:

    pkill -TERM -f benchmarks/reference.py   # each run saves the time it spent, then exits
    python benchmarks/reference.py --run burda-vae-1l --probe 1000   # optional, see below
    python benchmarks/reference.py --run burda-vae-1l --export-checkpoint   # then commit both

A probe measures where an unfinished run stands on the goals' estimator: -L_5000 of its latest
checkpoint on 1,000 test images spread evenly over the test set (a `probe` row; the -ELBO of the
same images gives the gap, image by image).

To start or resume (the same command):

    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/reference.py --run burda-vae-1l --threads 1

Where Linux groups processes by session (`/proc/sys/kernel/sched_autogroup_enabled` is 1), nice
ranks a process only within its session: a run started in a session of its own (`setsid`) takes
an equal share of the CPU from other sessions' work unless its group is niced as well,
`echo 19 > /proc/<pid>/autogroup`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import time
from dataclasses import asdict
from pathlib import Path

import torch
from arguments import THREADS, OneLineParser, int_in, ints_in  # beside this file

from vae_tutorial.checkpoint import load_checkpoint
from vae_tutorial.config import ModelConfig, TrainConfig
from vae_tutorial.data import DYNAMIC_DRAW, load_mnist
from vae_tutorial.evaluate import active_units, nats_to_bits_per_dim
from vae_tutorial.hierarchical import HierarchicalVAE
from vae_tutorial.hierarchical_scores import active_units_per_layer, hierarchical_dataset_bound
from vae_tutorial.iwae import importance_weighted_bound
from vae_tutorial.results import CHECKOUT, Result, hardware, write_result
from vae_tutorial.schedule import burda_stage, total_passes
from vae_tutorial.test_set import TEST_SEED
from vae_tutorial.train import fit

PASSES = total_passes("burda")  # 3280
CACHE = Path.home() / ".cache" / "vae_tutorial" / "reference"
EXPORTS = Path(__file__).resolve().parent / "checkpoints"  # in the repository: one file per run
BLOCK = 500  # test images per block of the final L_k (saved after each block)
RECIPE = {  # Burda et al.'s training recipe, shared by both runs
    "batch_size": 20,
    "lr": 1e-3,
    "adam_eps": 1e-4,
    "lr_schedule": "burda",
    "binarize": "dynamic",
    "output_bias_from_mean": True,
}
LAYERS = {"activation": "tanh", "init": "glorot_uniform", "hidden": (200, 200)}
RUNS = {  # name: (model config, train settings, notes)
    "burda-vae-1l": (
        ModelConfig(kind="vae", latent_dim=50, **LAYERS),
        {**RECIPE, "iwae_k": 1},
        "Burda et al.'s 1-layer VAE (784-200-200-50, tanh) on the ELBO; their table 1: 86.76",
    ),
    "burda-iwae5-2l": (
        ModelConfig(kind="hvae", latent_dim=100, latent_dim2=50, hidden2=(100, 100), **LAYERS),
        {**RECIPE, "iwae_k": 5},
        "Burda et al.'s 2-layer model (784-200-200-100-100-100-50, tanh) on L_5; "
        "their table 1: 83.89",
    ),
}
# The draw of dynamic binarization changed once while the runs went on, at a restart: from a float32
# uniform u < pixel (torch.bernoulli on a CPU draws the same stream) to a 16-bit u. Both give
# x ~ Bernoulli(pixel), one per pixel and pass (the 16-bit u within 2**-17), so the recipe is the
# same; the random stream is not.
DRAWS = {
    "burda-vae-1l": "passes 1-400: a float32 uniform < pixel; from pass 401: a 16-bit uniform < "
    "pixel (vae_tutorial.data.bernoulli_draw)",
    "burda-iwae5-2l": "passes 1-204: a float32 uniform < pixel; from pass 205: a 16-bit uniform < "
    "pixel (vae_tutorial.data.bernoulli_draw)",
}
UNITS = {
    "epoch": "passes finished",
    "lr": "Adam learning rate of the last pass",
    "train_neg_elbo": "nats per example, mean over the last pass while training",
    "test_neg_elbo": "nats per example, one z per test image (reporting, not selection)",
    "test_neg_L_k": "nats per example, -L_k with the run's k on the test set (IWAE runs)",
    "nats": "nats per example",
    "se_images": "nats, standard error of the mean across test images",
    "bits_per_dim": "bits per dimension",
    "seconds": "s",
    "from_pass": "passes done when a session of the run started on the machine of its row",
    "wall_seconds": "s, every session of the run, on a shared machine",
    "core_seconds": "s of CPU time of the process, every session",
    "score_seconds": "s of wall time of the final scores (-ELBO, each -L_k), every session",
    "images": "test images a probe scored, spread evenly over the 10,000",
    "neg_elbo": "nats per example, -ELBO of the probe's images (one z each, as the final scores)",
    "gap": "nats, -ELBO minus -L_k on the probe's images, image by image: the mean",
    "se_gap": "nats, standard error of the gap across the probe's images",
}


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def atomic_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def atomic_json(path: Path, values: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(values, indent=1) + "\n")
    os.replace(tmp, path)


def train_config(name: str, epochs: int, seed: int, train_size: int | None) -> TrainConfig:
    return TrainConfig(epochs=epochs, seed=seed, train_size=train_size, **RUNS[name][1])


def next_stop(done: int, every: int, last: int) -> int:
    """The next pass with a curve row: a multiple of `every`, a stage's end, or the last pass."""
    stage_end = (3 ** (burda_stage(done) + 1) - 1) // 2  # $\sum_{j \le i} 3^j$
    return min((done // every + 1) * every, stage_end, last)


@torch.no_grad()
def block_bound(model, x: torch.Tensor, k: int, seed: int, block: int) -> torch.Tensor:
    """-L_k of each image of one block, from its own seeded generator: (len(x),) nats, float64."""
    s = seed * 1_000_003 + 1000 * k + block
    if isinstance(model, HierarchicalVAE):
        bound = hierarchical_dataset_bound(model, x, k, seed=s, chunk=max(1, 20_000 // len(x)))
    else:
        bound = importance_weighted_bound(model, x, k, generator=torch.Generator().manual_seed(s))
    return -bound.double()


def blocks(images: torch.Tensor) -> list[torch.Tensor]:
    return [images[start : start + BLOCK] for start in range(0, len(images), BLOCK)]


def neg_bound(model, images: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """-L_k of each image, block by block (`block_bound`): (N,) nats, float64."""
    return torch.cat([block_bound(model, x, k, seed, b) for b, x in enumerate(blocks(images))])


def mean_se(values: torch.Tensor) -> tuple[float, float]:
    """Mean and its standard error across images: std / sqrt(N)."""
    return float(values.mean()), float(values.std() / math.sqrt(len(values)))


class BurdaRun:
    """One run's cache folder, state and result file."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.name, self.seed, self.args = args.run, args.seed, args
        suffix = "" if args.train_size is None else f"-train{args.train_size}"
        self.dir = args.root / f"{self.name}-seed{self.seed}{suffix}"
        self.checkpoint, self.state_path = self.dir / "checkpoint.pt", self.dir / "state.json"
        self.export = args.exports / f"{self.name}{suffix}"
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.checkpoint.exists() and self.export.with_suffix(".pt").exists():
            log(f"{self.name}: resuming from the exported {self.export.with_suffix('.pt')}")
            atomic_copy(self.export.with_suffix(".json"), self.state_path)
            atomic_copy(self.export.with_suffix(".pt"), self.checkpoint)
        self.state = (
            json.loads(self.state_path.read_text())
            if self.state_path.exists()
            else {
                "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "curve": [],
                "wall_seconds": 0.0,
                "core_seconds": 0.0,
                "test": None,
            }
        )
        self.wall0, self.core0 = self.state["wall_seconds"], self.state["core_seconds"]
        self.tick, self.cpu = time.perf_counter(), time.process_time()

    @property
    def done(self) -> int:
        return self.state["curve"][-1]["epoch"] if self.state["curve"] else 0

    def save(self) -> None:
        self.state["wall_seconds"] = self.wall0 + time.perf_counter() - self.tick
        self.state["core_seconds"] = self.core0 + time.process_time() - self.cpu
        atomic_json(self.state_path, self.state)

    def write(self) -> Path:
        self.save()
        path = write_result(self.result(), self.args.out)
        log(f"wrote {path}")
        return path

    def result(self) -> Result:
        model_config, settings, notes = RUNS[self.name]
        test = self.state["test"]
        rows = [{"row": "curve", **row} for row in self.state["curve"]]
        rows += [] if test is None else test["rows"]
        rows += [{"row": "session", **session} for session in self.state.get("sessions", [])]
        rows += [{"row": "probe", **probe} for probe in self.state.get("probes", [])]
        rows.append(
            {
                "row": "time",
                "epochs": self.done,
                "wall_seconds": self.state["wall_seconds"],
                "core_seconds": self.state["core_seconds"],
                "score_seconds": None if test is None else test["seconds"],
            }
        )
        subset = self.args.train_size is not None or self.args.test_size is not None
        return Result(
            kind="reference",
            command=self.args.command,
            config={
                "run": self.name,
                "seed": self.seed,
                "model": asdict(model_config),
                "train": asdict(
                    train_config(self.name, self.done, self.seed, self.args.train_size)
                ),
                "protocol": {
                    "name": "burda",
                    "train_images": "all 60000 training images, dynamically binarized"
                    if self.args.train_size is None
                    else f"SMOKE RUN: the first {self.args.train_size} training images",
                    "passes": f"{self.args.max_passes:,}",
                    "lr_schedule": f"burda: {PASSES:,} passes in eight stages of 3^i passes at "
                    "lr 1e-3 * 10^(-i/7), i = 0..7",
                    "binarization_draws": DRAWS[self.name] + ": the same Bernoulli statistics"
                    if self.args.train_size is None
                    else DYNAMIC_DRAW,
                    "selection": "none: the last pass is the model scored",
                    "curve": f"test -ELBO (and -L_k) every {self.args.every} passes and at each "
                    "stage's end: reporting only",
                    "test_images": f"the {self.args.test_size or 10_000} first test images, "
                    f"binarized once with seed {TEST_SEED}",
                    "ks": list(self.args.ks),
                    "output_bias_from_mean": settings["output_bias_from_mean"],
                    "deviations": "decoder output bias initialised to logit(mean training image)"
                    if settings["output_bias_from_mean"]
                    else "none",
                },
                "checkpoints": str(self.dir),
            },
            hardware=self.state.setdefault("hardware", {**hardware("cpu"), "nice": os.nice(0)}),
            date_utc=self.state["date_utc"],
            complete=test is not None and not subset,
            notes=f"{notes}. Wall time includes other work on a shared machine."
            + (" A smoke run on a subset: not a result." if subset else ""),
            units=UNITS,
            rows=rows,
        )


def train(run: BurdaRun) -> None:
    """Train to --max-passes, a curve row at every stop (`next_stop`); fit checkpoints each pass."""
    model_config, settings, _ = RUNS[run.name]
    test, _ = load_mnist("test", binarize="static", seed=TEST_SEED)
    test = test[: run.args.test_size]
    while run.done < run.args.max_passes:
        tick = time.perf_counter()
        target = next_stop(run.done, run.args.every, run.args.max_passes)
        fitted = fit(
            model_config,
            train_config(run.name, target, run.seed, run.args.train_size),
            device="cpu",
            checkpoint_path=run.checkpoint,
            resume=True,
            progress=False,
        )
        history, row = fitted.history, {"epoch": target}
        row.update(lr=history.lr[-1], train_neg_elbo=history.train_neg_elbo[-1])
        row["test_neg_elbo"] = history.test_neg_elbo[-1]  # on all 10,000 test images, as fit does
        k = settings["iwae_k"]
        if k > 1:
            row["test_neg_L_k"] = float(neg_bound(fitted.model, test, k, TEST_SEED).mean())
        row["seconds"] = time.perf_counter() - tick
        run.state["curve"].append(row)
        run.write()
        log(f"{run.name}: {row}")


def score(run: BurdaRun) -> None:
    """-ELBO, -L_k for each k of --ks and active units per layer of the last pass's model.

    Each block's values go into the state as soon as they are computed, so a run stopped while it
    scores (an hour for L_5000 on a slow machine) resumes at the next block, on any machine.
    """
    if run.state["test"] is not None:
        return
    model = load_checkpoint(run.checkpoint, device="cpu").model
    images, _ = load_mnist("test", binarize="static", seed=TEST_SEED)
    images = images[: run.args.test_size]
    scored = run.state.setdefault("scored", {})  # "<estimator> <k>": [values of each block done]
    rows = []
    for estimator, k in [("neg_elbo", 1), *(("neg_L_k", k) for k in run.args.ks)]:
        done = scored.setdefault(f"{estimator} {k}", [])
        for b, x in enumerate(blocks(images)):
            if b < len(done):
                continue
            tick = time.perf_counter()
            done.append(block_bound(model, x, k, TEST_SEED, b).tolist())
            run.state["score_seconds"] = run.state.get("score_seconds", 0.0) + (
                time.perf_counter() - tick
            )
            run.save()
        values = torch.tensor([v for block in done for v in block], dtype=torch.float64)
        rows.append(_row(estimator, k, values, run.done))
        log(f"{run.name}: {rows[-1]}")
    if isinstance(model, HierarchicalVAE):
        layers = active_units_per_layer(model, images, seed=TEST_SEED)
    else:
        layers = [active_units(model, images)]
    for layer, (count, variances) in enumerate(layers, 1):
        rows.append({"row": "units", "layer": layer, "active_units": count, "dims": len(variances)})
    run.state["test"] = {"rows": rows, "seconds": run.state["score_seconds"]}
    del run.state["scored"]  # the rows hold what the result needs
    run.write()


def _row(estimator: str, k: int, values: torch.Tensor, epoch: int) -> dict:
    nats, se = mean_se(values)
    return {
        "row": "test",
        "epoch": epoch,
        "estimator": estimator,  # neg_elbo: -L_1, the one-draw ELBO with the same draws
        "k": k,
        "nats": nats,
        "se_images": se,
        "bits_per_dim": nats_to_bits_per_dim(nats),
    }


def probe(run: BurdaRun) -> None:
    """-ELBO and -L_k for each k of --ks of the latest checkpoint on --probe test images spread
    evenly over the test set: where an unfinished run stands on the goals' estimator. Spread, not
    the first ones: MNIST's test set is ordered by source (the first 5,000 images from NIST's SD-3,
    the last 5,000 from SD-1), so a block of neighbours need not be typical."""
    if not run.checkpoint.exists():
        raise SystemExit(f"{run.name}: no checkpoint in {run.dir} to probe")
    loaded = load_checkpoint(run.checkpoint, device="cpu")  # ahead of the curve by < --every
    model, epoch = loaded.model, loaded.history.epochs_done
    test = load_mnist("test", binarize="static", seed=TEST_SEED)[0]
    images = test[torch.linspace(0, len(test) - 1, run.args.probe).round().long()]
    neg_elbo = neg_bound(model, images, 1, TEST_SEED)
    for k in run.args.ks:
        values = neg_bound(model, images, k, TEST_SEED)
        (nats, se), (gap, se_gap) = mean_se(values), mean_se(neg_elbo - values)
        row = {"epoch": epoch, "images": len(images), "k": k, "nats": nats, "se_images": se}
        row.update(neg_elbo=float(neg_elbo.mean()), gap=gap, se_gap=se_gap)
        run.state.setdefault("probes", []).append(row)
        log(f"{run.name}: probe {row}")
    run.write()


def export(run: BurdaRun) -> None:
    """Copy the latest checkpoint and state into the repository, and write the result file."""
    if not run.checkpoint.exists():
        raise SystemExit(f"{run.name}: no checkpoint in {run.dir} to export")
    atomic_copy(run.checkpoint, run.export.with_suffix(".pt"))
    run.write()
    atomic_copy(run.state_path, run.export.with_suffix(".json"))
    log(f"{run.name}: exported pass {run.done} to {run.export}.pt and .json; commit them")


def main(argv: list[str]) -> int:
    """Parse (every argument checked here) and run; `reference.py` hands Burda's runs over."""
    args = parser().parse_args(argv)
    args.command = "benchmarks/reference.py " + " ".join(argv)
    torch.set_num_threads(args.threads)
    run = BurdaRun(args)
    if args.export_checkpoint:
        export(run)
        return 0
    if args.probe:
        probe(run)
        return 0
    log(f"{run.name}: checkpoints in {run.dir}, {run.done} passes done")
    signal.signal(signal.SIGTERM, lambda signum, frame: stop(run))
    # A run hops machines across stops: each start records the machine it trains on from here.
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    machine = {**hardware("cpu"), "torch": torch.__version__, "nice": os.nice(0)}
    run.state.setdefault("sessions", []).append({"from_pass": run.done, "date_utc": now, **machine})
    train(run)
    score(run)
    run.write()
    return 0


def stop(run: BurdaRun) -> None:
    """SIGTERM, a stop of work: save the time spent so far and exit. The checkpoint already holds
    every finished pass (`fit` writes one after each), the state every finished score block."""
    run.save()
    log(f"{run.name}: stopped; the time spent is saved, the checkpoint holds every finished pass")
    raise SystemExit(0)


def ks(text: str) -> list[int]:
    return ints_in(1, 100_000)(text)


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="benchmarks/reference.py", description=__doc__.splitlines()[0])
    p.add_argument("--run", choices=sorted(RUNS), required=True)
    p.add_argument("--seed", type=int_in(0, 2**32 - 1), default=0)
    p.add_argument("--every", type=int_in(1, PASSES), default=10, help="passes between curve rows")
    p.add_argument("--max-passes", type=int_in(1, PASSES), default=PASSES)
    p.add_argument("--ks", type=ks, default=[5000], help="k of the final -L_k, comma-separated")
    p.add_argument("--threads", type=int_in(1, THREADS), default=1, help="torch threads")
    p.add_argument("--train-size", type=int_in(1, 60_000), default=None, help="smoke runs only")
    p.add_argument("--test-size", type=int_in(2, 10_000), default=None, help="smoke runs only")
    p.add_argument("--root", type=Path, default=CACHE, help=f"checkpoints (default {CACHE})")
    p.add_argument("--exports", type=Path, default=EXPORTS, help="exported checkpoints' folder")
    p.add_argument("--out", type=Path, default=CHECKOUT, help="where the result file goes")
    p.add_argument("--export-checkpoint", action="store_true", help="export for a commit, exit")
    p.add_argument(
        "--probe",
        type=int_in(2, 10_000),
        default=None,
        help="score the latest checkpoint on this many test images (the run stopped), exit",
    )
    return p
