"""The benchmark scripts check every argument at parse time: a mistake is one line on stderr and
status 2, never a traceback, and nothing starts (no file, no training) before it is refused."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
CASES = [
    ("reference.py", ["--threads", "0"], "--threads: expected a whole number in [1, 256], got '0'"),
    ("reference.py", ["--max-epochs", "0"], "--max-epochs: expected a whole number in [1, 10000"),
    ("reference.py", ["--ks", "100,0"], "--ks: expected a whole number in [1, 100000], got '0'"),
    ("reference.py", ["--train-hours", "0"], "--train-hours: expected hours in (0, 10000]"),
    ("reference.py", ["--seed", "-1"], "--seed: expected a whole number in [0, 4294967295]"),
    ("reference.py", ["--run", "burda-vae-1l", "--threads", "0"], "--threads: expected"),
    (
        "reference.py",
        ["--run", "mlp-400-20-burda", "--max-epochs", "3281"],
        "--max-epochs: TrainConfig: lr_schedule='burda' lasts 3280 epochs, got epochs=3281",
    ),
    ("train_speed.py", ["--steps", "0"], "--steps: expected a whole number in [1, 1000000]"),
    ("train_speed.py", ["--batch-sizes", "32,0"], "--batch-sizes: expected a whole number"),
    ("train_speed.py", ["--device", "cuda:99"], "--device: "),
    ("seed_spread.py", ["--shifts", "0", "1", "-2"], "--shifts: expected a whole number in [0,"),
    ("chapter_times.py", ["--only", "no-such-chapter"], "not a chapter of _toc.yml: no-such"),
    ("report.py", ["--no-such-option"], "unrecognized arguments: --no-such-option"),
    ("burda_step_time.py", ["--threads", "1,0"], "--threads: expected a whole number in [1, 256]"),
    ("burda_step_time.py", ["--rounds", "0"], "--rounds: expected a whole number in [1, 1000]"),
]


@pytest.mark.parametrize(("script", "argv", "message"), CASES)
def test_a_bad_argument_is_one_line_and_status_2(script, argv, message, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, str(BENCHMARKS / script), *argv, "--out", str(out)]
    if script == "report.py":
        command = command[:-2]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith(f"benchmarks/{script}: error: ")
    assert message in done.stderr, done.stderr
    assert done.stdout == "" and not out.exists() and list(tmp_path.iterdir()) == []


def _arguments():
    spec = importlib.util.spec_from_file_location("arguments", BENCHMARKS / "arguments.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_bounds_themselves_are_accepted():
    arguments = _arguments()
    assert arguments.int_in(1, 256)("256") == 256 and arguments.int_in(1, 256)("1") == 1
    assert arguments.ints_in(1, 100_000)("1,100000") == [1, 100_000]
    assert arguments.hours("10000") == 1e4
    for bad in ("257", "0", "1.5", "x", ""):
        with pytest.raises(Exception, match="expected a whole number in"):
            arguments.int_in(1, 256)(bad)
    with pytest.raises(Exception, match=r"expected hours in \(0, 10000\], got '10001'"):
        arguments.hours("10001")
