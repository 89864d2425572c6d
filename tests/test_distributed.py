"""fit and the CLI under data parallelism: two gloo processes on 127.0.0.1 train one model.

The two-rank runs start real processes (torch.multiprocessing, or torchrun), so they are few and
small: 1,024 training images, a 784-64-8 model, 2 epochs of 8 steps of the global batch of 128.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vae_tutorial import cli, commands, distributed, resources, train
from vae_tutorial.checkpoint import load_checkpoint
from vae_tutorial.config import ModelConfig, TrainConfig
from vae_tutorial.data import Batches
from vae_tutorial.train import fit

SMALL = {"latent_dim": 8, "hidden_dim": 64}
TINY = TrainConfig(epochs=2, train_size=1024, batch_size=128)
ARGS = ["--latent-dim", "8", "--hidden-dim", "64", "--train-size", "1024", "--device", "cpu"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
# Two ranks against one process, same global batch: only the order of the gradient sums differs
# (an all-reduce of two half-batch means against one mean), about 1 float32 ulp per gradient.
# Measured after 2 epochs (16 Adam steps) of the autoencoder: largest weight difference 1.9e-7,
# while one Adam step moves a weight by up to lr = 1e-3. Not bit-equal, but 5,000 times smaller
# than one step; a break (a rank training on the wrong rows, no averaging) moves weights by ~1e-3.
WEIGHT_TOLERANCE = 1e-5
# The VAE's z draws differ (each rank has its own stream), so its losses agree only to the seed
# spread: one process, seeds 0..3, train -ELBO after epoch 2 from 481.1 to 492.4 nats (11.3 apart;
# 2.7 after epoch 1). A loss summed over ranks but not divided by N would be about 500 nats off.
LOSS_TOLERANCE = 15.0  # nats per example

pytestmark = pytest.mark.usefixtures("one_thread")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env() -> dict[str, str]:
    """The environment of a launched run: one thread, the checkout first on the path."""
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path)


def launch(args: list[str]) -> subprocess.Popen:
    """A command in its own process group (see `stop`), its output merged into stdout."""
    return subprocess.Popen(
        args,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def workers(parent: int) -> dict[int, int]:
    """{RANK: pid} of the processes torchrun `parent` started, from /proc (empty elsewhere)."""
    found = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            status = (entry / "status").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        ranks = [int(v[5:]) for v in environ if v.startswith(b"RANK=")]
        if f"PPid:\t{parent}\n" in status and ranks:
            found[ranks[0]] = int(entry.name)
    return found


def stop(job: subprocess.Popen) -> None:
    """Kill a launched torchrun and its workers (each leads its own session), if any still run."""
    for pid in [*workers(job.pid).values(), job.pid]:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _worker(rank: int, port: int, folder: Path) -> None:
    """One rank: an autoencoder fit, a VAE fit resumed after 1 epoch, then the CLI's VAE run."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=2,
        timeout=timedelta(seconds=60),
    )
    log = folder / f"writes-rank{rank}.txt"
    log.touch()

    def logged(write, path_at):  # `write`, noting the name of the file it writes in `log`
        def wrapper(*args, **kwargs):
            with open(log, "a") as f:
                f.write(f"{Path(args[path_at]).name}\n")
            return write(*args, **kwargs)

        return wrapper

    train.save_checkpoint = logged(train.save_checkpoint, 0)
    commands.write_figure = logged(commands.write_figure, 1)
    resources.write_bytes = logged(resources.write_bytes, 0)  # metrics.json, whole or not at all

    ae = fit(ModelConfig(kind="ae", **SMALL), TINY, device="cpu", progress=False)
    torch.save(ae.model.state_dict(), folder / f"ae-rank{rank}.pt")

    vae, half = ModelConfig(**SMALL), folder / "half.pt"
    first = TrainConfig(**{**TINY.__dict__, "epochs": 1})
    fit(vae, first, device="cpu", checkpoint_path=half, progress=False)
    if rank == 0:
        shutil.copyfile(half, folder / "one-epoch.pt")  # for a resume by one process
    resumed = fit(vae, TINY, device="cpu", checkpoint_path=half, resume=True, progress=False)
    torch.save(resumed.model.state_dict(), folder / f"resumed-rank{rank}.pt")

    def fit_and_keep(*args, **kwargs):
        result = train.fit(*args, **kwargs)
        torch.save(result.model.state_dict(), folder / f"cli-rank{rank}.pt")
        return result

    commands.fit = fit_and_keep
    assert cli.main(["train", *ARGS, "--epochs", "2", "--out", str(folder / "run")]) == 0


