"""benchmarks/reference.py runs Burda et al.'s two runs: a pass on a subset, scored, exported,
and resumed from the export on an empty cache, or from the block where its scoring stopped."""

import importlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vae_tutorial.checkpoint import load_checkpoint
from vae_tutorial.data import load_mnist
from vae_tutorial.reference_table import reference_table
from vae_tutorial.test_set import TEST_SEED

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "reference.py"


def reference(tmp: Path, *argv: str) -> subprocess.CompletedProcess:
    folders = [
        "--root",
        str(tmp / "cache"),
        "--exports",
        str(tmp / "exports"),
        "--out",
        str(tmp / "out"),
    ]
    smoke = ["--train-size", "40", "--test-size", "20", "--ks", "3", "--every", "1"]
    command = [sys.executable, str(SCRIPT), *argv, *smoke, *folders]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("run, layers", [("burda-vae-1l", 1), ("burda-iwae5-2l", 2)])
def test_a_burda_run_trains_scores_exports_and_resumes_from_the_export(
    tmp_path, monkeypatch, run, layers
):
    done = reference(tmp_path, "--run", run, "--max-passes", "1", "--threads", "1")
    assert done.returncode == 0, done.stderr
    (result,) = (tmp_path / "out").glob(f"reference-{run}-*.json")
    rows = json.loads(result.read_text())["rows"]
    curve = [r for r in rows if r["row"] == "curve"]
    assert [r["epoch"] for r in curve] == [1] and curve[0]["lr"] == 1e-3
    assert ("test_neg_L_k" in curve[0]) == (layers == 2)  # the IWAE run's curve has its -L_5
    assert [r["k"] for r in rows if r["row"] == "test"] == [1, 3]
    assert [r["layer"] for r in rows if r["row"] == "units"] == list(range(1, layers + 1))
    assert not json.loads(result.read_text())["complete"]  # a subset is never a result
    finished = tmp_path / "finished"  # the same file, as a finished run's would be
    finished.mkdir()
    (finished / result.name).write_text(
        result.read_text().replace('"complete": false', '"complete": true')
    )
    (row,) = [line for line in reference_table(finished).splitlines() if "seed 0" in line]
    name = "784-200-200-50 MLP VAE" if layers == 1 else "784-200-200-100-100-100-50 MLP 2-layer VAE"
    units = r"\| \d+ of 50 +\|" if layers == 1 else r"\| z1: \d+ of 100, z2: \d+ of 50 +\|"
    assert row.startswith(f"| {name}") and re.search(units, row) and "| -L_3 " in row
    assert "; 1 passes; selection: none: the last pass is the model scored" in row

    probed = reference(tmp_path, "--run", run, "--probe", "20")
    assert probed.returncode == 0, probed.stderr
    (probe,) = [r for r in json.loads(result.read_text())["rows"] if r["row"] == "probe"]
    assert (probe["epoch"], probe["images"], probe["k"]) == (1, 20, 3)
    spread = [round(i * 9999 / 19) for i in range(20)]  # 0, 526, ..., 9999: both halves
    images = load_mnist("test", binarize="static", seed=TEST_SEED)[0][spread]
    model = load_checkpoint(next((tmp_path / "cache").glob("*/checkpoint.pt"))).model
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    burda = importlib.import_module("reference_burda")
    for k, name in [(3, "nats"), (1, "neg_elbo")]:
        expected = burda.neg_bound(model, images, k, TEST_SEED).mean()
        assert probe[name] == pytest.approx(float(expected), rel=1e-12)
    assert probe["gap"] == pytest.approx(probe["neg_elbo"] - probe["nats"], rel=1e-9)

    exported = reference(tmp_path, "--run", run, "--export-checkpoint")
    assert exported.returncode == 0, exported.stderr
    for cache in (tmp_path / "cache").iterdir():  # a new machine: an empty cache
        for f in cache.iterdir():
            f.unlink()
    resumed = reference(tmp_path, "--run", run, "--max-passes", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from the exported" in resumed.stdout and "1 passes done" in resumed.stdout
    curve = [r for r in json.loads(result.read_text())["rows"] if r["row"] == "curve"]
    assert [r["epoch"] for r in curve] == [1, 2] and curve[1]["lr"] == pytest.approx(
        1e-3 * 10 ** (-1 / 7)
    )
    sessions = [r for r in json.loads(result.read_text())["rows"] if r["row"] == "session"]
    assert [r["from_pass"] for r in sessions] == [0, 1]  # each start names its machine
    assert all(r["cpu_kernels"] and r["torch"] and r["date_utc"] for r in sessions)


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--run", "burda-vae-1l", "--threads", "0"],
            "--threads: expected a whole number in [1, 256]",
        ),
        (["--run", "burda-nonsense"], "invalid choice: 'burda-nonsense'"),
        (["--run", "burda-vae-1l", "--max-passes", "3281"], "--max-passes"),
    ],
)
def test_bad_arguments_are_refused_in_one_line(tmp_path, argv, message):
    done = subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True)
    assert done.returncode == 2 and message in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


