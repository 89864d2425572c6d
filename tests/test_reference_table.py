"""The reference table's choices among result files: the newest run, the tightest bound, the run's
name (the projection of a run's curve: tests/test_projection.py)."""

from vae_tutorial.reference_table import reference_table
from vae_tutorial.results import Result, write_result


def _run(date="2026-01-02T03:04:05Z", iwae_k=1, scores=((5000, 88.0),), curve=None) -> Result:
    """A complete `reference` result: its curve, test -ELBO, test -L_k for each (k, nats)."""
    curve = curve or [
        {"row": "curve", "epoch": e, "validation_neg_elbo": 95.0 - e / 10, "seconds": 60.0}
        for e in (10, 20)
    ]
    epoch = curve[-1]["epoch"]
    rows = [
        *curve,
        {"row": "test", "epoch": epoch, "estimator": "neg_elbo", "k": 1, "nats": 92.5}
        | {"se_images": 0.31, "bits_per_dim": 0.17},
        *(
            {"row": "test", "epoch": epoch, "estimator": "neg_L_k", "k": k, "nats": nats}
            | {"se_images": 0.29, "bits_per_dim": nats / 784 / 0.6931}
            for k, nats in scores
        ),
        {"row": "units", "epoch": epoch, "active_units": 17, "latent_dim": 20},
    ]
    hardware = {"device": "cpu", "cpu_model": "Test CPU", "cpu_cores": 2, "gpu": None}
    return Result(
        kind="reference",
        command="benchmarks/reference.py",
        config={
            "run": f"mlp-iwae{iwae_k}",
            "seed": 0,
            "model": {"kind": "vae", "arch": "mlp", "hidden_dim": 400, "latent_dim": 20},
            "train": {"iwae_k": iwae_k, "warmup_epochs": 0, "binarize": "dynamic"},
            "protocol": {
                "train_images": "the first 50000 training images, dynamically binarized",
                "selection": "validation -ELBO every 10 epochs, best kept",
            },
        },
        hardware=hardware | {"torch_threads": 2, "load_average_1min": 0.5},
        date_utc=date,
        complete=True,
        rows=rows,
    )


def test_a_rerun_of_the_same_run_and_seed_replaces_the_older_one(tmp_path):
    write_result(_run(date="2026-01-02T00:00:00Z", scores=((5000, 88.0),)), tmp_path)
    write_result(_run(date="2026-02-02T00:00:00Z", scores=((5000, 87.0),)), tmp_path)
    table = reference_table(tmp_path)
    row = next(line for line in table.splitlines() if "seed 0" in line)  # one row of the book's
    assert "| 87.00 ± 0.29 " in row and "| -L_5000 " in row and "88.00" not in table


def test_the_table_shows_the_tightest_bound_of_the_run(tmp_path):
    write_result(_run(scores=((100, 89.0), (5000, 88.0), (10, 90.0))), tmp_path)
    table = reference_table(tmp_path)
    row = next(line for line in table.splitlines() if "seed 0" in line)
    assert "| 88.00 ± 0.29 " in row and "| -L_5000 " in row
    assert "89.00" not in table and "90.00" not in table


def test_an_iwae_run_is_named_by_its_k_and_objective(tmp_path):
    write_result(_run(iwae_k=5), tmp_path)
    table = reference_table(tmp_path)
    assert "(IWAE k = 5)" in table and "-L_5, epoch 20 of 20" in table
