"""Apply each break in mutants/*.patch to a scratch copy of the repo, run the tests, report.

Usage: python mutants/run.py [--no-baseline] [--jobs N] [PATCH ...]   (no PATCH: every patch)

First the tests the patches name run once on an unpatched scratch copy (the baseline): they must
pass, or a failure under a patch would prove nothing. Then a break is caught when the tests fail
under it. The script exits 1 if the baseline fails or any break is missed or no longer applies,
0 when every break is caught. Each patch may name the test files to run on
a line `Tests: tests/test_a.py tests/test_b.py` above its diff; without one, all unit tests run.
The scratch copy is imported instead of the checkout: PYTHONPATH points at it, and the script
checks where `vae_tutorial` is imported from before running the tests.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = ROOT / ".venv" / "bin" / "python"
IGNORED = shutil.ignore_patterns(
    ".venv", "data", "_build", ".git", "__pycache__", ".pytest_cache", ".ruff_cache", "*.pt"
)


def SKIP(folder: str, names: list[str]) -> set[str]:
    """What the scratch copy leaves out: caches, data, checkpoints (but tests/fixtures' own)."""
    if Path(folder).resolve() == ROOT / "tests" / "fixtures":
        return set()
    return IGNORED(folder, names)


PYTEST = ["-m", "pytest", "--ignore=tests/site", "-x", "-q", "-p", "no:cacheprovider"]


def tests_named(patch: Path) -> list[str]:
    """The test files on the patch's `Tests:` line, or the whole tests folder."""
    match = re.search(r"^Tests:(.*)$", patch.read_text(), flags=re.MULTILINE)
    return match.group(1).split() if match else ["tests"]


def environment(scratch: Path) -> dict[str, str]:
    """The scratch package first on the path; MNIST from the real data folder."""
    env = dict(os.environ, PYTHONPATH=str(scratch), PYTHONDONTWRITEBYTECODE="1")
    env.setdefault("VAE_TUTORIAL_DATA", str(ROOT / "data"))
    env.pop("CI", None)
    return env


def imported_from(scratch: Path, env: dict[str, str]) -> Path:
    """Where the scratch interpreter imports vae_tutorial from."""
    probe = "import vae_tutorial, pathlib; print(pathlib.Path(vae_tutorial.__file__).parent)"
    out = subprocess.run(
        [PYTHON, "-c", probe], cwd=scratch, env=env, capture_output=True, text=True, check=True
    )
    return Path(out.stdout.strip())


def run_one(patch: Path | None, tests: list[str]) -> str:
    """'caught', 'MISSED', or 'DOES NOT APPLY' / 'ERROR ...' for one patch (None: no patch)."""
    with tempfile.TemporaryDirectory(prefix="vae-mutant-") as tmp:
        scratch = Path(tmp) / "repo"
        shutil.copytree(ROOT, scratch, ignore=SKIP)
        applied = subprocess.run(
            ["patch", "-p1", "--forward", "--batch", "-i", str(patch or os.devnull)],
            cwd=scratch,
            capture_output=True,
            text=True,
        )
        if patch is not None and applied.returncode != 0:
            return "DOES NOT APPLY: " + applied.stdout.strip().replace("\n", " | ")
        env = environment(scratch)
        where = imported_from(scratch, env)
        if where != scratch / "vae_tutorial":
            return f"ERROR: the tests would import {where}, not the scratch copy"
        result = subprocess.run(
            [PYTHON, *PYTEST, *tests],
            cwd=scratch,
            env=env,
            capture_output=True,
            text=True,
        )
        if result.returncode == 1:
            failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
            first = failed[0].removeprefix("FAILED ").split(" - ")[0] if failed else ""
            return "caught" + (f" by {first[:110]}" if first else "")
        if result.returncode == 0:
            return "MISSED"
        tail = (result.stdout + result.stderr).strip().splitlines()[-3:]
        return f"ERROR (pytest exit {result.returncode}): " + " | ".join(tail)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Apply each break, run its tests, report.")
    parser.add_argument("patches", nargs="*", type=Path, help="default: every mutants/*.patch")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unpatched run")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        choices=range(1, 17),
        metavar="N",
        help="patches run at once, each with one torch thread (1 to 16; default 1)",
    )
    args = parser.parse_args(argv)
    patches = [p.resolve() for p in args.patches] or sorted((ROOT / "mutants").glob("*.patch"))
    if not patches:
        print("no patches in mutants/", file=sys.stderr)
        return 1
    if not PYTHON.exists():
        print(f"error: expected {PYTHON}; run `make test` once to create .venv", file=sys.stderr)
        return 1
    if args.jobs > 1:
        os.environ["OMP_NUM_THREADS"] = "1"  # N patches at once share the cores
    if not args.no_baseline:
        named = {t: None for patch in patches for t in tests_named(patch)}
        tests = ["tests"] if "tests" in named else list(named)
        start = time.monotonic()
        result = run_one(None, tests)
        passed = result == "MISSED"  # without a patch, the tests must pass
        elapsed = f"{time.monotonic() - start:.0f} s"
        print(f"baseline, no patch: {'passed' if passed else result} ({elapsed})", flush=True)
        if not passed:
            print("the tests fail without any patch: fix them first", file=sys.stderr)
            return 1

    def one(patch: Path) -> str:
        start = time.monotonic()
        result = run_one(patch, tests_named(patch))
        print(f"{patch.name}: {result} ({time.monotonic() - start:.0f} s)", flush=True)
        return result

    with ThreadPoolExecutor(args.jobs) as pool:
        results = dict(zip((p.name for p in patches), pool.map(one, patches), strict=True))
    caught = sum(r.startswith("caught") for r in results.values())
    print(f"{caught} of {len(results)} breaks caught")
    return 0 if caught == len(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
