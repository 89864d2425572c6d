"""How a chapter's trained-model numbers vary with the seeds: its checked claims and their table.

A chapter records each number a claim rests on inside the assert that pins it:

    claims = Claims("07_collapse")
    assert claims.check("rate at β = 10", rate, 0.5, 2, needs=5)  # "about 1 nat"

`check` is the assert's tolerance, lo < value < hi (None: no bound); `needs` is the threshold the
claim needs (the value must stay above it when it lies below the tolerance, below it when above;
None: the tolerance's bound is the claim). `benchmarks/seed_spread.py` runs the chapter with its
`SEED_SHIFT` at 0, 1 and 2 and stores every recorded value in a result file (kind "seed_spread",
one run per chapter); `Claims.table()` shows each quantity's value, its range over those seeds,
the tolerance and the threshold, and fails when a stored value lies outside the tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from vae_tutorial.results import describe, load_results, markdown_table

KIND = "seed_spread"


@dataclass(frozen=True)
class Claim:
    """A checked number: its value in this run, the assert's tolerance, the claim's threshold."""

    value: float
    lo: float | None
    hi: float | None
    needs: float | None

    def holds(self, value: float) -> bool:
        """lo < value < hi, the assert's tolerance."""
        return (self.lo is None or value > self.lo) and (self.hi is None or value < self.hi)

    def tolerance(self) -> str:
        """The assert's accepted range, as text (4 significant digits, like the values)."""
        if self.lo is not None and self.hi is not None:
            return f"{self.lo:.4g} to {self.hi:.4g}"
        return f"> {self.lo:.4g}" if self.lo is not None else f"< {self.hi:.4g}"

    def threshold(self) -> str:
        """What the claim needs of the value: above or below `needs`, or the tolerance itself."""
        if self.needs is None:
            return "the tolerance"
        above = self.lo is not None and self.needs <= self.lo
        return f"{'>' if above else '<'} {self.needs:.4g}"


class Table(str):
    """Markdown text that Jupyter and myst-nb show as a table (text/markdown), and print as is."""

    def _repr_markdown_(self) -> str:
        return str(self)

    def __repr__(self) -> str:
        return str(self)


class Claims:
    """The numbers a chapter's claims rest on, each recorded by the assert that checks it."""

    def __init__(self, chapter: str):
        self.chapter = chapter
        self.claims: dict[str, Claim] = {}

    def check(
        self,
        name: str,
        value: float,
        lo: float | None = None,
        hi: float | None = None,
        *,
        needs: float | None = None,
    ) -> bool:
        """Record `value` under `name`; True when lo < value < hi (the assert's tolerance)."""
        value = float(value)
        if lo is None and hi is None:
            raise ValueError(f"{name!r}: give a tolerance, lo or hi (or both)")
        if not math.isfinite(value):
            raise ValueError(f"{name!r}: expected a finite value, got {value}")
        if needs is not None and not (
            (lo is not None and needs <= lo) or (hi is not None and needs >= hi)
        ):
            raise ValueError(
                f"{name!r}: the threshold {needs:g} lies inside the tolerance ({lo}, {hi}); "
                "narrow the tolerance so that it stays on the claim's side of the threshold"
            )
        self.claims[name] = Claim(value, lo, hi, needs)
        return self.claims[name].holds(value)

    def values(self) -> dict[str, float]:
        """Each recorded quantity's value in this run (what benchmarks/seed_spread.py stores)."""
        return {name: claim.value for name, claim in self.claims.items()}

    def table(self, directory: str | Path | None = None) -> Table:
        """A Markdown table: this run, the stored range over seeds, the tolerance, the threshold.

        Reads the newest complete "seed_spread" run of this chapter; raises when there is none,
        when it lacks a quantity, or when one of its values lies outside the tolerance.
        """
        runs = [
            r
            for r in load_results(KIND, complete=True, directory=directory)
            if r.config.get("run") == self.chapter
        ]
        if not runs:
            raise LookupError(
                f"no seed_spread result for {self.chapter}: run "
                f"python benchmarks/seed_spread.py --chapters {self.chapter}"
            )
        run = runs[-1]
        shifts = sorted({row["seed_shift"] for row in run.select(chapter=self.chapter)})
        rows = []
        for name, claim in self.claims.items():
            stored = [row["value"] for row in run.select(chapter=self.chapter, quantity=name)]
            if len(stored) != len(shifts):
                raise LookupError(
                    f"{run.path.name} has {len(stored)} values of {name!r}, expected one per "
                    f"seed shift {shifts}: run benchmarks/seed_spread.py --chapters {self.chapter}"
                )
            outside = [v for v in stored if not claim.holds(v)]
            if outside:
                raise AssertionError(
                    f"{name!r}: the seeds gave {outside}, outside the tolerance "
                    f"{claim.tolerance()} ({run.path.name}); the claim does not hold over seeds"
                )
            spread = f"{min(stored):.4g} to {max(stored):.4g}"
            cells = [name, f"{claim.value:.4g}", spread, claim.tolerance(), claim.threshold()]
            rows.append([cell.replace("|", "\\|") for cell in cells])  # "|" ends a table cell
        shown = ", ".join(map(str, shifts))
        header = ["quantity", "this run", f"range, seed shifts {shown}", "tolerance", "claim needs"]
        caption = f"Seed shifts {shown} measured on {describe(run)} ({run.path.name})."
        return Table(markdown_table(header, rows) + "\n\n" + caption)
