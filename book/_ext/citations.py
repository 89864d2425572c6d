"""Citations a Jupyter reader can read; a bibliography the site still builds.

In the chapters a citation is a Markdown link to the references page,
`[Burda et al., 2016](references.md#burda2016importance)`: Jupyter and Colab
show author and year. On the site, this extension turns each such link back
into the role {cite}`key` before the page is parsed, so sphinxcontrib-bibtex
links and lists it as before (an unknown key fails the strict build).

    python book/_ext/citations.py book/*.ipynb  # {cite} roles -> links
"""

import re
import sys
from pathlib import Path

BIB = Path(__file__).resolve().parents[1] / "references.bib"
LINK = re.compile(r"\[([^\]\n]+)\]\(references\.md#([\w-]+)\)")
ROLE = re.compile(r"\{cite\}`([^`]+)`")


def link_text(key: str, entries: dict) -> str:
    """Author and year: "Kingma and Welling, 2014", "Burda et al., 2016"."""
    entry = entries[key]
    people = entry.persons.get("author", [])
    names = [" ".join(p.last_names) for p in people]
    if not names:  # an organisation or a project as the author
        names = [
            entry.fields.get("organization", entry.fields.get("title", key))
        ]
    who = (
        names[0]
        if len(names) == 1
        else " and ".join(names)
        if len(names) == 2
        else None
    )
    who = who or f"{names[0]} et al."
    return f"{who}, {entry.fields['year']}".replace("{", "").replace("}", "")


def as_links(markdown: str, entries: dict) -> str:
    """Every {cite} role of a Markdown text written as links, one per key."""
    return ROLE.sub(
        lambda m: "; ".join(
            f"[{link_text(k.strip(), entries)}](references.md#{k.strip()})"
            for k in m[1].split(",")
        ),
        markdown,
    )


def as_roles(text: str) -> str:
    """Every citation link of a page's source as a {cite} role."""
    return LINK.sub(lambda m: f"{{cite}}`{m[2]}`", text)


def on_source_read(app, docname, source):
    source[0] = as_roles(source[0])


def setup(app):
    app.connect("source-read", on_source_read)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    import nbformat
    from pybtex.database import parse_file

    entries = parse_file(str(BIB)).entries
    for path in sys.argv[1:]:
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "markdown":
                cell.source = as_links(cell.source, entries)
        nbformat.write(notebook, path)
