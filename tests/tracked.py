"""Check that running the chapters leaves every tracked file but the notebooks unchanged.

    python tests/tracked.py --before STATE   # hash the tracked files into STATE (JSON)
    python tests/tracked.py --after STATE    # compare; exit 1 naming each file that changed

The tracked files are `git ls-files` of the repository holding the current directory, less the
chapters themselves (book/*.ipynb), which executing them rewrites on purpose. A chapter that writes
into the repository (a figure, a site asset, a result file) makes a reader's tree dirty and
publishes their run with the next `make book`; `make test` and `make notebooks` run this around the
chapters.
"""

import argparse
import fnmatch
import hashlib
import json
import subprocess
import sys
from pathlib import Path

EXCLUDED = ("book/*.ipynb",)  # rewritten on purpose by executing the chapters


def tracked_hashes(root: Path) -> dict[str, str]:
    """{path: sha256 of its bytes, or "missing"} for every tracked file not in EXCLUDED."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=root, check=True, capture_output=True
    ).stdout.decode()
    hashes = {}
    for name in filter(None, listed.split("\0")):
        if any(fnmatch.fnmatch(name, pattern) for pattern in EXCLUDED):
            continue
        path = root / name
        hashes[name] = (
            hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"
        )
    return hashes


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Paths whose hash differs, and paths tracked in only one of the two."""
    return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--before", metavar="STATE", help="write the tracked files' hashes here")
    group.add_argument("--after", metavar="STATE", help="compare with the hashes written here")
    args = parser.parse_args(argv)
    root = Path(
        subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], check=True, capture_output=True, text=True
        ).stdout.strip()
    )
    now = tracked_hashes(root)
    if args.before:
        Path(args.before).write_text(json.dumps(now, indent=0, sort_keys=True))
        return 0
    state = Path(args.after)
    if not state.is_file():
        print(
            f"tracked.py: no state file {state}: run with --before {state} first", file=sys.stderr
        )
        return 2
    different = changed(json.loads(state.read_text()), now)
    if different:
        print("Running the chapters changed these tracked files (only book/*.ipynb may change):")
        print("\n".join(f"  {p}" for p in different))
        print("Restore them with `git checkout -- <file>` and make the chapter write elsewhere.")
        return 1
    print(f"tracked.py: {len(now)} tracked files unchanged (notebooks excluded)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
