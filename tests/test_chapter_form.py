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
