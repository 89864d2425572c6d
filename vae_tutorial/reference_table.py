"""The book's reference results beside the literature: one table, rendered from the result files.

`benchmarks/reference.py` writes one `reference` result file per run (see its protocol); this module
renders the complete ones, newest per run and seed, next to the published figures in LITERATURE,
for chapter 10 (with {cite} roles) and README (plain text), and projects how many epochs a run
would need to reach a goal. No measured number is typed here.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from vae_tutorial.results import Result, load_results, markdown_table

# Published figures: -log p(x) estimates in nats per example, except where `likelihood` is False.
# binarization: how the pixels were made binary (static: once; dynamic: afresh each pass);
# estimator: the quantity reported; protocol: the training data, length and model selection.
LITERATURE = [
    {
        "model": "VAE, 1 stochastic layer (50 latents, 2 x 200 hidden units)",
        "objective": "-ELBO, 3,280 passes",
        "nats": 86.76,
        "binarization": "dynamic",
        "estimator": "-L_5000",
        "protocol": "60,000 training images, 3,280 passes, no early stopping",
        "likelihood": True,
        "source": "burda2016importance",
        "authors": "Burda, Grosse and Salakhutdinov 2016, table 1",
    },
    {
        "model": "IWAE, 1 stochastic layer (50 latents, 2 x 200 hidden units)",
        "objective": "-L_5, 3,280 passes",
        "nats": 85.54,
        "binarization": "dynamic",
        "estimator": "-L_5000",
        "protocol": "60,000 training images, 3,280 passes, no early stopping",
        "likelihood": True,
        "source": "burda2016importance",
        "authors": "Burda, Grosse and Salakhutdinov 2016, table 1",
    },
    {
        "model": "the classic PyTorch example (784-400-20, grey pixels)",
        "objective": "BCE + KL on grey levels, 10 epochs",
        "nats": 105.5,
        "binarization": "none: grey levels",
        "estimator": "test BCE + KL, z sampled: NOT a likelihood, not comparable",
        "protocol": "60,000 training images, 10 epochs, the last one's test loss",
        "likelihood": False,
        "source": "pytorchexamples",
        "authors": "pytorch/examples, vae/main.py",
    },
]
HEADER = [
    "model",
    "trained on",
    "binarization",
    "estimator",
    "test -ELBO",
    "test -log p(x)",
    "bits/dim",
    "active units",
    "protocol",
    "source",
]


def reference_runs(directory: str | Path | None = None) -> list[Result]:
    """The newest complete `reference` result of each run and seed, oldest run first."""
    newest: dict[tuple[str, int], Result] = {}
    for result in load_results("reference", complete=True, directory=directory):
        newest[(result.config["run"], result.config["seed"])] = (
            result  # sorted by date: newest wins
        )
    return list(newest.values())


def score_row(result: Result, estimator: str, k: int) -> dict:
    """The run's test row of one estimator ("neg_elbo" with k = 1, or "neg_L_k")."""
    return result.one(row="test", estimator=estimator, k=k)


def _model_name(result: Result) -> str:
    model, train = result.config["model"], result.config["train"]
    widths = list(model.get("hidden") or [model["hidden_dim"]])
    sizes = [784, *widths, model["latent_dim"]]
    if model.get("kind") == "hvae":  # x -> z1 -> z2, bottom-up
        sizes += [*model["hidden2"], model["latent_dim2"]]
    kind = "2-layer VAE" if model.get("kind") == "hvae" else "VAE"
    name = f"{'-'.join(map(str, sizes))} {model['arch'].upper()} {kind}"
    extras = []
    if train.get("iwae_k", 1) > 1:
        extras.append(f"IWAE k = {train['iwae_k']}")
    if train.get("warmup_epochs"):
        extras.append(f"{train['warmup_epochs']}-epoch warm-up")
    return name + (f" ({', '.join(extras)})" if extras else "") + f", seed {result.config['seed']}"


def units_cell(result: Result) -> str:
    """Active units: "17 of 20", or per stochastic layer, "z1: 30 of 100, z2: 9 of 50"."""
    rows = result.select(row="units")
    if len(rows) == 1 and "layer" not in rows[0]:
        return f"{rows[0]['active_units']} of {rows[0]['latent_dim']}"
    if len(rows) == 1:
        return f"{rows[0]['active_units']} of {rows[0]['dims']}"
    return ", ".join(f"z{r['layer']}: {r['active_units']} of {r['dims']}" for r in rows)


def protocol_cell(result: Result) -> str:
    """The run's training images, length and model selection, from its result file."""
    protocol = result.config["protocol"]
    parts = [protocol["train_images"]]
    if "passes" in protocol:
        parts.append(f"{protocol['passes']} passes")
    parts.append(f"selection: {protocol['selection']}")
    return "; ".join(parts)


