"""Citations: author and year in Jupyter, a real bib entry each, {cite} roles on the site."""

import json
import re
import sys
from pathlib import Path

import pytest
from pybtex.database import parse_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "_ext"))
import citations  # noqa: E402  (book/_ext/citations.py, the Sphinx extension)

ENTRIES = parse_file(str(ROOT / "book" / "references.bib")).entries
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))


def markdown(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_notebook_cites_with_a_role_jupyter_cannot_show(path):
    assert re.findall(r"\{cite[:\w]*\}`[^`]*`", markdown(path)) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_citation_link_names_a_bib_entry_by_its_first_author_and_year(path):
    for text, key in citations.LINK.findall(markdown(path)):
        assert key in ENTRIES, f"{path.stem}: {key} is not in book/references.bib"
        entry = ENTRIES[key]
        first = (
            entry.persons["author"][0].last_names[-1].strip("{}")
            if "author" in entry.persons
            else None
        )
        assert entry.fields["year"] in text and (first is None or first in text), (text, key)


def test_the_site_reads_a_citation_link_as_a_cite_role():
    source = ['{"source": ["as [Burda et al., 2016](references.md#burda2016importance) show"]}']
    citations.on_source_read(None, "chapter", source)
    assert "{cite}`burda2016importance`" in source[0] and "references.md#" not in source[0]


def test_a_role_becomes_one_link_per_key_and_back():
    text = "{cite}`kingma2014autoencoding,rezende2014stochastic` derive it"
    links = citations.as_links(text, ENTRIES)
    assert links.startswith("[Kingma and Welling, 2014](references.md#kingma2014autoencoding); ")
    assert "[Rezende et al., 2014](references.md#rezende2014stochastic) derive it" in links
    assert citations.as_roles(links).count("{cite}") == 2
