"""A reference run on the book's protocol is exported into the repository at a stop and resumes
from the export on a new machine (an empty cache), one session row per start."""

import json
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "reference.py"


def reference(tmp: Path, *argv: str) -> subprocess.CompletedProcess:
    folders = ["--root", str(tmp / "cache"), "--exports", str(tmp / "exports")]
    run = ["--run", "mlp-400-20-burda", "--every", "1", "--ks", "2", "--out", str(tmp / "out")]
    command = [sys.executable, str(SCRIPT), *run, *argv, *folders]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_the_scheduled_default_run_exports_and_resumes_on_an_empty_cache(tmp_path):
    done = reference(tmp_path, "--max-epochs", "1")
    assert done.returncode == 0, done.stderr
    (result,) = (tmp_path / "out").glob("reference-mlp-400-20-burda-*.json")
    first = [r for r in json.loads(result.read_text())["rows"] if r["row"] == "curve"]
    exported = reference(tmp_path, "--max-epochs", "1", "--export-checkpoint")
    assert exported.returncode == 0, exported.stderr
    (folder,) = (tmp_path / "exports").iterdir()
    names = ["best.pt", "checkpoint.pt", "lk-epoch1.pt", "state.json"]  # lk: per-image -L_k
    assert sorted(f.name for f in folder.iterdir()) == names
    for f in (tmp_path / "cache" / folder.name).iterdir():  # a new machine: an empty cache
        f.unlink()

    resumed = reference(tmp_path, "--max-epochs", "2")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from the exported" in resumed.stdout
    rows = json.loads(result.read_text())["rows"]
    curve = [r for r in rows if r["row"] == "curve"]
    assert curve[0] == first[0] and curve[1]["epoch"] == 2  # epoch 1 was not trained again
    assert [r["from_epoch"] for r in rows if r["row"] == "session"] == [0, 1]
    assert json.loads(result.read_text())["config"]["train"]["lr_schedule"] == "burda"
    assert [r["k"] for r in rows if r["row"] == "test"] == [1, 2]


def test_sigterm_keeps_the_time_spent(tmp_path):
    folders = ["--root", str(tmp_path / "cache"), "--exports", str(tmp_path / "exports")]
    run = ["--run", "mlp-400-20-burda", "--every", "1000", "--max-epochs", "3280"]
    folders += ["--out", str(tmp_path / "out")]
    command = [sys.executable, str(SCRIPT), *run, *folders]
    state = tmp_path / "cache" / "mlp-400-20-burda-seed0" / "state.json"
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        deadline = time.monotonic() + 300
        while "checkpoints in" not in process.stdout.readline():
            assert time.monotonic() < deadline and process.poll() is None
        time.sleep(3)  # training its first epochs: no curve row, no save of its own
        process.terminate()
        out, _ = process.communicate(timeout=60)
    assert process.returncode == 0 and "stopped; the time spent is saved" in out
    assert json.loads(state.read_text())["wall_seconds"] >= 3
