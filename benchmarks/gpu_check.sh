#!/usr/bin/env bash
# The training-speed benchmark on one CUDA GPU, in at most 4 minutes: writes its JSON into OUTDIR.
#
#   bash benchmarks/gpu_check.sh OUTDIR
#
# Runs from the repository root with the machine's own python3 and PYTHONPATH=. (no install, no
# Jupyter, no network). MNIST must already be there, as the four uncompressed IDX files or as the
# four gzipped ones (train-images-idx3-ubyte.gz, ...) in data/MNIST/raw (or $VAE_TUTORIAL_DATA/
# MNIST/raw): gzipped files are unpacked beside themselves and every file is checked against its
# MD5 before the benchmark starts. Make the gzipped files, about 11 MB, with
#   for f in data/MNIST/raw/*-ubyte; do gzip -kn9f "$f"; done
# Copy OUTDIR/*.json into benchmarks/results/ and run `python benchmarks/report.py`: chapter 5
# and README then show the GPU rows.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: bash benchmarks/gpu_check.sh OUTDIR" >&2
    exit 2
fi
OUTDIR=$1
cd "$(dirname "$0")/.."
export PYTHONPATH=.
PYTHON=${PYTHON:-python3}  # the machine's own; PYTHON=.venv/bin/python to try it here
LIMIT_S=${GPU_CHECK_LIMIT_S:-200}  # the benchmark's share of the 4 minutes (checks: ~20 s)

# GPU_CHECK_DRY_RUN=1 tries every step but the GPU on a CPU, with a few steps: for testing this script.
DRY_RUN=${GPU_CHECK_DRY_RUN:-0}
BENCH_ARGS=(--device cuda --steps 469 --repeats 2)
if [ "$DRY_RUN" = 1 ]; then
    BENCH_ARGS=(--device cpu --steps 5 --repeats 1 --no-compile)
fi

# 1. A CUDA GPU, or a clear no.
if [ "$DRY_RUN" != 1 ] && ! "$PYTHON" - <<'EOF'
import sys

try:
    import torch
except ImportError:
    sys.exit(f"gpu_check: no GPU here: {sys.executable} cannot import torch")
if not torch.cuda.is_available():
    print(
        f"gpu_check: no GPU here: torch {torch.__version__} sees no CUDA device "
        f"(torch.cuda.is_available() is False; CUDA build: {torch.version.cuda}). "
        "Run this on a machine with an NVIDIA GPU.",
        file=sys.stderr,
    )
    sys.exit(1)
print(f"gpu_check: {torch.cuda.get_device_name()} (torch {torch.__version__})")
EOF
then
    exit 1
fi

# 2. MNIST on disk and verified, without touching the network.
"$PYTHON" - <<'EOF'
import gzip
import shutil
import sys

from vae_tutorial.download import MD5, default_root, md5sum

raw = default_root() / "MNIST" / "raw"
bad = []
for name, expected in MD5.items():
    path, packed = raw / name, raw / f"{name}.gz"
    if not path.is_file() and packed.is_file():
        partial = raw / f".{name}.partial"
        with gzip.open(packed, "rb") as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst)
        partial.replace(path)
    if not path.is_file():
        bad.append(f"{name} (nor {name}.gz) is missing")
    elif md5sum(path) != expected:
        bad.append(f"{name} fails its MD5 check")
if bad:
    print(
        f"gpu_check: MNIST is not ready in {raw}: " + "; ".join(bad) + ". This script does not "
        "download. Bring the four files, e.g. gzipped: "
        'for f in data/MNIST/raw/*-ubyte; do gzip -kn9f "$f"; done',
        file=sys.stderr,
    )
    sys.exit(1)
print(f"gpu_check: MNIST verified in {raw}")
EOF

# 3. The benchmark: one epoch per variant, best of 2 rounds. Its file is rewritten after every
# variant, so if the time limit stops it, the rows measured so far are kept.
mkdir -p "$OUTDIR"
status=0
timeout --kill-after=10 "$LIMIT_S" "$PYTHON" benchmarks/train_speed.py "${BENCH_ARGS[@]}" \
    --out "$OUTDIR" || status=$?
ls -l "$OUTDIR"/train_speed-*.json
if [ "$status" -eq 124 ]; then
    echo "gpu_check: stopped after ${LIMIT_S} s; the file keeps every measurement that finished" >&2
fi
exit "$status"
