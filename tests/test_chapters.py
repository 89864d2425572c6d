"""Chapters as committed: in the contents, runnable in Colab, stored with clean outputs."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from vae_tutorial import __version__

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
# A page of the book is a Markdown file or, for a chapter, a notebook.
PAGES = [
    ROOT / f"{entry['file']}.md"
    if (ROOT / f"{entry['file']}.md").exists()
    else ROOT / f"{entry['file']}.ipynb"
    for entry in TOC["chapters"]
]
CHAPTERS = [page for page in PAGES if page.suffix == ".ipynb"]


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def test_every_page_in_the_table_of_contents_exists():
    assert [page for page in PAGES if not page.exists()] == []


def test_every_notebook_in_book_is_in_the_table_of_contents():
    assert sorted(ROOT.glob("book/*.ipynb")) == sorted(CHAPTERS)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_first_cell_installs_the_package_in_colab_from_the_configured_repository(path):
    first = cells(path)[0]
    assert first["cell_type"] == "code"
    assert "remove-cell" in first["metadata"].get("tags", []), "hide the Colab cell on the site"
    text = source(first)
    assert 'if "google.colab" in sys.modules:' in text
    assert f'"git+{CONFIG["repository"]["url"]}@{RELEASE}"' in text, (
        f"{path.name}: the Colab cell must install release {RELEASE} from repository.url in "
        "_config.yml: the package this book was built with, not the repository's moving head"
    )


RELEASE = f"v{__version__}"  # the git tag of this version of the package


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


@pytest.mark.skipif(
    shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout"
)
def test_the_release_the_colab_cell_installs_holds_this_package():
    """The tag v<version> holds the package as it is here: change it, and bump the version."""
    if git("rev-parse", "--verify", "--quiet", f"refs/tags/{RELEASE}").returncode:
        pytest.skip(f"this clone has no tag {RELEASE} (cloned without tags)")
    package = ["vae_tutorial", "benchmarks/results", "pyproject.toml"]  # results: in the wheel
    changed = git("diff", "--name-only", RELEASE, "--", *package)
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout == "", (
        f"the package changed since {RELEASE}, which the chapters' Colab cell installs:\n"
        f"{changed.stdout}bump vae_tutorial.__version__, the chapters' pins, and tag the release"
    )


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_is_stored_executed_with_a_figure_and_no_noise(path):
    code = [c for c in cells(path) if c["cell_type"] == "code"]
    counts = [c["execution_count"] for c in code if c["execution_count"] is not None]
    assert counts == list(range(1, len(code) + 1)), f"{path.name}: run it top to bottom once"
    outputs = [o for c in code for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"], f"{path.name} stores an error"
    stderr = [o for o in outputs if o.get("name") == "stderr"]
    assert not stderr, f"{path.name} stores stderr (warnings or progress bars): {stderr[:1]}"
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name} has no figure"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_has_a_settings_cell_and_exercises_with_solutions(path):
    text = "\n".join(source(c) for c in cells(path))
    assert "Settings" in text, f"{path.name}: mark the settings cell"
    assert "Exercises" in text and ":class: dropdown" in text, (
        f"{path.name}: exercises with solutions"
    )
