"""Time per optimizer step of Burda et al.'s two models, batch 20, on this machine's CPU.

A bare step on one fixed binary batch (no data loading, no binarization): forward, the training
bound, backward, Adam (fused, eps = 1e-4). Models (Burda, Grosse and Salakhutdinov 2016):

- `vae-1l`: 784-200-200-50 (tanh, Glorot init) on each side, the one-sample ELBO (k = 1);
- `iwae5-2l`: the two-layer model 784-200-200-100-100-100-50 (`HierarchicalVAE`), L_5.

Each variant (model x eager / `torch.compile` x threads) runs in its own process (a compiled
kernel keeps the thread count it was compiled for): `--warmup` untimed steps (compilation
included), then `--rounds` rounds of `--steps` steps; `ms_per_step` is the fastest round, as a
burst of other work slows some rounds, rarely all. The load average at the start and end of each
variant is stored beside it: on a shared machine the figures are upper bounds.

    python benchmarks/burda_step_time.py [--steps 200] [--rounds 3] [--threads 1,2] [--out DIR]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from arguments import THREADS, OneLineParser, int_in, ints_in  # beside this file

from vae_tutorial.elbo import elbo_terms
from vae_tutorial.hierarchical import HierarchicalVAE
from vae_tutorial.layers import GaussianLayer, mlp
from vae_tutorial.models import reparameterize
from vae_tutorial.results import CHECKOUT, Result, hardware, write_result

BATCH, EPS = 20, 1e-4
UNITS = {
    "ms_per_step": "ms, fastest round",
    "ms_per_step_slowest": "ms, slowest round",
    "warmup_seconds": "s for the untimed first steps (compilation included)",
    "load_before": "1-min load average before the variant",
    "load_after": "1-min load average after it",
}


def one_layer() -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    """Burda et al.'s one-layer VAE and its loss, -ELBO (nats per example)."""
    encoder = GaussianLayer(784, (200, 200), 50, "tanh", "glorot_uniform")
    decoder = mlp(50, (200, 200), 784, "tanh", "glorot_uniform")
    model = torch.nn.ModuleDict({"encoder": encoder, "decoder": decoder})

    def loss(x: torch.Tensor) -> torch.Tensor:
        mu, logvar = encoder(x)
        logits = decoder(reparameterize(mu, logvar))
        return -elbo_terms(logits, x, mu, logvar, check=False).elbo.mean()

    return model, loss


def two_layer() -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    """Burda et al.'s two-layer model and its loss, -L_5 (nats per example)."""
    model = HierarchicalVAE(
        latent_dims=(100, 50),
        hidden=((200, 200), (100, 100)),
        activation="tanh",
        init="glorot_uniform",
    )

    def loss(x: torch.Tensor) -> torch.Tensor:
        return -model.importance_weighted_bound(x, 5, check=False).mean()

    return model, loss


def measure(name: str, compile: bool, threads: int, warmup: int, steps: int, rounds: int) -> dict:
    """One variant, in this process."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model, loss = {"vae-1l": one_layer, "iwae5-2l": two_layer}[name]()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=EPS, fused=True)
    x = torch.bernoulli(torch.full((BATCH, 784), 0.13))
    fn = torch.compile(loss) if compile else loss

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        fn(x).backward()
        optimizer.step()

    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    warmup_seconds = time.perf_counter() - start
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        times.append(time.perf_counter() - start)
    return {
        "model": name,
        "compile": compile,
        "threads": threads,
        "steps": steps,
        "rounds": rounds,
        "ms_per_step": round(1000 * min(times) / steps, 3),
        "ms_per_step_slowest": round(1000 * max(times) / steps, 3),
        "warmup_seconds": round(warmup_seconds, 2),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="benchmarks/burda_step_time.py", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--steps", type=int_in(1, 10**6), default=200, help="steps per round")
    parser.add_argument("--rounds", type=int_in(1, 1000), default=3, help="rounds, fastest kept")
    parser.add_argument("--warmup", type=int_in(0, 10**6), default=30, help="untimed first steps")
    parser.add_argument(
        "--threads", type=ints_in(1, THREADS), default=[1, 2], help="thread counts to try"
    )
    parser.add_argument("--no-compile", action="store_true", help="eager only")
    parser.add_argument("--out", default=str(CHECKOUT), help="folder of the result file")
    parser.add_argument("--one", nargs=3, metavar=("MODEL", "COMPILE", "THREADS"), help="internal")
    args = parser.parse_args(argv)
    if args.one:
        name, compile, threads = args.one[0], args.one[1] == "1", int(args.one[2])
        row = measure(name, compile, threads, args.warmup, args.steps, args.rounds)
        print(json.dumps(row))
        return 0
    threads = args.threads
    rows = []
    for name in ("vae-1l", "iwae5-2l"):
        for compile in (False,) if args.no_compile else (False, True):
            for n in threads:
                cmd = [sys.executable, __file__, "--one", name, str(int(compile)), str(n)]
                cmd += ["--steps", str(args.steps), "--rounds", str(args.rounds)]
                cmd += ["--warmup", str(args.warmup)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                rows.append(json.loads(out.strip().splitlines()[-1]))
                print(rows[-1], flush=True)
    result = Result(
        kind="burda_step_time",
        command="benchmarks/burda_step_time.py " + " ".join(argv or sys.argv[1:]),
        config={"batch_size": BATCH, "adam_eps": EPS, "fused_adam": True},
        hardware=hardware("cpu"),
        units=UNITS,
        rows=rows,
        complete=True,
        notes=(
            "Bare steps on one fixed binary batch of 20: forward, the training bound (vae-1l: "
            "the one-sample ELBO; iwae5-2l: L_5), backward, Adam. Each variant in its own "
            "process; the load averages show what else the machine ran."
        ),
    )
    print(write_result(result, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
