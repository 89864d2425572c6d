"""Measurements made outside the chapters (benchmarks, long runs): one JSON file per run.

The chapters, the index page and README read these files instead of quoting numbers by hand.
They live in `benchmarks/results/` of the repository and travel with the package as package data
(`vae_tutorial/benchmark_results/` in a wheel), so a chapter opened in Colab finds them too.

One file holds one run, as one JSON object (format version 1):

    {
      "format": "vae-tutorial-result",  "format_version": 1,
      "kind": "train_speed",              # what was measured: the script, or the study
      "date_utc": "2026-11-27T21:40:05Z", # when the run started
      "command": "benchmarks/train_speed.py --device cpu --steps 100",
      "config": {...},                    # every setting the figures depend on
      "hardware": {"device": "cpu", "cpu_model": "AMD EPYC", "cpu_cores": 2,
                   "gpu": null, "torch_threads": 2, "load_average_1min": 0.7},
      "software": {"python": "3.11.7", "torch": "2.14.1", "platform": "Linux-..."},
      "complete": true,                   # false until every planned measurement has a row
      "notes": "...",                     # what a reader must know to read the figures
      "units": {"seconds": "s", ...},     # the unit of each numeric column
      "rows": [{...}, ...]                # the figures: one flat record per measurement
    }

A row maps column names to str, int, float, bool or null. Files are named
`<kind>-<device>-<YYYYmmddTHHMMSSZ>.json` and written atomically (a temporary file, then
`os.replace`), so a reader never sees half a file, even while a run rewrites its file after
each measurement. `latest(kind, device=...)` gives the newest complete run; chapters read that.

    run = latest("train_speed", device="cpu")
    run.one(loop="fit", batch_size=128, precision="fp32", compile=False)["ms_per_step"]

Write one with `write_result(Result(kind=..., hardware=hardware(device), rows=[...], ...))`.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Union

import torch

FORMAT = "vae-tutorial-result"
FORMAT_VERSION = 1
DATE = "%Y-%m-%dT%H:%M:%SZ"  # date_utc, e.g. 2026-11-27T21:40:05Z
PACKAGED = Path(__file__).resolve().parent / "benchmark_results"  # a wheel's copy of the files
CHECKOUT = Path(__file__).resolve().parents[1] / "benchmarks" / "results"  # the repository's

Scalar = Union[str, int, float, bool, None]  # noqa: UP007 (a runtime alias, also for Python 3.9)
SCALARS = (str, int, float, bool, type(None))  # the types a row's value may have


def results_dir() -> Path:
    """Where the result files are: the installed package's copy, else the checkout's folder."""
    return PACKAGED if PACKAGED.is_dir() else CHECKOUT


def _cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


# the variables that select the CPU kernels of ATen, MKL and oneDNN (tests/portability.py)
KERNEL_SETTINGS = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")


def hardware(device: str | torch.device = "cpu") -> dict[str, Scalar]:
    """The machine a measurement ran on: device, CPU model, cores and kernel path, GPU, threads."""
    device = torch.device(device)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    chosen = " ".join(f"{k}={os.environ[k]}" for k in KERNEL_SETTINGS if k in os.environ)
    return {
        "device": device.type,
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch_threads": torch.get_num_threads(),
        "cpu_kernels": torch.backends.cpu.get_cpu_capability(),  # ATen's path: AVX512, AVX2, ...
        "kernel_settings": chosen or None,  # the variables that chose another path, where set
        "load_average_1min": None if load is None else round(load, 2),  # other work at the start
    }


def software() -> dict[str, str]:
    """Python, torch and the operating system."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def _check_rows(rows: Any) -> None:
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ValueError(f"rows: expected a list of dicts, got {type(rows).__name__}")
    for row in rows:
        for key, value in row.items():
            if not isinstance(key, str) or not isinstance(value, SCALARS):
                raise ValueError(
                    f"rows: expected str keys and str/int/float/bool/None values, "
                    f"got {key!r}: {value!r}"
                )


@dataclass
class Result:
    """One run's measurements; `to_json` / `from_json` give the file's contents."""

    kind: str
    command: str
    config: dict[str, Any]
    hardware: dict[str, Scalar]
    software: dict[str, str] = field(default_factory=software)
    date_utc: str = field(default_factory=lambda: time.strftime(DATE, time.gmtime()))
    complete: bool = False
    notes: str = ""
    units: dict[str, str] = field(default_factory=dict)
    rows: list[dict[str, Scalar]] = field(default_factory=list)
    path: Path | None = field(default=None, compare=False)  # the file read or written

    def to_json(self) -> dict[str, Any]:
        """The file's JSON object."""
        _check_rows(self.rows)
        values = asdict(self)
        values.pop("path")
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **values}

    @classmethod
    def from_json(cls, values: dict[str, Any], path: Path | None = None) -> Result:
        """Inverse of `to_json`; checks the format and its version."""
        where = f" in {path}" if path is not None else ""
        if values.get("format") != FORMAT or values.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"expected format {FORMAT!r} version {FORMAT_VERSION}{where}, "
                f"got {values.get('format')!r} version {values.get('format_version')!r}"
            )
        names = {name for name in cls.__dataclass_fields__ if name != "path"}
        missing = names - values.keys()
        if missing:
            raise ValueError(f"missing fields{where}: {', '.join(sorted(missing))}")
        _check_rows(values["rows"])
        return cls(**{name: values[name] for name in names}, path=path)

    @property
    def file_name(self) -> str:
        """`<kind>[-<run>]-<device>-<YYYYmmddTHHMMSSZ>.json`, from the start date.

        A named run (config["run"], as the reference runs have) keeps its own file even when
        another run starts in the same second.
        """
        stamp = self.date_utc.replace("-", "").replace(":", "")
        run = f"-{self.config['run']}" if "run" in self.config else ""
        return f"{self.kind}{run}-{self.hardware['device']}-{stamp}.json"

    def select(self, **match: Scalar) -> list[dict[str, Scalar]]:
        """The rows whose columns equal every keyword given, in file order."""
        return [row for row in self.rows if all(row.get(k) == v for k, v in match.items())]

    def one(self, **match: Scalar) -> dict[str, Scalar]:
        """The single row that matches; an error naming the match if there are none or several."""
        rows = self.select(**match)
        if len(rows) != 1:
            raise KeyError(f"{self.kind}: expected one row with {match}, found {len(rows)}")
        return rows[0]


