r"""Data parallelism under `torchrun`: the process group, and what the ranks share.

`torchrun --nproc_per_node=N -m vae_tutorial train ...` starts N processes (ranks), each with the
environment variables RANK, WORLD_SIZE, LOCAL_RANK and GROUP_RANK (its node). `join` turns them
into a `World`: it initialises the process group (gloo on a CPU, NCCL on CUDA, one GPU per process)
with a timeout, so that a rank that stalls or dies stops the others with an error instead of a
hang. Without torchrun (or with one process) the world is one process and nothing changes.

`fit` then trains one model on all ranks. Each rank holds a copy of the weights and takes its
$B/N$ examples of every global batch of $B$; `DistributedDataParallel` all-reduces the gradients
so every copy takes the same Adam step on the mean gradient over the global batch:

$$\nabla \mathcal L = \frac1N \sum_{r=1}^{N} \nabla \mathcal L_r, \qquad
\mathcal L_r = \frac{N}{B} \sum_{b \in \text{shard}_r} \ell_b
\quad\Rightarrow\quad \nabla \mathcal L = \frac1B \sum_{b=1}^{B} \nabla \ell_b .$$

Only rank 0 touches files: `from_main` runs a function there and hands its result, or its error,
to every rank.
"""

from __future__ import annotations

import os
import pickle
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

T = TypeVar("T")

TIMEOUT = timedelta(minutes=5)  # longest wait for the other ranks in one collective operation
BACKENDS = {"cpu": "gloo", "cuda": "nccl"}  # the backend each device type all-reduces with


class RankFailed(RuntimeError):
    """Another rank failed, stalled or died; the message says which and how."""


@dataclass(frozen=True)
class World:
    """The processes training one model: this one's rank, their number, and where they run."""

    rank: int = 0  # 0 .. size - 1; rank 0 writes every file
    size: int = 1  # N, the world size: processes that share each global batch
    nodes: int = 1  # machines (torchrun's --nnodes), counted from the ranks' GROUP_RANK
    backend: str | None = None  # "gloo", "nccl", or None for a single process
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    ranks: tuple[dict[str, Any], ...] = ()  # per rank: rank, node, local_rank, host

    @property
    def is_main(self) -> bool:
        """True on rank 0, the rank that writes checkpoints, metrics and samples."""
        return self.rank == 0

    def record(self) -> dict[str, Any]:
        """What a run's metrics say about its processes."""
        ranks = list(self.ranks) or [{"rank": 0, "node": 0, "local_rank": 0, "host": _host()}]
        return {
            "world_size": self.size,
            "nodes": self.nodes,
            "backend": self.backend,
            "ranks": ranks,
        }

    def wrap(self, model: nn.Module) -> nn.Module:
        """The model in DistributedDataParallel (gradients all-reduced in backward), or itself."""
        if self.size == 1:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def sum(self, t: Tensor, what: str) -> Tensor:
        """The elementwise sum of `t` over the ranks (a copy); `what` names it in errors."""
        if self.size == 1:
            return t
        t = t.clone()
        _collective(self, what, lambda: dist.all_reduce(t, op=dist.ReduceOp.SUM))
        return t

    def from_main(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) run on rank 0 only; every rank gets its result, or raises its error."""
        if self.size == 1:
            return fn(*args)
        box: list[Any] = [None]
        if self.is_main:
            try:
                box[0] = (True, fn(*args))
            except Exception as error:
                box[0] = (False, _picklable(error))
                _collective(self, fn.__name__, lambda: dist.broadcast_object_list(box, src=0))
                raise
        _collective(self, fn.__name__, lambda: dist.broadcast_object_list(box, src=0))
        ok, value = box[0]
        if not ok:
            raise value
        return value


def _host() -> str:
    """This machine's name, as each rank records where it ran."""
    return socket.gethostname()


