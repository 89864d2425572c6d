"""A chapter's checked claims and the table of their spread over seeds, read from a result file."""

import json
import re
from pathlib import Path

import pytest
import yaml

from vae_tutorial.results import Result, load_results, write_result
from vae_tutorial.seed_spread import KIND, Claims

HARDWARE = {"device": "cpu", "cpu_model": "test CPU", "cpu_cores": 2, "gpu": None}


def stored(directory, chapter, values, complete=True, date="2026-12-07T00:00:00Z"):
    """A seed_spread result file: values maps a quantity to its values at shifts 0, 1, 2, ..."""
    rows = [
        {"chapter": chapter, "seed_shift": shift, "quantity": name, "value": value}
        for name, per_shift in values.items()
        for shift, value in enumerate(per_shift)
    ]
    result = Result(
        kind=KIND,
        command="test",
        config={"run": chapter, "seed_shifts": [0, 1, 2]},
        hardware={**HARDWARE, "torch_threads": 2, "load_average_1min": 0.5},
        date_utc=date,
        complete=complete,
        rows=rows,
    )
    return write_result(result, directory)


def test_check_is_the_tolerance_and_records_the_value():
    claims = Claims("07_collapse")
    assert claims.check("rate", 1.2, 0.5, 2)
    assert not claims.check("gap", 49.0, 50)
    assert not claims.check("ratio", 3.5, hi=3)
    assert claims.check("kl", 0.05, hi=0.1)
    assert claims.values() == {"rate": 1.2, "gap": 49.0, "ratio": 3.5, "kl": 0.05}


def test_the_tolerance_excludes_its_bounds_and_a_threshold_at_a_bound_keeps_its_side():
    claims = Claims("07_collapse")
    assert not claims.check("at lo", 0.5, 0.5, 2) and not claims.check("at hi", 2.0, 0.5, 2)
    assert claims.check("just inside", 0.5000001, 0.5, 2)
    claims.check("above", 60.0, 55, needs=55)  # needs == lo: the value must stay above 55
    claims.check("below", 0.05, hi=0.1, needs=0.1)  # needs == hi: it must stay below 0.1
    assert claims.claims["above"].threshold() == "> 55"
    assert claims.claims["below"].threshold() == "< 0.1"


def test_bounds_are_shown_to_four_significant_digits_like_the_values():
    claims = Claims("09_stronger_models")
    claims.check("ratio", 1.0, 1 / 3, 3)
    claims.check("gap", 4.47214, 4.32214, needs=3.01228)
    claims.check("tiny", 1e-14, hi=1e-12)
    assert claims.claims["ratio"].tolerance() == "0.3333 to 3"
    assert claims.claims["gap"].tolerance() == "> 4.322"
    assert claims.claims["gap"].threshold() == "> 3.012"
    assert claims.claims["tiny"].tolerance() == "< 1e-12"


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((1.0,), {}, "give a tolerance"),
        ((float("nan"), 0), {}, "finite"),
        ((5.0, 4, 6), {"needs": 5}, "inside the tolerance"),
        ((5.0, 4), {"needs": 4.5}, "inside the tolerance"),
    ],
)
def test_check_rejects_a_missing_tolerance_a_nan_and_a_threshold_inside_it(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Claims("07_collapse").check("x", *args, **kwargs)


def test_table_shows_this_run_the_stored_range_the_tolerance_and_the_threshold(tmp_path):
    stored(tmp_path, "07_collapse", {"rate": [1.0, 1.4, 0.8], "gap": [60.0, 58.5, 61.0]})
    stored(tmp_path, "08_conditional", {"rate": [9.0, 9.0, 9.0]})  # another chapter's run
    claims = Claims("07_collapse")
    claims.check("rate", 1.1, 0.5, 2)
    claims.check("gap", 59.0, 55, needs=50)
    lines = claims.table(tmp_path).splitlines()
    cells = [[cell.strip() for cell in line.split("|")[1:-1]] for line in lines[2:4]]
    assert cells[0] == ["rate", "1.1", "0.8 to 1.4", "0.5 to 2", "the tolerance"]
    assert cells[1] == ["gap", "59", "58.5 to 61", "> 55", "> 50"]
    assert "test CPU" in lines[-1] and "2026-12-07" in lines[-1]
    assert claims.table(tmp_path)._repr_markdown_() == claims.table(tmp_path)


def test_table_escapes_a_bar_in_a_quantity_name(tmp_path):
    stored(tmp_path, "02_elbo", {"|MC - exact| / se": [1.0, 2.0, 3.0]})
    claims = Claims("02_elbo")
    claims.check("|MC - exact| / se", 1.0, hi=4)
    assert claims.table(tmp_path).splitlines()[2].startswith("| \\|MC - exact\\| / se ")


def test_table_reads_the_newest_complete_run_of_the_chapter(tmp_path):
    stored(tmp_path, "07_collapse", {"rate": [1.0, 1.0, 1.0]}, date="2026-12-01T00:00:00Z")
    stored(tmp_path, "07_collapse", {"rate": [1.5, 1.6, 1.7]}, date="2026-12-02T00:00:00Z")
    stored(tmp_path, "07_collapse", {"rate": [9, 9, 9]}, complete=False, date="2026-12-03T00:00Z")
    claims = Claims("07_collapse")
    claims.check("rate", 1.1, 0.5, 2)
    assert "1.5 to 1.7" in claims.table(tmp_path)


def test_table_fails_when_a_seed_lies_outside_the_tolerance(tmp_path):
    stored(tmp_path, "07_collapse", {"rate": [1.0, 2.4, 0.8]})
    claims = Claims("07_collapse")
    claims.check("rate", 1.1, 0.5, 2)
    with pytest.raises(AssertionError, match=r"'rate': the seeds gave \[2.4\]"):
        claims.table(tmp_path)


def test_table_names_the_command_when_the_run_or_a_quantity_is_missing(tmp_path):
    claims = Claims("07_collapse")
    claims.check("rate", 1.1, 0.5, 2)
    with pytest.raises(LookupError, match="seed_spread.py --chapters 07_collapse"):
        claims.table(tmp_path)
    stored(tmp_path, "07_collapse", {"gap": [60.0, 58.5, 61.0]})
    with pytest.raises(LookupError, match="0 values of 'rate'"):
        claims.table(tmp_path)


ROOT = Path(__file__).resolve().parents[1]
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
CHAPTERS = [ROOT / f"{e['file']}.ipynb" for e in TOC["chapters"] if e["file"].startswith("book/")]
CHAPTERS = [path for path in CHAPTERS if path.exists()]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_a_chapter_with_a_spread_table_can_be_shifted_and_has_its_measurement(path):
    code = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    sources = ["".join(c["source"]) for c in code]
    if not any("claims.table(" in s for s in sources):
        pytest.skip("no seed-spread table in this chapter")
    shift_lines = [s for s in sources if re.search(r"^SEED_SHIFT = 0\b", s, re.M)]
    assert len(shift_lines) == 1, "one `SEED_SHIFT = 0` line, in the Settings cell"
    runs = [r for r in load_results(KIND, complete=True) if r.config.get("run") == path.stem]
    assert runs, f"run python benchmarks/seed_spread.py --chapters {path.stem}"
    assert len({row["seed_shift"] for row in runs[-1].rows}) >= 3, "3 seeds or more"
