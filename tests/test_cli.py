"""The command line: train, evaluate and sample on a tiny run; one-line errors for bad input."""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
import torch

from vae_tutorial import commands
from vae_tutorial.checkpoint import load_checkpoint, save_checkpoint
from vae_tutorial.cli import main
from vae_tutorial.config import ModelConfig, TrainConfig
from vae_tutorial.data import load_mnist
from vae_tutorial.evaluate import evaluate_elbo
from vae_tutorial.history import History
from vae_tutorial.likelihoods import TAYLOR_BELOW
from vae_tutorial.models import build_model

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--epochs", "1", "--train-size", "512", "--latent-dim", "2", "--hidden-dim", "32"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny model trained through the CLI; its output folder."""
    out = tmp_path_factory.mktemp("run")
    assert main(["train", *TINY, "--out", str(out), "--device", "cpu", "--samples", "16"]) == 0
    return out


def test_train_writes_checkpoint_metrics_and_samples(run, capsys):
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "metrics.json", "samples.png"]
    metrics = json.loads((run / "metrics.json").read_text())
    history = load_checkpoint(run / "checkpoint.pt", "cpu").history
    assert metrics["history"] == history.to_dict()
    assert metrics["test"]["neg_elbo_nats"] == history.test_neg_elbo[-1]
    bits = history.test_neg_elbo[-1] / (784 * math.log(2))
    assert metrics["test"]["bits_per_dim"] == pytest.approx(bits)
    assert (
        metrics["model_config"]["latent_dim"] == 2 and metrics["train_config"]["train_size"] == 512
    )
    assert matplotlib.image.imread(run / "samples.png").shape[2] == 4  # an RGBA PNG


