"""Run the unit tests and the chapters (nbval) under several CPU kernel paths: `make portability`.

Each path is a set of environment variables that caps the instruction set of PyTorch's own kernels
(ATen), of MKL and of oneDNN. The variables are case-sensitive and silently ignored when misspelt,
so each run first asserts that its path took effect: ATen's `get_cpu_capability()`, oneDNN's
`isa:` banner (ONEDNN_VERBOSE=1) and MKL's banner (MKL_VERBOSE=1), where MKL names one; on CPUs
not made by Intel it prints "Intel(R) Architecture processors" whatever it runs, and says so.
The chapters train their models afresh under each path, in a model cache of the path's own
(`_build/portability/<path>-data/models`, the MNIST files linked from the checkout's data folder):
a model trained under another path would hide what this one's kernels do to training.
Each run's wall time and what each library ran go into benchmarks/results/portability-cpu-*.json.
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from vae_tutorial.download import default_root
from vae_tutorial.results import Result, Scalar, hardware, write_result

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "_build" / "portability"

# path: (its variables, ATen's capability, oneDNN's isa, MKL's instruction set in its banner)
PATHS = {
    "native": ({}, None, None, None),
    "avx2": (
        {
            "ATEN_CPU_CAPABILITY": "avx2",
            "MKL_ENABLE_INSTRUCTIONS": "AVX2",
            "ONEDNN_MAX_CPU_ISA": "AVX2",
        },
        "AVX2",
        "AVX2",
        "AVX2",
    ),
    "default": (
        {
            "ATEN_CPU_CAPABILITY": "default",
            "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
            "ONEDNN_MAX_CPU_ISA": "SSE41",
        },
        "DEFAULT",
        "SSE4.1",
        "SSE4.2",
    ),
}
VARIABLES = sorted({name for env, *_ in PATHS.values() for name in env})

# One matrix product through MKL and one convolution through oneDNN, each printing its banner.
PROBE = """
import torch
print("aten:", torch.backends.cpu.get_cpu_capability(), flush=True)
torch.randn(64, 64) @ torch.randn(64, 64)
with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
    torch.nn.Conv2d(16, 32, 3)(torch.randn(8, 16, 28, 28))
"""


def environment(path: str, threads: int | None) -> dict[str, str]:
    """os.environ with the path's variables (and none of the others); threads caps OMP and MKL."""
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    env.update(PATHS[path][0])
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def check_path(path: str, env: dict[str, str]) -> dict[str, str]:
    """Assert that the path took effect; return what ATen, oneDNN and MKL run."""
    _, aten, onednn, mkl = PATHS[path]
    probe = {**env, "MKL_VERBOSE": "1", "ONEDNN_VERBOSE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=probe, capture_output=True, text=True, check=True
    ).stdout
    got_aten = re.search(r"^aten: (\S+)", out, re.M).group(1)
    isa = re.search(r"isa:(.*)", out)
    got_onednn = isa.group(1).strip() if isa else "no banner"
    banner = re.search(r"MKL_VERBOSE oneMKL.*? for (.*?), Lnx", out)
    got_mkl = banner.group(1) if banner else "no banner"
    problems = []
    if aten and got_aten != aten:
        problems.append(f"ATen runs {got_aten}, expected {aten}")
    if onednn and onednn not in got_onednn:
        problems.append(f"oneDNN runs {got_onednn!r}, expected {onednn}")
    mkl_names_isa = re.search(r"SSE|AVX", got_mkl)
    if mkl and mkl_names_isa and mkl not in got_mkl:
        problems.append(f"MKL runs {got_mkl!r}, expected {mkl}")
    if problems:
        raise SystemExit(
            f"portability: path {path!r} did not take effect ({'; '.join(problems)}); check the "
            f"spelling of {', '.join(PATHS[path][0]) or 'the inherited variables'} and that this "
            "CPU has the instruction set"
        )
    note = "" if mkl_names_isa else " (names no instruction set on this CPU)"
    return {"aten": got_aten, "onednn": got_onednn, "mkl": got_mkl + note}


def fresh_data_root(path: str) -> Path:
    """An empty model cache for `path`, beside a link to the checkout's MNIST files."""
    root = LOGS / f"{path}-data"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    (root / "MNIST").symlink_to((default_root() / "MNIST").resolve(), target_is_directory=True)
    return root