def spawn_two(folder: Path, seconds: float = 120) -> None:
    """Run `_worker` on two spawned processes; fail, not hang, if they outlast `seconds`."""
    context = mp.spawn(_worker, args=(free_port(), folder), nprocs=2, join=False)
    deadline = time.monotonic() + seconds
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"two ranks still running after {seconds} s: a hang")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("two_ranks")
    spawn_two(folder)
    return folder


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def test_two_ranks_end_with_bit_identical_weights(two_ranks):
    for run in ("ae", "resumed", "cli"):
        a, b = weights(two_ranks / f"{run}-rank0.pt"), weights(two_ranks / f"{run}-rank1.pt")
        assert all(torch.equal(a[k], b[k]) for k in a), run


def test_two_ranks_match_one_process_with_the_same_global_batch(two_ranks):
    one = fit(ModelConfig(kind="ae", **SMALL), TINY, device="cpu", progress=False).model
    two = weights(two_ranks / "ae-rank0.pt")
    gap = max((p - two[k]).abs().max().item() for k, p in one.state_dict().items())
    assert gap < WEIGHT_TOLERANCE


def test_loss_stays_nats_per_example_of_the_global_batch(two_ranks):
    """The CLI's 2-rank VAE run reports the same scale of loss as one process (not N times it)."""
    metrics = json.loads((two_ranks / "run" / "metrics.json").read_text())
    one = fit(ModelConfig(**SMALL), TINY, device="cpu", progress=False).history
    for two, single in zip(metrics["history"]["train_neg_elbo"], one.train_neg_elbo, strict=True):
        assert abs(two - single) < LOSS_TOLERANCE


def test_only_rank_0_writes_checkpoints_metrics_and_samples(two_ranks):
    assert (two_ranks / "writes-rank1.txt").read_text() == ""
    written = set((two_ranks / "writes-rank0.txt").read_text().split())
    assert {"half.pt", "checkpoint.pt", "metrics.json", "samples.png"} <= written
    metrics = json.loads((two_ranks / "run" / "metrics.json").read_text())
    assert metrics["distributed"]["world_size"] == 2
    assert metrics["distributed"]["backend"] == "gloo"
    assert [r["rank"] for r in metrics["distributed"]["ranks"]] == [0, 1]


def test_a_resumed_two_rank_run_is_the_uninterrupted_one(two_ranks):
    a, b = weights(two_ranks / "resumed-rank0.pt"), weights(two_ranks / "cli-rank0.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_one_process_resumes_a_two_rank_checkpoint(two_ranks, tmp_path):
    path = tmp_path / "run.pt"
    shutil.copyfile(two_ranks / "one-epoch.pt", path)
    result = fit(ModelConfig(**SMALL), TINY, device="cpu", checkpoint_path=path, resume=True)
    assert result.history.epochs_done == 2 and result.world.size == 1
    assert load_checkpoint(path).history.epochs_done == 2


def test_shards_are_disjoint_and_together_are_the_one_process_batches():
    images = torch.rand(1000, 784)
    labels = torch.arange(1000)
    one = Batches(images, labels, 128, seed=3, binarize="dynamic", drop_last=True)
    ranks = [
        Batches(
            images, labels, 128, seed=3, binarize="dynamic", drop_last=True, rank=r, world_size=4
        )
        for r in range(4)
    ]
    assert [len(b) for b in ranks] == [len(one)] * 4 == [7] * 4  # 1000 // 128; 104 dropped
    for (x, y), *shards in zip(one, *ranks, strict=True):
        assert [len(s[1]) for s in shards] == [32] * 4
        assert torch.equal(torch.cat([s[0] for s in shards]), x)  # same rows, same binarization
        assert torch.equal(torch.cat([s[1] for s in shards]), y)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"world_size": 3}, "expected a global batch_size divisible by world_size = 3"),
        ({"world_size": 2, "drop_last": False}, "expected drop_last=True with world_size > 1"),
        ({"world_size": 2, "rank": 2}, "expected rank < world_size = 2, got rank=2"),
    ],
)
def test_bad_shards_are_refused(kwargs, message):
    kwargs = {"drop_last": True, **kwargs}
    with pytest.raises(ValueError, match=message):
        Batches(torch.rand(300, 4), torch.zeros(300), 128, **kwargs)


def test_a_backend_the_device_lacks_is_refused(capsys):
    with pytest.raises(ValueError, match="NCCL all-reduces CUDA tensors only"):
        distributed.backend_for(torch.device("cpu"), "nccl")
    with pytest.raises(ValueError, match="no torch.distributed backend serves"):
        distributed.backend_for(torch.device("mps"))
    assert distributed.backend_for(torch.device("cpu")) == "gloo"
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", *ARGS, "--backend", "nccl"])
    assert exit_.value.code == 2
    assert "NCCL all-reduces CUDA tensors only" in capsys.readouterr().err


