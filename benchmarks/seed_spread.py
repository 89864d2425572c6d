"""How each chapter's checked numbers vary with the seeds, and whether its checks hold when they do.

Each chapter's Settings cell holds `SEED_SHIFT = 0`, and every seed in the chapter is written
relative to it; its asserts record the numbers their claims rest on in `claims`
(`vae_tutorial.seed_spread.Claims`). This script runs a scratch copy of a chapter for each shift,
in a fresh kernel (nbclient), with that one line changed and no assert touched:

- measure (default): shifts 0, 1, 2; stores each recorded number in
  `benchmarks/results/seed_spread-<chapter>-cpu-<date>.json`, one file per chapter, which the
  chapter's "How these numbers vary" table reads. A run in which an assert fails stops there.
  Shift 0 runs last; its kernel then runs the table cell (left out of the other runs) and its
  output is stored in the chapter, whose other cells and outputs stay as they are.
- `--nbval SHIFT`: runs nbval (the stored outputs compared, as `make test` does) on a scratch copy
  shifted by SHIFT, in book/ beside the chapter, removed afterwards: the check that the chapter's
  asserts hold over seeds and that no compared output depends on them.

Trained models go to the usual cache (`VAE_TUTORIAL_DATA`/models), so a later run with the same
shift reuses them.

    python benchmarks/seed_spread.py [--chapters 07_collapse ...] [--shifts 0 1 2]
    python benchmarks/seed_spread.py --nbval 1 [--chapters 07_collapse ...]
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import yaml
from arguments import OneLineParser, int_in  # beside this file
from nbclient import NotebookClient

from vae_tutorial.results import CHECKOUT, Result, hardware, write_result
from vae_tutorial.seed_spread import KIND

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
SHIFT_LINE = re.compile(r"^SEED_SHIFT = 0\b", re.M)
TABLE_CALL = "claims.table("  # the "How these numbers vary" cell, left out when measuring


def toc_chapters() -> list[str]:
    """The numbered chapters of _toc.yml, in book order, as stems ("01_autoencoders", ...).

    Pages without a number (the FAQ) have no seed-dependent claims and no SEED_SHIFT.
    """
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    stems = [e["file"].split("/")[-1] for e in toc["chapters"]]
    return [s for s in stems if s[:2].isdigit() and (BOOK / f"{s}.ipynb").exists()]


def shifted(chapter: str, shift: int) -> nbformat.NotebookNode:
    """The chapter with `SEED_SHIFT = shift` in its Settings cell (it must have that line)."""
    nb = nbformat.read(BOOK / f"{chapter}.ipynb", as_version=4)
    found = [c for c in nb.cells if c.cell_type == "code" and SHIFT_LINE.search(c.source)]
    if len(found) != 1:
        raise SystemExit(
            f"{chapter}: expected one code cell with a line `SEED_SHIFT = 0` (its Settings cell), "
            f"found {len(found)}"
        )
    found[0].source = SHIFT_LINE.sub(f"SEED_SHIFT = {shift}", found[0].source)
    return nb


def measure(chapter: str, shift: int, store=None) -> dict[str, float]:
    """Run the shifted chapter in a fresh kernel; the numbers its asserts recorded in `claims`.

    The table cell runs last, after `store(values)` (which writes the result file), if given.
    """
    nb = shifted(chapter, shift)
    tables = [i for i, c in enumerate(nb.cells) if TABLE_CALL in c.source]
    probe = nbformat.v4.new_code_cell("import json\nprint(json.dumps(claims.values()))")
    client = NotebookClient(nb, timeout=1800, resources={"metadata": {"path": str(BOOK)}})
    with client.setup_kernel():
        for i, cell in enumerate(nb.cells):
            if i not in tables:
                client.execute_cell(cell, i)
        nb.cells.append(probe)
        client.execute_cell(probe, len(nb.cells) - 1)
        values = json.loads(probe.outputs[0]["text"])
        if store is not None:
            store(values)
            for i in tables:
                client.execute_cell(nb.cells[i], i)
                keep_table_output(chapter, nb.cells[i])
    return values


def keep_table_output(chapter: str, ran: nbformat.NotebookNode) -> None:
    """Store the table cell's new output in the chapter; no other cell of it changes."""
    path = BOOK / f"{chapter}.ipynb"
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    (cell,) = [c for c in code if TABLE_CALL in c.source]
    cell.outputs = ran.outputs
    for output in cell.outputs:  # the count this cell has in a run of the chapter alone
        if "execution_count" in output:
            output["execution_count"] = code.index(cell) + 1
    cell.execution_count = code.index(cell) + 1  # the chapter's counts run 1, 2, ... in order
    nbformat.write(nb, path)


