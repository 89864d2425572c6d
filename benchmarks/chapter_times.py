"""Run time of every chapter in _toc.yml, each in a fresh kernel with an empty model cache.

Each chapter is executed with `jupyter execute` (kernel start included, nothing saved: the
notebooks are not modified) with `VAE_TUTORIAL_DATA` pointing to a fresh folder that holds only
the verified MNIST files, so no trained model is reused. Rows have mode "fresh".

`--warm CHAPTER` (default 06_sampling) runs that chapter once more with the model cache that the
chapters before it left ("after earlier chapters"), as when a reader runs the book in order.
`--resume FILE` keeps the fresh times of an earlier, incomplete run (a chapter that failed) and
runs only the chapters it lacks (no warm run then: the earlier chapters' caches are gone).

Writes `benchmarks/results/chapter_times-cpu-<date>.json`; then `python benchmarks/report.py`
puts the table into book/index.md.

    python benchmarks/chapter_times.py [--only 05_training] [--warm 06_sampling] [--out DIR]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from arguments import OneLineParser  # beside this file

from vae_tutorial.download import default_root, ensure_mnist
from vae_tutorial.results import CHECKOUT, Result, hardware, read_result, write_result

ROOT = Path(__file__).resolve().parents[1]
JUPYTER = Path(sys.executable).parent / "jupyter"


def toc_chapters() -> list[str]:
    """The notebook chapters of _toc.yml, in book order, as stems ("01_autoencoders", ...)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [ROOT / f"{entry['file']}.ipynb" for entry in toc["chapters"]]
    return [path.stem for path in files if path.exists()]


def execute(chapter: str, data_root: Path) -> float:
    """Seconds to run one chapter top to bottom in a fresh kernel, with this data folder."""
    env = {**os.environ, "VAE_TUTORIAL_DATA": str(data_root)}
    command = [str(JUPYTER), "execute", "--timeout=600", str(ROOT / "book" / f"{chapter}.ipynb")]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{chapter} failed (exit {done.returncode}):\n{tail}")
    return seconds


def fresh_root(parent: Path, name: str, mnist: Path) -> Path:
    """A data folder with the verified MNIST files (linked, not copied) and no trained models."""
    root = parent / name
    (root / "MNIST").mkdir(parents=True)
    (root / "MNIST" / "raw").symlink_to(mnist, target_is_directory=True)
    return root


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="benchmarks/chapter_times.py", description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="time only this chapter (repeatable)")
    parser.add_argument("--warm", action="append", help="also with earlier chapters' cache")
    parser.add_argument("--out", type=Path, default=CHECKOUT, help="folder of result files")
    parser.add_argument(
        "--resume", type=Path, help="a run's file: keep its fresh times, run only the others"
    )
    args = parser.parse_args(argv)
    chapters = toc_chapters()
    kept = [] if args.resume is None else read_result(args.resume).select(mode="fresh")
    chosen = [c for c in (args.only or chapters) if c not in {row["chapter"] for row in kept}]
    unknown = sorted(set(chosen) - set(chapters))
    if unknown:
        parser.error(f"not a chapter of _toc.yml: {', '.join(unknown)}; chapters: {chapters}")
    warm = [c for c in (args.warm if args.warm is not None else ["06_sampling"]) if c in chosen]
    mnist = ensure_mnist(default_root(), verbose=False)  # the verified files, linked into each root

    command = "benchmarks/chapter_times.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = Result(
        kind="chapter_times",
        command=command.strip(),
        config={
            "chapters": chosen,
            "warm": warm,
            "runner": "jupyter execute --timeout=600",
            "resumed_from": None if args.resume is None else args.resume.name,
        },
        hardware=hardware("cpu"),
        units={"seconds": "s, wall clock of `jupyter execute`, kernel start included"},
        notes=(
            "mode 'fresh': the chapter alone in a fresh kernel, with an empty cache of trained "
            "models; mode 'after earlier chapters': with the cache the chapters before it left."
        ),
    )
    result.rows = list(kept)
    with tempfile.TemporaryDirectory(prefix="chapter-times-") as scratch:
        caches, failed = {}, []
        for chapter in chosen:
            root = fresh_root(Path(scratch), chapter, mnist)
            try:
                seconds = execute(chapter, root)
            except RuntimeError as error:  # the others are still timed; the file stays incomplete
                print(error, file=sys.stderr)
                failed.append(chapter)
                continue
            caches[chapter] = root / "models"
            result.rows.append({"chapter": chapter, "mode": "fresh", "seconds": round(seconds, 1)})
            print(f"{chapter:24} fresh  {seconds:6.1f} s", flush=True)
            write_result(result, args.out)
        for chapter in warm:
            earlier = chapters[: chapters.index(chapter)]
            if chapter in failed or not set(earlier) <= caches.keys():
                print(f"{chapter}: no warm run, it or a chapter before it was not run")
                continue
            root = fresh_root(Path(scratch), f"warm-{chapter}", mnist)
            (root / "models").mkdir()
            for before in earlier:
                if caches[before].is_dir():
                    shutil.copytree(caches[before], root / "models", dirs_exist_ok=True)
            try:
                seconds = execute(chapter, root)
            except RuntimeError as error:
                print(error, file=sys.stderr)
                failed.append(f"{chapter} (warm)")
                continue
            mode = "after earlier chapters"
            result.rows.append({"chapter": chapter, "mode": mode, "seconds": round(seconds, 1)})
            print(f"{chapter:24} warm   {seconds:6.1f} s", flush=True)
    result.complete = not failed
    print(f"wrote {write_result(result, args.out)}")
    if failed:
        print(f"failed: {', '.join(failed)} (the file is marked incomplete)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