def write_result(result: Result, directory: str | Path | None = None) -> Path:
    """Write (or rewrite) the run's file atomically: a temporary file beside it, then os.replace."""
    directory = Path(directory) if directory is not None else CHECKOUT
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / result.file_name
    text = json.dumps(result.to_json(), indent=1) + "\n"
    tmp = directory / f".{path.name}.{os.getpid()}.tmp"
    try:
        # 0o666 less the umask: the user's usual permissions (mkstemp would give 0o600)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    result.path = path
    return path


def read_result(path: str | Path) -> Result:
    """One result file."""
    path = Path(path)
    return Result.from_json(json.loads(path.read_text()), path=path)


def load_results(
    kind: str | None = None,
    *,
    device: str | None = None,
    complete: bool | None = None,
    directory: str | Path | None = None,
) -> list[Result]:
    """Every result file of this kind (and device type), oldest first."""
    directory = Path(directory) if directory is not None else results_dir()
    found = [read_result(path) for path in sorted(directory.glob("*.json"))]
    found = [
        r
        for r in found
        if (kind is None or r.kind == kind)
        and (device is None or r.hardware["device"] == device)
        and (complete is None or r.complete == complete)
    ]
    return sorted(found, key=lambda r: r.date_utc)


def latest(
    kind: str, *, device: str | None = None, directory: str | Path | None = None
) -> Result | None:
    """The newest complete run of this kind (and device type) on the machine's own kernel path
    (no `kernel_settings`), or None if there is none."""
    found = load_results(kind, device=device, complete=True, directory=directory)
    found = [run for run in found if not run.hardware.get("kernel_settings")]
    return found[-1] if found else None


def describe(result: Result) -> str:
    """The hardware and software in one line, for a table's caption."""
    hw, sw = result.hardware, result.software
    where = f"{hw['gpu']} GPU" if hw.get("gpu") else f"{hw['cpu_model']} CPU"
    load = hw.get("load_average_1min")
    busy = "" if load is None else f", load average {load:.1f} at the start"
    return (
        f"{where}, {hw['cpu_cores']} CPU cores, torch threads: {hw['torch_threads']}{busy}; "
        f"torch {sw['torch']}, Python {sw['python']}; {result.date_utc[:10]}"
    )


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table with padded columns, so that it also reads as plain text."""
    widths = [max(3, *(len(row[i]) for row in [header, *rows])) for i in range(len(header))]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join(
        "| " + " | ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)) + " |"
        for cells in lines
    )


SPEED_BASE = (128, "fp32", False)  # batch size, precision, compile of the three loops' rows
LOOPS = {
    "classic": "classic DataLoader loop",
    "fit": "fit, data on the device",
    "floor": "floor: one fixed batch",
}


def speed_table(result: Result) -> str:
    """A `train_speed` run as a Markdown table: the three loops first, then `fit`'s variants."""
    header = ["loop", "batch", "precision", "compile", "ms per step", "images/s", "s per epoch"]
    header.append("first pass, s")
    order = ["classic", "fit", "floor"]
    plain = sorted(
        (r for r in result.rows if (r["batch_size"], r["precision"], r["compile"]) == SPEED_BASE),
        key=lambda r: order.index(r["loop"]),
    )
    lines = []
    for row in plain + [r for r in result.rows if r not in plain]:
        first = row.get("first_epoch_seconds")
        lines.append(
            [
                LOOPS[row["loop"]],
                str(row["batch_size"]),
                row["precision"],
                "yes" if row["compile"] else "no",
                f"{row['ms_per_step']:.2f}",
                f"{row['images_per_second']:,.0f}",
                f"{row['epoch_seconds']:.1f}",
                "" if first is None else f"{first:.1f}",
            ]
        )
    return markdown_table(header, lines)


def chapter_number(chapter: str) -> int | str:
    """01_autoencoders -> 1; a page without a number keeps its name (faq -> "faq")."""
    prefix = chapter.split("_", 1)[0]
    return int(prefix) if prefix.isdigit() else chapter


if __name__ == "__main__":  # list the files: python -m vae_tutorial.results
    for r in load_results():
        print(f"{r.path.name}: {r.kind}, {len(r.rows)} rows, {describe(r)}", file=sys.stdout)
