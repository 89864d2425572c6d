"""Limits at the boundary: every numeric option's range (its bound accepted, a little past it
refused, before any work), stated in --help; memory estimates checked before the work; a progress
bar with the time left for L_k only on a terminal."""

import io
import re
import sys
from dataclasses import fields

import pytest
import torch

from vae_tutorial import commands, limits, resources
from vae_tutorial.cli import build_parser, main
from vae_tutorial.config import ModelConfig, TrainConfig
from vae_tutorial.distributed import rank_seed
from vae_tutorial.iwae import dataset_bound, importance_weighted_bound, log_importance_weights
from vae_tutorial.models import build_model
from vae_tutorial.sampling import decode_grid, sample_prior
from vae_tutorial.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = ModelConfig(latent_dim=2, hidden_dim=8)
TINY_CLI = ["--latent-dim", "2", "--hidden-dim", "8", "--device", "cpu"]
TINY_EPS = torch.finfo(torch.float32).tiny
# (field, its bound, a little past it, the interval the message names)
BOUNDS = [
    ("beta", 1e6, 1.001e6, "[0, 1e+06]"),
    ("free_bits", 1e6, 1.001e6, "[0, 1e+06]"),
    ("lr", 10.0, 10.01, "(0, 10]"),
    ("adam_eps", 1e6, 1.001e6, f"[{TINY_EPS:g}, 1e+06]"),
    ("adam_eps", TINY_EPS, TINY_EPS / 2, f"[{TINY_EPS:g}, 1e+06]"),
    ("epochs", 10**6, 10**6 + 1, "<= 1e+06"),
    ("warmup_epochs", 10**6, 10**6 + 1, "<= 1e+06"),
    ("batch_size", 60_000, 60_001, "<= 60000"),
    ("train_size", 60_000, 60_001, "<= 60000"),
    ("seed", 2**32 - 1, 2**32, "<= 4.29497e+09"),
]


