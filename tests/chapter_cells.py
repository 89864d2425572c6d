"""What makes a chapter cell a check cell: the asserts of a section, folded away from the reading.

A check cell is a code cell tagged `hide-input` whose metadata carries CHECK_METADATA: the site
folds it behind "Show the checks" (myst-nb) and JupyterLab opens it collapsed (`source_hidden`).
"""

CHECK_TAG = "hide-input"
CHECK_METADATA = {
    "mystnb": {"code_prompt_show": "Show the checks", "code_prompt_hide": "Hide the checks"},
    "jupyter": {"source_hidden": True},
}


def is_check_cell(cell: dict) -> bool:
    """A code cell tagged and folded as the checks of its section."""
    meta = cell.get("metadata", {})
    return (
        cell["cell_type"] == "code"
        and CHECK_TAG in meta.get("tags", [])
        and all(
            meta.get(key, {}).get(k) == v for key, d in CHECK_METADATA.items() for k, v in d.items()
        )
    )


def make_check_cell(cell: dict) -> dict:
    """Tag and fold `cell` (an nbformat code cell) as a check cell, in place; returns it."""
    meta = cell.setdefault("metadata", {})
    tags = meta.setdefault("tags", [])
    if CHECK_TAG not in tags:
        tags.append(CHECK_TAG)
    for key, d in CHECK_METADATA.items():
        meta.setdefault(key, {}).update(d)
    return cell
