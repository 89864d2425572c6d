"""Active units of a VAE with D = 50 latent dimensions, trained as chapter 6's 20-D model.

Chapter 6 counts the active units of its 20-D model, and its exercise 3 asks what a 50-D model
does after the same 10 epochs. Training one takes longer than the chapter's time budget allows,
so it runs here, for two seeds, and the chapter reads the result:
`benchmarks/results/latent_50-cpu-<date>.json`. Rows: one "summary" row per seed (active units,
test negative ELBO and KL, nats per example), and one "dimension" row per latent dimension and
seed (KL of that dimension and the variance of its encoder mean over the test set).

    python benchmarks/latent_50.py [--seeds 0 1] [--epochs 10] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys

import torch

from vae_tutorial.data import load_mnist
from vae_tutorial.evaluate import active_units, evaluate_elbo, kl_per_latent
from vae_tutorial.models import ModelConfig
from vae_tutorial.results import Result, hardware, write_result
from vae_tutorial.train import TrainConfig, fit


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--latent-dim", type=int, default=50)
    parser.add_argument("--out", default=None, help="folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    device = torch.device("cpu")
    result = Result(
        kind="latent_50",
        command="benchmarks/latent_50.py " + " ".join(sys.argv[1:] if argv is None else argv),
        config={
            "latent_dim": args.latent_dim,
            "epochs": args.epochs,
            "seeds": args.seeds,
            "threshold": 0.01,
            "test_set": "static binarization, seed 0",
        },
        hardware=hardware(device),
        notes="ModelConfig(latent_dim=D), TrainConfig(epochs=EPOCHS, seed=s), fit on the CPU; "
        "scored on the 10,000 test images as in chapter 6 (evaluate_elbo seed 0).",
        units={"neg_elbo": "nats per example", "kl": "nats per example", "variance": "1"},
    )
    test_images, _ = load_mnist("test", binarize="static", seed=0, device=device)
    for seed in args.seeds:
        run = fit(
            ModelConfig(latent_dim=args.latent_dim),
            TrainConfig(epochs=args.epochs, seed=seed),
            device=device,
            progress=False,
        )
        n_active, variances = active_units(run.model, test_images)
        kl = kl_per_latent(run.model, test_images)
        scores = evaluate_elbo(run.model, test_images, seed=0)
        result.rows.append(
            {
                "row": "summary",
                "seed": seed,
                "active": n_active,
                "latent_dim": args.latent_dim,
                "neg_elbo": scores["neg_elbo"],
                "kl": scores["kl"],
                "seconds": run.seconds,
            }
        )
        result.rows += [
            {
                "row": "dimension",
                "seed": seed,
                "dim": j,
                "kl": float(kl[j]),
                "variance": float(variances[j]),
            }
            for j in range(args.latent_dim)
        ]
        print(
            f"seed {seed}: {n_active} of {args.latent_dim} active, "
            f"-ELBO {scores['neg_elbo']:.2f}, {run.seconds:.0f} s",
            flush=True,
        )
        write_result(result, args.out)
    result.complete = True
    print(f"wrote {write_result(result, args.out)}")


if __name__ == "__main__":
    main()
