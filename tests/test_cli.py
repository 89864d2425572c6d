"""The command line: train, evaluate and sample on a tiny run; one-line errors for bad input."""

import json
import math
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

from vae_tutorial.checkpoint import load_checkpoint, save_checkpoint
from vae_tutorial.cli import main
from vae_tutorial.models import ModelConfig, build_model
from vae_tutorial.train import History, TrainConfig

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
    assert "evaluate: expected a VAE checkpoint, got kind='ae'" in capsys.readouterr().err


def test_python_dash_m_runs_the_cli_without_a_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "vae_tutorial", "sample", str(tmp_path / "none.pt")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert "error: argument checkpoint: expected a checkpoint file" in result.stderr
