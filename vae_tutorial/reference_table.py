"""The book's reference results beside the literature: one table, rendered from the result files.

`benchmarks/reference.py` writes one `reference` result file per run (see its protocol); this module
renders the complete ones, newest per run and seed, next to the published figures in LITERATURE,
for chapter 10 (with {cite} roles) and README (plain text). Where a run's curve leads is
`vae_tutorial.projection`'s. No measured number is typed here.
"""

from __future__ import annotations

from pathlib import Path

from vae_tutorial.results import Result, load_results, markdown_table

# Published figures: -log p(x) estimates in nats per example, except where `likelihood` is False
# (then a -ELBO in nats, quoted as "about"); run: the book's run of the same recipe, if any.
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
        "run": "burda-vae-1l",
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
        "model": "IWAE, 2 stochastic layers (100 and 50 latents)",
        "objective": "-L_5, 3,280 passes",
        "nats": 83.89,
        "binarization": "dynamic",
        "estimator": "-L_5000",
        "protocol": "60,000 training images, 3,280 passes, no early stopping",
        "likelihood": True,
        "source": "burda2016importance",
        "authors": "Burda, Grosse and Salakhutdinov 2016, table 1",
        "run": "burda-iwae5-2l",
    },
    {
        "model": "the classic PyTorch example (784-400-20, grey pixels)",
        "objective": "BCE + KL on grey levels, 10 epochs",
        "nats": 105,  # about: the test loss its vae/main.py prints, not a figure of its README
        "binarization": "none: grey levels",
        "estimator": "test BCE + KL, z sampled: a -ELBO of grey levels, NOT a log-likelihood",
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
# The book's page is narrower than README: chapter 10 shows the table in three parts.
SCORES = ["model", "estimator", "test -ELBO", "test -log p(x)", "bits/dim", "active units"]
PROTOCOL = ["model", "trained on", "binarization", "protocol"]
SOURCES = ["model", "source"]


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


def reference_table(
    directory: str | Path | None = None, *, cite: bool = False, columns: list[str] = HEADER
) -> str:
    """Markdown: the book's complete reference runs, then the literature's figures.

    Each row states its binarization, its estimator and its protocol; figures under different
    binarizations are not comparable. cite=True writes sources as {cite} roles (the book), else
    as author-year text (README). columns: the HEADER columns to show (SCORES, PROTOCOL, SOURCES).
    """
    unknown = [name for name in columns if name not in HEADER]
    if unknown:
        raise ValueError(f"reference_table: unknown columns {unknown}; choose from {HEADER}")
    folder = "" if cite else "benchmarks/results/"  # the book's page says where, once
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
                f"this book: `{folder}{result.path.name}`",
            ]
        )
    for figure in LITERATURE:
        source = f"{{cite}}`{figure['source']}`" if cite else figure["authors"]
        likelihood, about = figure["likelihood"], f"about {figure['nats']:.0f}"
        rows.append(
            [
                figure["model"],
                figure["objective"],
                figure["binarization"],
                figure["estimator"],
                "" if likelihood else about,
                f"{figure['nats']:.2f}" if likelihood else "",
                "",
                "",
                figure["protocol"],
                source,
            ]
        )
    keep = [HEADER.index(name) for name in columns]
    return markdown_table(list(columns), [[row[i] for i in keep] for row in rows])