def reference_table(directory: str | Path | None = None, *, cite: bool = False) -> str:
    """Markdown: the book's complete reference runs, then the literature's figures.

    Each row states its binarization, its estimator and its protocol; figures under different
    binarizations are not comparable. cite=True writes sources as {cite} roles (the book), else
    as author-year text (README).
    """
    rows = []
    for result in reference_runs(directory):
        big = max(r["k"] for r in result.select(row="test", estimator="neg_L_k"))
        bound, elbo = score_row(result, "neg_L_k", big), score_row(result, "neg_elbo", 1)
        k = result.config["train"].get("iwae_k", 1)
        objective = f"-L_{k}" if k > 1 else "-ELBO"
        curve = result.select(row="curve")
        binarize = result.config["train"].get("binarize", "dynamic")
        rows.append(
            [
                _model_name(result),
                f"{objective}, epoch {bound['epoch']} of {curve[-1]['epoch']}",
                f"{binarize} (training), static (test)",
                f"-L_{big}",
                f"{elbo['nats']:.2f} ± {elbo['se_images']:.2f}",
                f"{bound['nats']:.2f} ± {bound['se_images']:.2f}",
                f"{bound['bits_per_dim']:.4f}",
                units_cell(result),
                protocol_cell(result),
                f"this book: `benchmarks/results/{result.path.name}`",
            ]
        )
    for figure in LITERATURE:
        source = f"{{cite}}`{figure['source']}`" if cite else figure["authors"]
        nats = f"{figure['nats']:.2f}" if figure["likelihood"] else f"({figure['nats']}: not nats)"
        rows.append(
            [
                figure["model"],
                figure["objective"],
                figure["binarization"],
                figure["estimator"],
                "",
                nats,
                "",
                "",
                figure["protocol"],
                source,
            ]
        )
    return markdown_table(HEADER, rows)


def projection(result: Result, goal: float, skip: int = 20) -> dict:
    """Where the run's curve leads, by the fit s(t) = a + b t^(-c) of its validation score.

    s(t) is the selection column (-ELBO, or -L_k for an IWAE run) at epoch t, fitted for t > skip
    and after any warm-up, c by grid search and a, b by least squares. The test -log p(x) at epoch t
    is projected as s(t) + offset, the offset measured at the selected epoch and assumed constant.
    Returns a, b, c, offset, rms (the fit's residual, nats), asymptote (a + offset), epochs (where
    the projection reaches `goal`; inf if the asymptote is above it), seconds_per_epoch (the
    fastest pace measured between two curve points, validation included: the runs share a
    machine, and its slower stretches measure the other work) and hours (from scratch, at it).
    """
    curve = result.select(row="curve")
    column = "validation_neg_L_k" if "validation_neg_L_k" in curve[0] else "validation_neg_elbo"
    start = max(skip, result.config["train"].get("warmup_epochs", 0))
    t = np.array([row["epoch"] for row in curve if row["epoch"] > start], dtype=np.float64)
    s = np.array([row[column] for row in curve if row["epoch"] > start], dtype=np.float64)
    if len(t) < 4:
        raise ValueError(f"projection: expected at least 4 curve points after epoch {start}")
    best = None
    for c in np.arange(0.01, 2.0, 0.001):
        design = np.stack([np.ones_like(t), t**-c], axis=1)  # (T, 2)
        (a, b), *_ = np.linalg.lstsq(design, s, rcond=None)
        sse = float(((design @ np.array([a, b]) - s) ** 2).sum())
        if best is None or sse < best[0]:
            best = (sse, float(a), float(b), float(c))
    sse, a, b, c = best
    k = max(r["k"] for r in result.select(row="test", estimator="neg_L_k"))
    test = score_row(result, "neg_L_k", k)
    selected = next(row[column] for row in curve if row["epoch"] == test["epoch"])
    offset = test["nats"] - selected  # test -L_k minus the validation score, at the selected epoch
    # $a + b t^{-c} + o = g \iff t = (b / (g - o - a))^{1/c}$, o the offset and g the goal
    room = goal - offset - a
    epochs = (b / room) ** (1 / c) if room > 0 and b > 0 else math.inf
    pace = min(  # seconds per epoch
        row["seconds"] / (row["epoch"] - before)
        for before, row in zip([0] + [r["epoch"] for r in curve], curve, strict=False)
    )
    return {
        "a": a,
        "b": b,
        "c": c,
        "offset": offset,
        "rms": math.sqrt(sse / len(t)),
        "asymptote": a + offset,
        "epochs": epochs,
        "seconds_per_epoch": pace,
        "hours": epochs * pace / 3600,
    }