def test_evaluate_prints_and_writes_the_test_elbo_and_the_iwae_bound(run, tmp_path, capsys):
    out = tmp_path / "eval.json"
    args = ["evaluate", str(run / "checkpoint.pt"), "--k", "5", "--iwae-images", "50"]
    assert main([*args, "--out", str(out), "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    train_metrics = json.loads((run / "metrics.json").read_text())["test"]
    assert printed["neg_elbo_nats"] == pytest.approx(train_metrics["neg_elbo_nats"], rel=1e-6)
    assert printed["bits_per_dim"] == pytest.approx(train_metrics["bits_per_dim"], rel=1e-6)
    assert (printed["iwae_k"], printed["iwae_images"], printed["test_images"]) == (5, 50, 10000)
    bits = printed["neg_iwae_bound_nats"] / (784 * math.log(2))
    assert printed["iwae_bits_per_dim"] == pytest.approx(bits)


def test_sample_writes_a_png_grid(run, tmp_path):
    out = tmp_path / "grid.png"
    assert (
        main(["sample", str(run / "checkpoint.pt"), "--n", "12", "--nrow", "6", "--out", str(out)])
        == 0
    )
    image = matplotlib.image.imread(out)
    assert image.ndim == 3 and image.shape[1] > image.shape[0]  # 2 rows of 6: wider than tall


def mean_by_the_papers_formula(logits: torch.Tensor) -> torch.Tensor:
    """E[x] of the decoder in float64: lambda = sigmoid(logits) for a Bernoulli; for a continuous
    Bernoulli lambda / (2 lambda - 1) + 1 / (2 artanh(1 - 2 lambda)), 1/2 + l / 12 near l = 0."""
    lam = torch.sigmoid(logits.double())
    cb = lam / (2 * lam - 1) + 1 / (2 * torch.atanh(1 - 2 * lam))
    return lam, torch.where(logits.abs() < 1e-3, 0.5 + logits.double() / 12, cb)


@pytest.mark.parametrize(
    ("likelihood", "data"), [("bernoulli", "dynamic"), ("continuous_bernoulli", "none")]
)
def test_samples_show_the_mean_of_the_models_likelihood(likelihood, data, tmp_path, monkeypatch):
    """samples.png of train and of sample show E[x|z]: for a continuous Bernoulli, not lambda."""
    shown = []
    write = commands.write_figure

    def spy(images, path, title, nrow):
        shown.append(images)
        write(images, path, title, nrow)

    monkeypatch.setattr(commands, "write_figure", spy)
    out, n = tmp_path / "run", 16
    train = [*TINY, "--likelihood", likelihood, "--binarize", data, "--samples", str(n)]
    assert main(["train", *train, "--out", str(out), "--device", "cpu"]) == 0
    checkpoint = str(out / "checkpoint.pt")
    sample = ["--n", str(n), "--out", str(tmp_path / "s.png"), "--device", "cpu"]
    assert main(["sample", checkpoint, *sample]) == 0
    model = load_checkpoint(out / "checkpoint.pt", "cpu").model
    z = torch.randn((n, 2), generator=torch.Generator().manual_seed(0))  # both use --seed 0
    with torch.no_grad():
        lam, cb_mean = mean_by_the_papers_formula(model.decode(z))  # (n, 784) each
    expected = lam if likelihood == "bernoulli" else cb_mean
    eps = torch.finfo(torch.float32).eps
    # float32 sigmoid (exp, add, divide): 3 ulps of lambda <= 1; the continuous Bernoulli's mean:
    # the float32 bound derived in tests/test_continuous_bernoulli.py
    atol = 3 * eps if likelihood == "bernoulli" else 2 * 2 * eps * (1 / TAYLOR_BELOW + 0.5)
    assert len(shown) == 2
    for images in shown:
        torch.testing.assert_close(images.double(), expected, rtol=0, atol=atol)
    if likelihood == "continuous_bernoulli":
        assert (cb_mean - lam).abs().max() > 0.05  # lambda would not pass


@pytest.mark.parametrize("command", ["train", "evaluate", "sample"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert f"usage: python -m vae_tutorial {command}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["fit"], "invalid choice: 'fit'"),
        (["train", "--epochs", "-1"], "TrainConfig.epochs: expected an int >= 0, got -1"),
        (["train", "--epochs", "two"], "argument --epochs: invalid int value: 'two'"),
        (["train", "--binarize", "static"], "argument --binarize: invalid choice: 'static'"),
        (["train", "--likelihood", "gauss"], "argument --likelihood: invalid choice: 'gauss'"),
        (["train", "--binarize", "none"], "likelihood='bernoulli' expects binary x"),
        (["train", "--device", "tpu"], "device: expected 'auto', 'cpu', 'cuda'"),
        (["train", "--seed", "-1"], "argument --seed: expected an int >= 0, got -1"),
        (["train", "--samples", "0"], "argument --samples: expected an int >= 1, got 0"),
        (["train", "--samples", "2.5"], "--samples: expected an int >= 1, got '2.5' (a str)"),
        (["evaluate", "missing.pt"], "expected a checkpoint file, got 'missing.pt' (no such file)"),
        (["sample", "missing.pt"], "expected a checkpoint file, got 'missing.pt' (no such file)"),
    ],
)
def test_bad_arguments_give_one_line_and_status_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written outside
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m vae_tutorial")
    assert message in err
    assert list(tmp_path.iterdir()) == []


def test_evaluate_rejects_a_checkpoint_that_is_not_a_vae(tmp_path, capsys):
    path = tmp_path / "ae.pt"
    save_checkpoint(path, build_model(ModelConfig(kind="ae")), History(), TrainConfig(epochs=0))
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", str(path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "evaluate: expected a VAE (kind 'vae') or a conditional VAE (kind 'cvae') or a " in err
    assert "got an autoencoder (kind 'ae'); an autoencoder has no ELBO" in err


def fails(argv: list[str], capsys, status: int = 2) -> str:
    """Run the CLI expecting one line on stderr and the exit status; return that line."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == status, err
    *progress, line, end = err.split("\n")
    assert end == "" and line.startswith("python -m vae_tutorial")
    assert all(bar.lstrip("\r").startswith("fit:") for bar in progress)  # a training bar at most
    assert "Traceback" not in err
    return line


def copy_run(run: Path, folder: Path) -> Path:
    out = folder / "copy"
    shutil.copytree(run, out)
    return out


@pytest.fixture
def no_training(monkeypatch):
    """The CLI may not start training: every check must come first."""

    def forbidden(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(commands, "fit", forbidden)


def broken_checkpoint(kind: str, run: Path, folder: Path) -> Path:
    path = folder / "broken.pt"
    good = run / "checkpoint.pt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[:1000])
    elif kind == "random bytes":
        path.write_bytes(os.urandom(4000))
    elif kind == "bare state_dict":
        torch.save(torch.load(good, weights_only=True)["model_state"], path)
    elif kind == "foreign":
        torch.save({"args": argparse.Namespace(epochs=1)}, path)
    elif kind == "config disagrees with weights":
        state = torch.load(good, weights_only=True)
        state["model_config"]["hidden_dim"] = 33
        torch.save(state, path)
    elif kind == "newer version":
        state = torch.load(good, weights_only=True)
        state["version"] = 99
        torch.save(state, path)
    return path


@pytest.mark.parametrize("command", ["evaluate", "sample"])
@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("empty", "expected a vae_tutorial checkpoint, got an empty file"),
        ("truncated", "which torch.load cannot read (PytorchStreamReader"),
        ("random bytes", "which torch.load cannot read ("),
        ("bare state_dict", "got a bare state_dict of 10 tensors (no configs); load it with"),
        ("foreign", "which holds Python objects (argparse.Namespace), not only tensors"),
        ("config disagrees with weights", "expected weights that fit its model_config"),
        ("newer version", "expected format version 3 (the one this vae_tutorial reads) or one of"),
    ],
)
def test_a_broken_checkpoint_gives_one_line_and_status_2(
    command, kind, message, run, tmp_path, capsys
):
    path = broken_checkpoint(kind, run, tmp_path)
    err = fails([command, str(path), "--device", "cpu", "--out", str(tmp_path / "o")], capsys)
    assert message in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["evaluate", "sample"])
def test_non_finite_weights_give_status_1(command, run, tmp_path, capsys):
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["model_state"]["decoder.0.weight"][0, 0] = math.nan
    path = tmp_path / "nan.pt"
    torch.save(state, path)
    err = fails([command, str(path), "--out", str(tmp_path / "o")], capsys, status=1)
    assert f"{command}: expected a model with finite weights, got 1 NaN or infinite" in err
    assert "(in decoder.0.weight); the run that made it diverged" in err
    assert not (tmp_path / "o").exists()


def test_non_finite_scores_give_status_1_and_no_json(run, tmp_path, capsys, monkeypatch):
    def overflowing(model, images, **kwargs):
        return dict(evaluate_elbo(model, images[:10], **kwargs), neg_elbo=math.inf)

    monkeypatch.setattr(commands, "evaluate_elbo", overflowing)
    out = tmp_path / "eval.json"
    err = fails(["evaluate", str(run / "checkpoint.pt"), "--out", str(out)], capsys, status=1)
    assert "evaluate: expected finite scores, got neg_elbo_nats=inf" in err
    assert not out.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["train", *TINY, "--out", "{file}/run"],
        ["evaluate", "{checkpoint}", "--out", "{file}/eval.json"],
        ["sample", "{checkpoint}", "--out", "{file}/samples.png"],
    ],
)
def test_an_output_under_a_regular_file_gives_status_2_before_any_work(
    argv, run, tmp_path, capsys, no_training
):
    file = tmp_path / "notes.txt"
    file.write_text("")
    argv = [a.format(file=file, checkpoint=run / "checkpoint.pt") for a in argv]
    err = fails(argv, capsys)
    assert "--out: expected a path in a folder that can be written, got '" in err
    assert "notes.txt' is a file, not a folder); pick another --out" in err


def test_an_unwritable_out_folder_gives_status_2_before_training(
    tmp_path, capsys, monkeypatch, no_training
):
    real_open = os.open

    def read_only(
        path, *args, **kwargs
    ):  # root ignores permission bits: refuse as the kernel would
        if Path(path).parent == tmp_path / "run":
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    err = fails(["train", *TINY, "--out", str(tmp_path / "run")], capsys)
    assert "--out: expected a path in a folder that can be written" in err
    assert "(Permission denied); pick another --out" in err


def test_train_into_a_folder_with_a_checkpoint_needs_resume_or_overwrite(
    run, tmp_path, capsys, no_training
):
    out = copy_run(run, tmp_path)
    before = (out / "checkpoint.pt").read_bytes()
    err = fails(["train", *TINY, "--out", str(out)], capsys)
    assert f"--out: expected a path without a checkpoint, got {str(out / 'checkpoint.pt')!r}" in err
    assert "pass --resume to continue it (same settings), --overwrite to replace it" in err
    err = fails(["train", *TINY, "--out", str(out), "--resume", "--overwrite"], capsys)
    assert "argument --overwrite: not allowed with argument --resume" in err
    assert (out / "checkpoint.pt").read_bytes() == before


def test_resume_continues_and_overwrite_replaces(run, tmp_path, capsys):
    out = copy_run(run, tmp_path)
    two = ["--epochs", "2", *TINY[2:]]
    assert main(["train", *two, "--out", str(out), "--device", "cpu", "--resume"]) == 0
    assert load_checkpoint(out / "checkpoint.pt", "cpu").history.epochs_done == 2
    capsys.readouterr()
    err = fails(["train", *TINY, "--hidden-dim", "33", "--out", str(out), "--resume"], capsys)
    assert "resume: expected a checkpoint with the same configs" in err
    assert "'hidden_dim': (33, 32)" in err
    assert main(["train", *TINY, "--out", str(out), "--overwrite", "--device", "cpu"]) == 0
    assert load_checkpoint(out / "checkpoint.pt", "cpu").history.epochs_done == 1


def test_zero_epochs_writes_the_untrained_model(tmp_path, capsys):
    out = tmp_path / "untrained"
    argv = ["train", "--epochs", "0", *TINY[2:], "--out", str(out), "--device", "cpu"]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "metrics.json", "samples.png"]
    assert "0 epochs: the untrained model (score it with" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"] is None and metrics["history"]["test_neg_elbo"] == []
    assert main(["evaluate", str(out / "checkpoint.pt"), "--device", "cpu"]) == 0
    untrained = json.loads(capsys.readouterr().out)["neg_elbo_nats"]
    assert untrained > 500  # about 784 ln 2 = 543: every pixel near p = 1/2


def test_a_missing_gpu_gives_status_2_before_any_file_is_made(
    run, tmp_path, capsys, monkeypatch, no_training
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    for argv in (["train", *TINY], ["evaluate", str(run / "checkpoint.pt")]):
        err = fails([*argv, "--device", "cuda"], capsys)
        assert "device: expected an available device (cpu" in err
        assert "got 'cuda'; this machine has no CUDA GPU: pass 'auto'" in err
    assert list(tmp_path.iterdir()) == []


def test_evaluate_draws_z_with_the_given_seed(run, capsys):
    scores = {}
    for seed in (0, 1, 1):
        argv = ["evaluate", str(run / "checkpoint.pt"), "--seed", str(seed), "--device", "cpu"]
        assert main([*argv, "--k", "3", "--iwae-images", "20"]) == 0
        printed = json.loads(capsys.readouterr().out)
        scores.setdefault(seed, []).append(printed)
    assert scores[1][0] == scores[1][1]  # the same seed, the same numbers
    assert scores[0][0]["neg_elbo_nats"] != scores[1][0]["neg_elbo_nats"]
    assert scores[0][0]["neg_iwae_bound_nats"] != scores[1][0]["neg_iwae_bound_nats"]
    model = load_checkpoint(run / "checkpoint.pt", "cpu").model
    images, _ = load_mnist("test", binarize="static", seed=0)
    expected = evaluate_elbo(model, images, seed=1)["neg_elbo"]
    assert scores[1][0]["neg_elbo_nats"] == pytest.approx(expected, rel=1e-6)


def test_a_full_disk_gives_status_1(run, tmp_path, capsys, monkeypatch):
    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)  # the JSON is written, then synced: no space
    out = tmp_path / "eval.json"
    err = fails(["evaluate", str(run / "checkpoint.pt"), "--out", str(out)], capsys, status=1)
    assert f"writing {out}: the disk is full; free some space there" in err
    assert list(tmp_path.iterdir()) == []  # nothing half-written


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "error: argument checkpoint: expected a checkpoint file"),
        (b"\x00" * 100, "which torch.load cannot read"),
    ],
)
def test_python_dash_m_on_a_missing_or_broken_checkpoint_prints_no_traceback(
    tmp_path, content, message
):
    path = tmp_path / "broken.pt"
    if content is not None:
        path.write_bytes(content)
    result = subprocess.run(
        [sys.executable, "-m", "vae_tutorial", "sample", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert message in result.stderr


def test_a_diverged_run_gives_status_1_with_advice(tmp_path, capsys):
    argv = ["train", *TINY, "--lr", "10", "--out", str(tmp_path / "run"), "--device", "cpu"]
    err = fails(argv, capsys, status=1)  # lr at its bound (limits.LR): a run that diverges
    assert "error: training diverged: non-finite loss at epoch 1 of 1" in err
    assert "Try a lower learning rate (lr=10 now" in err


def test_an_interrupted_train_gives_one_line_and_status_130(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "fit", interrupted)
    err = fails(["train", *TINY, "--out", str(tmp_path / "run")], capsys, status=130)
    assert "interrupted; any checkpoint written so far is whole" in err