def test_without_torchrun_the_world_is_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    world = distributed.join(torch.device("cpu"))
    assert (world.rank, world.size, world.nodes, world.backend) == (0, 1, 1, None)
    assert world.record()["world_size"] == 1
    model = torch.nn.Linear(2, 2)
    assert world.wrap(model) is model and world.from_main(len, "ab") == 2


@pytest.mark.parametrize(
    ("env", "device", "message"),
    [
        ({"WORLD_SIZE": "2"}, "cpu", "RANK: expected a whole number set by torchrun, got None"),
        ({"WORLD_SIZE": "two"}, "cpu", "WORLD_SIZE: expected a whole number set by torchrun"),
        (
            {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"},
            "cuda",
            "expected at most 1 processes per node (one per GPU), got LOCAL_RANK=1",
        ),
    ],
)
def test_a_broken_torchrun_setup_is_refused_before_joining(env, device, message, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # one GPU, as if there were one
    monkeypatch.setattr(dist, "is_nccl_available", lambda: True)
    with pytest.raises(ValueError, match=re.escape(message)):
        distributed.join(torch.device(device))
    assert not dist.is_initialized()


def test_two_nodes_on_localhost_take_the_multi_node_path(tmp_path):
    """Two torchrun agents, one rank each, meet at a c10d rendezvous on 127.0.0.1 as two nodes."""
    port, out = free_port(), tmp_path / "run"
    agents = [
        launch(
            [
                *TORCHRUN,
                "--nnodes=2",
                "--nproc_per_node=1",
                "--rdzv_backend=c10d",
                f"--rdzv_endpoint=127.0.0.1:{port}",
                "--rdzv_id=two-nodes",
                f"--rdzv_conf=is_host={int(node == 0)}",
                "-m",
                "vae_tutorial",
                "train",
                *ARGS,
                "--epochs",
                "1",
                "--out",
                str(out),
            ]
        )
        for node in (0, 1)
    ]
    try:
        logs = [agent.communicate(timeout=120)[0] for agent in agents]
    finally:
        for agent in agents:
            stop(agent)
    assert [agent.returncode for agent in agents] == [0, 0], logs
    record = json.loads((out / "metrics.json").read_text())["distributed"]
    assert record["world_size"] == 2 and record["nodes"] == 2
    assert sorted((r["rank"], r["node"], r["local_rank"]) for r in record["ranks"]) in (
        [(0, 0, 0), (1, 1, 0)],
        [(0, 1, 0), (1, 0, 0)],  # the rendezvous may give rank 0 to either node
    )


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc")
def test_a_killed_rank_ends_the_job_with_a_clear_error_and_no_hang(tmp_path):
    out = tmp_path / "run"
    job = launch(
        [*TORCHRUN, "--nproc_per_node=2", "-m", "vae_tutorial", "train", *ARGS, "--epochs", "200"]
        + ["--out", str(out)]
    )
    try:
        deadline = time.monotonic() + 90
        while not (out / "checkpoint.pt").exists():  # rank 0 finished epoch 1: both training
            assert job.poll() is None and time.monotonic() < deadline, "the job did not start"
            time.sleep(0.2)
        os.kill(workers(job.pid)[1], signal.SIGKILL)
        killed = time.monotonic()
        try:
            log = job.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            pytest.fail("the job still runs 60 s after rank 1 was killed: a hang")
    finally:
        stop(job)
    assert job.returncode != 0
    assert time.monotonic() - killed < 30
    assert "rank      : 1" in log or "rank: 1" in log, log[-2000:]
    assert "SIGKILL" in log, log[-2000:]
    assert load_checkpoint(out / "checkpoint.pt").history.epochs_done >= 1  # still whole


def _stalled_worker(rank: int, port: int, folder: Path) -> None:
    """Rank 1 joins the group and then stalls; rank 0 calls fit and reports what it raised."""
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=2,
        timeout=timedelta(seconds=3),
    )
    if rank == 1:
        time.sleep(20)  # alive, but never reaches fit's first collective operation
        return
    tick = time.monotonic()
    try:
        fit(ModelConfig(**SMALL), TINY, device="cpu", progress=False)
    except distributed.RankFailed as error:
        (folder / "error.txt").write_text(f"{time.monotonic() - tick:.1f}\n{error}")


def test_a_stalled_rank_times_out_with_a_message_that_names_it(tmp_path):
    context = mp.spawn(_stalled_worker, args=(free_port(), tmp_path), nprocs=2, join=False)
    deadline = time.monotonic() + 60
    while not (tmp_path / "error.txt").exists():
        assert time.monotonic() < deadline, "rank 0 still waits after 60 s: a hang"
        time.sleep(0.2)
    for process in context.processes:
        process.kill()
    seconds, message = (tmp_path / "error.txt").read_text().split("\n", 1)
    assert float(seconds) < 15  # the group's timeout is 3 s
    assert message.startswith("rank 0 of 2: join got no answer from the other ranks")
    assert "another rank died or stalled" in message