def one_line(argv: list[str], capsys, status: int) -> str:
    """Run the CLI expecting the exit status and one line on stderr; return that line."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == status, err
    assert err.count("\n") == 1 and err.startswith("python -m vae_tutorial"), err
    return err


@pytest.mark.parametrize(("name", "bound", "over", "interval"), BOUNDS)
def test_each_bound_is_accepted_and_a_little_past_it_refused(name, bound, over, interval):
    assert getattr(TrainConfig(**{name: bound}), name) == bound
    with pytest.raises(ValueError, match=f"TrainConfig.{name}: expected .*{re.escape(interval)}"):
        TrainConfig(**{name: over})


@pytest.mark.parametrize(("name", "bound", "over", "interval"), BOUNDS[:4] + BOUNDS[5:9])
def test_the_cli_refuses_past_a_bound_before_any_work(
    name, bound, over, interval, capsys, tmp_path, monkeypatch
):
    monkeypatch.setattr(commands, "fit", lambda *a, **k: pytest.fail("training started"))
    flag = "--" + name.replace("_", "-")
    line = one_line(["train", flag, str(over), "--out", str(tmp_path / "r"), *TINY_CLI], capsys, 2)
    assert f"TrainConfig.{name}: expected" in line and interval in line
    assert not (tmp_path / "r").exists()  # nothing made: the check came first


def test_the_cli_accepts_the_bounds(tmp_path, capsys):
    out = tmp_path / "r"
    argv = ["train", "--epochs", "0", "--lr", "10", "--beta", "1e6", "--free-bits", "1e6"]
    argv += ["--seed", str(2**32 - 1), "--batch-size", "60000", "--out", str(out), *TINY_CLI]
    assert main(argv) == 0
    path = str(out / "checkpoint.pt")
    args = build_parser().parse_args(["evaluate", path, "--iwae-images", "10000"])
    assert args.iwae_images == 10_000
    capsys.readouterr()
    line = one_line(["train", "--seed", str(2**32), *TINY_CLI], capsys, 2)
    assert "expected an int <= 4294967295, got 4294967296" in line
    line = one_line(["evaluate", path, "--iwae-images", "10001"], capsys, 2)
    assert "--iwae-images: expected an int <= 10000, got 10001" in line


def test_every_numeric_option_states_its_range_in_help(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    numeric = [f for c in (ModelConfig, TrainConfig) for f in fields(c) if "low" in f.metadata]
    for f in numeric:
        if f.metadata.get("deprecated") or f.name == "seed" or isinstance(f.default, tuple):
            continue
        meta = f.metadata
        if meta["low"] is None and meta["high"] is None:
            continue
        span = limits.describe(meta["low"], meta["high"], meta.get("open_low", False))
        flag = "--" + f.name.replace("_", "-")
        assert f"{flag} {f.name.upper()} " in text
        assert f"(range: {span}" in text.split(f"{flag} {f.name.upper()} ")[1].split(" --")[0]
    assert "--lr LR Adam learning rate (range: (0, 10]) (default: 0.001)" in text
    assert "(range: >= 1; memory checked at the start)" in text


def test_derived_seeds_stay_in_torchs_range_at_the_bounds():
    seed = rank_seed(limits.SEED, limits.EPOCHS, 65_536)
    torch.Generator().manual_seed(seed)  # a 64-bit seed: no overflow
    assert rank_seed(7, 3, 1) == (7 * 1_000_003 + 3) * 65_537 + 1  # small seeds as before


def test_a_memory_estimate_past_the_machine_is_refused_and_at_it_accepted(monkeypatch):
    monkeypatch.setattr(resources, "available", lambda device: (1000, "of RAM on this machine"))
    resources.check_fits("f", 1000, "cpu", "fix")
    with pytest.raises(resources.OutOfMemory) as error:
        resources.check_fits("f", 1001, "cpu", "use a smaller k")
    message = "f: needs about 1001 bytes of memory, more than the 1000 bytes of RAM on this machine"
    assert str(error.value) == f"{message}; use a smaller k"


def test_the_estimate_is_a_floor_of_what_sampling_holds(monkeypatch):
    """Enough memory for the estimate: the samples (n, 784) fit inside it."""
    model = build_model(TINY)
    n = 50
    needed = resources.FLOAT32 * n * (784 + resources.row_values(TINY))
    assert needed >= sample_prior(model, n).numel() * 4 + n * 4 * (8 + 8 + 3 * 2)
    monkeypatch.setattr(resources, "available", lambda device: (needed, "of RAM"))
    sample_prior(model, n)
    with pytest.raises(resources.OutOfMemory, match=f"sample_prior: {n + 1} images decoded"):
        sample_prior(model, n + 1)


def test_allocations_past_the_machine_are_refused_before_any_work(tmp_path, capsys):
    model = build_model(TINY)
    x = torch.zeros(100, 784)
    with pytest.raises(resources.OutOfMemory, match="log_importance_weights: 10,000,000,000 "):
        log_importance_weights(model, x, 10**8)
    with pytest.raises(resources.OutOfMemory, match="importance_weighted_bound: 1,000,000,000 "):
        importance_weighted_bound(model, x, 10**8, chunk=10**7)
    with pytest.raises(resources.OutOfMemory, match="decode_grid: 10,000,000,000 images"):
        decode_grid(model, 10**5)
    with pytest.raises(resources.OutOfMemory, match="sample_prior: 10,000,000,000 images"):
        sample_prior(model, 10**10)
    config = TrainConfig(iwae_k=10**5, batch_size=60_000)
    with pytest.raises(resources.OutOfMemory, match="fit: 6,000,000,000 images .* TiB of memory"):
        fit(TINY, config, device="cpu", data_root=tmp_path / "no data here", progress=False)
    argv = ["train", "--iwae-k", "100000", "--batch-size", "60000", "--out", str(tmp_path / "r")]
    line = one_line([*argv, *TINY_CLI], capsys, 1)
    assert "use a smaller --batch-size or --iwae-k" in line
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_a_png_grid_past_matplotlibs_canvas_is_refused_before_loading(tmp_path, capsys):
    commands.check_grid("--n", 1091 * 8, 8)  # 1091 rows: 65520 pixels
    commands.check_grid("--n", 1091, 1091)
    with pytest.raises(ValueError, match="at most 1091 digits a side .*got 1092 rows of 8"):
        commands.check_grid("--n", 1091 * 8 + 1, 8)
    with pytest.raises(ValueError, match="got 1 rows of 1092; use --n <= 1190281"):
        commands.check_grid("--n", 1092, 1092)
    missing = tmp_path / "not-read.pt"
    missing.write_bytes(b"not a checkpoint")  # refused by the grid first: never read
    line = one_line(["sample", str(missing), "--n", "9000"], capsys, 2)
    assert "--n: expected a grid of at most 1091 digits a side" in line


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [True, False])
def test_l_k_shows_the_time_left_only_on_a_terminal(terminal, monkeypatch, capsys):
    model = build_model(TINY)
    images = torch.bernoulli(torch.full((300, 784), 0.3), generator=torch.Generator())
    stderr = Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    quiet = dataset_bound(model, images, 3)
    assert stderr.getvalue() == ""  # no progress asked
    shown = dataset_bound(model, images, 3, progress=True)
    torch.testing.assert_close(shown, quiet, rtol=0, atol=0)  # the bar changes nothing
    text = stderr.getvalue()
    if terminal:
        assert "L_3: 100%" in text and "3/3" in text and "<00:00" in text  # elapsed<left
    else:
        assert text == ""