def _picklable(error: Exception) -> Exception:
    """The error itself if it survives pickling (to reach the other ranks), else its text."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RankFailed(f"rank 0: {type(error).__name__}: {error}")
    return error


def _collective(world: World, what: str, op: Callable[[], Any]) -> None:
    """Run one collective; a rank that stalled or died becomes a RankFailed naming this rank."""
    try:
        op()
    except RuntimeError as error:  # DistError, or gloo's "Timed out waiting ..." RuntimeError
        raise RankFailed(
            f"rank {world.rank} of {world.size}: {what} got no answer from the other ranks "
            f"({' '.join(str(error).split())[:200]}); another rank died or stalled: its own "
            "error, or torchrun's summary, says why"
        ) from None


def backend_for(device: torch.device, backend: str | None = None) -> str:
    """The backend that all-reduces tensors on `device`: gloo on a CPU, NCCL on CUDA."""
    if backend is None:
        if device.type not in BACKENDS:
            raise ValueError(
                f"device: expected cpu or cuda for several processes, got {device.type}, which "
                "no torch.distributed backend serves; pass --device cpu"
            )
        backend = BACKENDS[device.type]
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend: expected 'gloo' or 'nccl', got {backend!r}")
    if backend == "nccl" and (device.type != "cuda" or not dist.is_nccl_available()):
        why = "this torch has no NCCL" if not dist.is_nccl_available() else f"got device {device}"
        raise ValueError(
            f"backend: NCCL all-reduces CUDA tensors only, {why}; use the gloo backend on a CPU "
            "(the default there), or --device cuda on a machine with GPUs"
        )
    if backend == "gloo" and not dist.is_gloo_available():
        raise ValueError("backend: expected gloo, which this torch lacks; install a torch with it")
    return backend


def _env_int(name: str, default: int | None = None) -> int:
    """A whole-number environment variable that torchrun sets."""
    text = os.environ.get(name)
    if text is None and default is not None:
        return default
    try:
        return int(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(
            f"{name}: expected a whole number set by torchrun, got {text!r}; launch with "
            "`torchrun --nproc_per_node=N -m vae_tutorial train ...`"
        ) from None


def _describe(device: torch.device) -> World:
    """The World of an initialised process group: gathers every rank's node and host."""
    rank, size = dist.get_rank(), dist.get_world_size()
    if device.type == "cuda" and device.index is None:  # "cuda": the GPU this rank has set
        device = torch.device("cuda", torch.cuda.current_device())
    mine = {
        "rank": rank,
        "node": _env_int("GROUP_RANK", 0),
        "local_rank": _env_int("LOCAL_RANK", rank),
        "host": _host(),
    }
    ranks: list[Any] = [None] * size
    world = World(rank, size, 1, dist.get_backend(), device)
    _collective(world, "join", lambda: dist.all_gather_object(ranks, mine))
    nodes = len({(r["node"], r["host"]) for r in ranks})
    return World(rank, size, nodes, dist.get_backend(), device, tuple(ranks))


def join(
    device: torch.device, *, backend: str | None = None, timeout: timedelta = TIMEOUT
) -> World:
    """This process's World: joins torchrun's process group where WORLD_SIZE > 1.

    A group initialised already (by a script or a test) is used as it is. On CUDA each rank takes
    the GPU cuda:LOCAL_RANK. A backend the device lacks, or more ranks on a node than it has GPUs,
    raises ValueError before any work.
    """
    if dist.is_available() and dist.is_initialized():
        backend_for(device, dist.get_backend())
        return _describe(device)
    size = _env_int("WORLD_SIZE", 1)
    if size == 1:
        if backend is not None:
            backend_for(device, backend)
        return World(device=device)
    backend = backend_for(device, backend)
    if device.type == "cuda":
        local, count = _env_int("LOCAL_RANK"), torch.cuda.device_count()
        if local >= count:
            raise ValueError(
                f"torchrun: expected at most {count} processes per node (one per GPU), got "
                f"LOCAL_RANK={local}; pass --nproc_per_node={count} or fewer"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    dist.init_process_group(backend, rank=_env_int("RANK"), world_size=size, timeout=timeout)
    return _describe(device)


def leave() -> None:
    """Destroy the process group, if one was joined (at the end of a run)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of rank `rank`'s z ~ q(z|x) draws in `epoch`: distinct per rank, fixed per run."""
    return ((seed * 1_000_003 + epoch) * 65_537 + rank) % 2**64  # torch seeds are 64-bit