class Stop(Exception):
    """A stop of work, in the middle of the final scores."""


def test_a_run_stopped_while_scoring_resumes_at_the_next_block(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    burda = importlib.import_module("reference_burda")
    monkeypatch.setattr(burda, "BLOCK", 8)  # 20 test images: blocks of 8, 8 and 4
    calls, compute = [], burda.block_bound

    def block_bound(model, x, k, seed, block):
        calls.append((k, block))
        if len(calls) == 4:  # the -ELBO's three blocks are done, then the stop
            raise Stop
        return compute(model, x, k, seed, block)

    monkeypatch.setattr(burda, "block_bound", block_bound)
    smoke = ["--train-size", "40", "--test-size", "20", "--ks", "3", "--max-passes", "1"]
    folders = ["--root", str(tmp_path / "cache"), "--out", str(tmp_path / "out")]
    argv = ["--run", "burda-vae-1l", *smoke, *folders, "--exports", str(tmp_path / "exports")]
    with pytest.raises(Stop):
        burda.main(argv)
    (state,) = (tmp_path / "cache").glob("*/state.json")
    scored = json.loads(state.read_text())["scored"]
    assert [len(block) for block in scored["neg_elbo 1"]] == [8, 8, 4]  # saved as they were done

    calls.clear()
    assert burda.main(argv) == 0
    assert calls == [(3, 0), (3, 1), (3, 2)]  # the -ELBO's blocks are not computed again
    (result,) = (tmp_path / "out").glob("reference-burda-vae-1l-*.json")
    rows = [r for r in json.loads(result.read_text())["rows"] if r["row"] == "test"]
    model = load_checkpoint(next((tmp_path / "cache").glob("*/checkpoint.pt"))).model
    images = load_mnist("test", binarize="static", seed=TEST_SEED)[0][:20]
    for row, k in zip(rows, [1, 3], strict=True):  # the same as scores computed in one go
        parts = [images[s : s + 8] for s in range(0, 20, 8)]
        expected = torch.cat([compute(model, x, k, TEST_SEED, b) for b, x in enumerate(parts)])
        assert row["nats"] == pytest.approx(float(expected.mean()), rel=1e-12)
        assert row["se_images"] == pytest.approx(float(expected.std() / 20**0.5), rel=1e-12)


def test_sigterm_saves_the_time_spent_and_the_run_resumes_where_it_stopped(tmp_path):
    smoke = ["--train-size", "40", "--test-size", "20", "--ks", "3", "--every", "1000"]
    folders = ["--root", str(tmp_path / "cache"), "--exports", str(tmp_path / "e")]
    argv = ["--run", "burda-vae-1l", *smoke, *folders, "--out", str(tmp_path / "out")]
    command = [sys.executable, str(SCRIPT), *argv, "--max-passes", "40"]
    state = tmp_path / "cache" / "burda-vae-1l-seed0-train40" / "state.json"
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        deadline = time.monotonic() + 300
        while not (state.exists() and json.loads(state.read_text())["curve"][-1]["epoch"] == 13):
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
        before = json.loads(state.read_text())["wall_seconds"]  # saved at the row of pass 13
        time.sleep(1.5)  # within the stage of passes 14 to 40: no row, no save of its own
        process.terminate()
        out, _ = process.communicate(timeout=60)
    assert process.returncode == 0 and "stopped; the time spent is saved" in out
    after = json.loads(state.read_text())
    assert after["wall_seconds"] >= before + 1.5 and after["curve"][-1]["epoch"] == 13
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    curve = json.loads(state.read_text())["curve"]
    assert [r["epoch"] for r in curve] == [1, 4, 13, 40]