def run_path(
    path: str, chapters: list[str], units: bool, threads: int | None
) -> list[dict[str, Scalar]]:
    """Check the path, then run the unit tests and the chapters under it: one row per run."""
    env = environment(path, threads)
    kernels = check_path(path, env)
    print(f"{path}: " + "; ".join(f"{k} {v}" for k, v in kernels.items()), flush=True)
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    runs = []
    if units:
        runs.append(("units", [*pytest, "tests", "--ignore=tests/site"]))
    if chapters:
        nbval = ["--nbval", *chapters, "--nbval-sanitize-with", "book/sanitize.cfg"]
        runs.append(("chapters", [*pytest, *nbval]))
    rows = []
    for name, command in runs:
        log = LOGS / f"{path}-{name}.log"
        if name == "chapters":  # models trained under this path, not loaded from another's
            env = {**env, "VAE_TUTORIAL_DATA": str(fresh_data_root(path))}
        code, seconds = run_logged(command, env, log)
        summary = (log.read_text().strip().splitlines() or [""])[-1]
        rows.append(
            {
                "path": path,
                "run": name,
                "passed": code == 0,
                "stopped": stopped(code),
                "seconds": round(seconds, 1),
                "summary": summary,
                **kernels,
            }
        )
        verdict = "passed" if code == 0 else stopped(code) or f"FAILED (exit {code})"
        print(f"{path}: {name} {verdict} in {seconds / 60:.1f} min, {summary}; log: {log}")
    return rows


def run_logged(command: list[str], env: dict[str, str], log: Path) -> tuple[int, float]:
    """Run `command` with its output in `log`: its exit code (-N: killed by signal N), seconds."""
    tick = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.run(command, env=env, cwd=ROOT, stdout=out, stderr=out).returncode
    return code, time.perf_counter() - tick


def stopped(code: int) -> str:
    """How a run was stopped from outside, or "" when it ran to its end (passed or failed).

    A signal gives a negative code; pytest answers SIGINT (Ctrl-C) with exit code 2, "interrupted".
    A stopped run says nothing of the tests it did not reach, so the result is not complete.
    """
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return "interrupted (pytest exit 2)" if code == 2 else ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--paths", default=" ".join(PATHS), help=f"space-separated, of {', '.join(PATHS)} (all)"
    )
    parser.add_argument(
        "--chapters",
        default=None,
        help="space-separated notebooks, or 'none' (default: every book/*.ipynb)",
    )
    parser.add_argument("--no-units", action="store_true", help="skip the unit tests")
    parser.add_argument(
        "--jobs", type=int, default=1, help="paths run at once; above 1, one thread each"
    )
    args = parser.parse_args(argv)
    args.paths = args.paths.split()
    unknown = [p for p in args.paths if p not in PATHS]
    if unknown or not args.paths:
        parser.error(f"--paths: unknown {unknown or 'empty'}; choose from {', '.join(PATHS)}")
    if args.chapters is None:
        args.chapters = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "book").glob("*.ipynb"))
    elif args.chapters.strip() == "none":
        args.chapters = []
    else:
        args.chapters = args.chapters.split()
        missing = [c for c in args.chapters if not (ROOT / c).is_file()]
        if missing:
            parser.error(f"--chapters: no such notebook {missing}; give paths like book/01_*.ipynb")
    if args.jobs < 1:
        parser.error(f"--jobs: expected a positive int, got {args.jobs}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    LOGS.mkdir(parents=True, exist_ok=True)
    threads = 1 if args.jobs > 1 else None
    result = Result(
        kind="portability",
        command="tests/portability.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        config={
            "paths": args.paths,
            "chapters": args.chapters,
            "units": not args.no_units,
            "jobs": args.jobs,
            "threads_per_path": threads,
        },
        hardware=hardware("cpu"),
        units={"seconds": "s"},
        notes="Each path's variables are in tests/portability.py; aten, onednn and mkl say "
        "what each library ran, read from its banner before the run.",
    )
    with ThreadPoolExecutor(args.jobs) as pool:
        for rows in pool.map(  # a path's rows once its runs end, in the order given
            lambda p: run_path(p, args.chapters, not args.no_units, threads), args.paths
        ):
            result.rows += rows
    halted = [f"{r['path']} {r['run']}: {r['stopped']}" for r in result.rows if r["stopped"]]
    result.complete = not halted  # a run stopped from outside did not run all its tests
    print(f"portability: wrote {write_result(result)}")
    if halted:
        print("portability: incomplete, stopped from outside: " + "; ".join(halted))
    return int(not all(row["passed"] for row in result.rows))


if __name__ == "__main__":
    sys.exit(main())
