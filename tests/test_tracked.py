"""tests/tracked.py: a tracked file written between --before and --after is reported."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "tracked.py"


@pytest.fixture
def repo(tmp_path):
    """A git repository with a tracked file, a tracked chapter and an untracked file."""

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "book").mkdir()
    (tmp_path / "asset.js").write_text("weights = 1\n")
    (tmp_path / "book" / "01_x.ipynb").write_text("{}\n")
    git("add", "asset.js", "book/01_x.ipynb")
    git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", "start")
    (tmp_path / "scratch.txt").write_text("untracked\n")
    return tmp_path


def run(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=repo, capture_output=True, text=True
    )


def test_an_untouched_tree_passes(repo):
    assert run(repo, "--before", "state.json").returncode == 0
    (repo / "book" / "01_x.ipynb").write_text('{"executed": true}\n')  # notebooks may change
    (repo / "scratch.txt").write_text("changed, but untracked\n")
    result = run(repo, "--after", "state.json")
    assert result.returncode == 0, result.stdout


def test_a_written_tracked_file_is_reported(repo):
    assert run(repo, "--before", "state.json").returncode == 0
    (repo / "asset.js").write_text("weights = 2\n")
    result = run(repo, "--after", "state.json")
    assert result.returncode == 1
    assert "asset.js" in result.stdout and "01_x.ipynb" not in result.stdout


def test_a_deleted_tracked_file_is_reported(repo):
    assert run(repo, "--before", "state.json").returncode == 0
    (repo / "asset.js").unlink()
    result = run(repo, "--after", "state.json")
    assert result.returncode == 1 and "asset.js" in result.stdout


def test_after_without_before_says_what_to_run(repo):
    result = run(repo, "--after", "state.json")
    assert result.returncode == 2 and "--before" in result.stderr
