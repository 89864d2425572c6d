"""The form of a chapter: checks folded beside the reading path, take-aways, alt text, no NBVAL.

A reader reads prose and the code that teaches; the asserts that pin the prose run in check cells
(tests/chapter_cells.py), one or more per section, folded on the site and in JupyterLab.
"""

import ast
import json
import re
from pathlib import Path

import pytest
import yaml
from chapter_cells import is_check_cell, make_check_cell

ROOT = Path(__file__).resolve().parents[1]
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
NOTEBOOKS = [
    ROOT / f"{e['file']}.ipynb" for e in TOC["chapters"] if (ROOT / f"{e['file']}.ipynb").exists()
]
CHAPTERS = [p for p in NOTEBOOKS if re.match(r"\d\d_", p.name)]
TAKE_AWAYS = "## What to take away"
AFTER_TAKE_AWAYS = ("## Exercises", "## How these numbers vary")  # sections allowed after them


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def has_assert(cell: dict) -> bool:
    lines = "".join(cell["source"]).splitlines()
    source = "\n".join(ln for ln in lines if ln.lstrip()[:1] not in "%!")  # IPython magics
    return any(isinstance(node, ast.Assert) for node in ast.walk(ast.parse(source)))


def misplaced_asserts(notebook: list[dict]) -> list[int]:
    """Indices of code cells that assert outside a check cell."""
    return [
        i
        for i, cell in enumerate(notebook)
        if cell["cell_type"] == "code" and has_assert(cell) and not is_check_cell(cell)
    ]


def test_a_plain_cell_with_an_assert_is_found_and_a_check_cell_is_not():
    plain = {"cell_type": "code", "metadata": {}, "source": ["x = 1\n", "assert x == 1\n"]}
    folded = make_check_cell(json.loads(json.dumps(plain)))
    tagged_only = {**plain, "metadata": {"tags": ["hide-input"]}}
    assert misplaced_asserts([plain, folded, tagged_only]) == [0, 2]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_assert_sits_in_a_check_cell_that_prints_nothing(path):
    notebook = cells(path)
    assert misplaced_asserts(notebook) == [], "move these asserts into the section's check cell"
    noisy = [i for i, c in enumerate(notebook) if is_check_cell(c) and c.get("outputs")]
    assert noisy == [], f"check cells {noisy} have output: a check prints nothing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_cell_carries_an_nbval_comment(path):
    marked = [i for i, c in enumerate(cells(path)) if "NBVAL" in "".join(c["source"])]
    assert marked == [], f"cells {marked}: use nbval's cell tags (nbval-ignore-output, ...)"


def sections(notebook: list[dict]) -> list[tuple[str, str]]:
    """(heading, body) of each `## ` section of the notebook's markdown."""
    text = "\n".join("".join(c["source"]) for c in notebook if c["cell_type"] == "markdown")
    parts = re.split(r"(?m)^(?=## )", text)
    return [(p.splitlines()[0].strip(), p) for p in parts if p.startswith("## ")]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_each_chapter_ends_its_teaching_with_three_to_five_take_aways(path):
    found = sections(cells(path))
    headings = [h for h, _ in found]
    assert TAKE_AWAYS in headings, f"{path.stem}: no '{TAKE_AWAYS}' section"
    after = headings[headings.index(TAKE_AWAYS) + 1 :]
    assert all(h.startswith(AFTER_TAKE_AWAYS) for h in after), f"sections after it: {after}"
    body = dict(found)[TAKE_AWAYS]
    points = re.findall(r"(?m)^[-*] ", body)
    assert 3 <= len(points) <= 5, f"{path.stem}: {len(points)} take-aways"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_figure_has_alt_text(path):
    missing = [
        i
        for i, c in enumerate(cells(path))
        if c["cell_type"] == "code"
        and any("image/png" in o.get("data", {}) for o in c.get("outputs", []))
        and not c["metadata"].get("mystnb", {}).get("image", {}).get("alt", "").strip()
    ]
    assert missing == [], f"cells {missing}: set metadata mystnb.image.alt (what the figure shows)"


PLOTTING = re.compile(r"\b(?:plt|ax|axes|fig|left|right)\.|\bshow_images\(|\bimshow\(")
WINDOW = 4  # lines: a block this long, written twice, belongs in `plots`


def code_lines(path: Path) -> list[list[str]]:
    """Each code cell's lines, stripped, without blanks, comments and lone brackets."""
    out = []
    for cell in cells(path):
        if cell["cell_type"] == "code":
            lines = (ln.strip() for ln in "".join(cell["source"]).splitlines())
            out.append([ln for ln in lines if ln and not ln.startswith("#") and ln not in ")]}"])
    return out


def repeated_plotting_blocks(paths: list[Path]) -> dict[tuple[str, ...], set[str]]:
    """Blocks of WINDOW lines, at least one of them plotting, found in two or more notebooks."""
    found: dict[tuple[str, ...], set[str]] = {}
    for path in paths:
        for lines in code_lines(path):
            for i in range(len(lines) - WINDOW + 1):
                block = tuple(lines[i : i + WINDOW])
                if any(PLOTTING.search(ln) for ln in block):
                    found.setdefault(block, set()).add(path.stem)
    return {block: where for block, where in found.items() if len(where) > 1}


def test_the_scan_finds_a_plotting_block_written_in_two_chapters(tmp_path):
    block = 'fig, ax = plt.subplots()\nax.plot(x, y)\nax.set(title="t")\nax.grid(alpha=0.3)\n'
    for name in ("a", "b"):
        cell = {"cell_type": "code", "metadata": {}, "source": [f"x = 1\n{block}"]}
        (tmp_path / f"{name}.ipynb").write_text(json.dumps({"cells": [cell]}))
    found = repeated_plotting_blocks(sorted(tmp_path.glob("*.ipynb")))
    assert found and all(where == {"a", "b"} for where in found.values())
    (tmp_path / "b.ipynb").unlink()
    assert repeated_plotting_blocks(sorted(tmp_path.glob("*.ipynb"))) == {}


def test_no_plotting_block_is_repeated_across_chapters():
    repeated = repeated_plotting_blocks(NOTEBOOKS)
    shown = [f"{sorted(where)}: {' / '.join(block)}" for block, where in repeated.items()]
    assert not repeated, "make these a function in vae_tutorial.plots:\n" + "\n".join(shown)