def nbval(chapter: str, shift: int) -> int:
    """nbval on the chapter shifted by `shift`, a scratch copy beside it; pytest's exit code."""
    scratch = BOOK / f"seed_shift_{shift}_{chapter}.ipynb"
    nbformat.write(shifted(chapter, shift), scratch)
    try:
        command = [sys.executable, "-m", "pytest", "--nbval", str(scratch), "-q"]
        command += ["--nbval-sanitize-with", str(BOOK / "sanitize.cfg"), "-p", "no:cacheprovider"]
        return subprocess.run(command, cwd=ROOT).returncode
    finally:
        scratch.unlink()


def measure_chapter(chapter: str, shifts: list[int], out: Path, command: str) -> None:
    """Every shift of one chapter into its result file, rewritten after each shift."""
    result = Result(
        kind=KIND,
        command=command,
        config={"run": chapter, "seed_shifts": shifts, "runner": "nbclient"},
        hardware=hardware("cpu"),
        units={"value": "the quantity's own unit, as the chapter's table names it"},
        notes="One row per quantity and seed shift: the value the chapter's assert recorded.",
    )

    def store(values: dict[str, float], shift: int) -> None:
        result.rows += [
            {"chapter": chapter, "seed_shift": shift, "quantity": name, "value": value}
            for name, value in values.items()
        ]
        result.complete = {row["seed_shift"] for row in result.rows} == set(shifts)
        write_result(result, out)

    for shift in sorted(shifts, key=lambda s: (s == 0, s)):  # 0 last: its kernel shows the table
        start = time.perf_counter()
        last = shift == 0
        values = measure(chapter, shift, (lambda v, s=shift: store(v, s)) if last else None)
        if not last:
            store(values, shift)
        seconds = time.perf_counter() - start
        print(f"{chapter} shift {shift}: {len(values)} numbers, {seconds:.0f} s", flush=True)
    print(f"wrote {result.path}" + (" and the chapter's table" if 0 in shifts else ""))


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="benchmarks/seed_spread.py", description=__doc__.splitlines()[0])
    parser.add_argument("--chapters", nargs="+", help="default: every chapter of _toc.yml")
    shift = int_in(0, 10**6)  # added to each chapter's seeds, which stay far below 2**32
    parser.add_argument("--shifts", nargs="+", type=shift, default=[0, 1, 2])
    parser.add_argument("--nbval", type=shift, metavar="SHIFT", help="check instead of measure")
    parser.add_argument("--out", type=Path, default=CHECKOUT, help="folder of result files")
    args = parser.parse_args(argv)
    chapters = toc_chapters()
    unknown = sorted(set(args.chapters or []) - set(chapters))
    if unknown:
        parser.error(f"not a chapter of _toc.yml: {', '.join(unknown)}; chapters: {chapters}")
    if len(set(args.shifts)) < 3:
        parser.error(f"--shifts: a spread needs 3 different shifts or more, got {args.shifts}")
    chosen = args.chapters or chapters
    if args.nbval is not None:
        failed = [c for c in chosen if nbval(c, args.nbval) != 0]
        print(f"seed shift {args.nbval}: {len(chosen) - len(failed)} of {len(chosen)} passed nbval")
        print(*(f"  failed: {c}" for c in failed), sep="\n")
        return 1 if failed else 0

    command = "benchmarks/seed_spread.py " + " ".join(argv if argv is not None else sys.argv[1:])
    for chapter in chosen:
        measure_chapter(chapter, args.shifts, args.out, command.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
