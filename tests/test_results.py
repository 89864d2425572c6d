"""Result files: the format round-trips, the stored files are valid and hold what chapter 5 shows,
the pages that quote them agree with them, they ship in the wheel, and the GPU check says when
there is no GPU."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from vae_tutorial import results
from vae_tutorial.reference_table import LITERATURE, PROTOCOL, SCORES, SOURCES, reference_table
from vae_tutorial.results import (
    FORMAT_VERSION,
    Result,
    latest,
    load_results,
    read_result,
    speed_table,
    write_result,
)

ROOT = Path(__file__).resolve().parents[1]
STORED = results.CHECKOUT  # benchmarks/results


def _script(name: str):
    """A script of benchmarks/ as a module (benchmarks/ is not a package), which imports the
    modules beside it (`arguments`) as it does when run."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


report = _script("report")


def _result(
    kind="train_speed", device="cpu", date="2026-01-02T03:04:05Z", complete=True, rows=None
):
    hardware = {"device": device, "cpu_model": "Test CPU", "cpu_cores": 2, "gpu": None}
    hardware |= {"torch_threads": 2, "load_average_1min": 0.5}
    return Result(
        kind=kind,
        command="benchmarks/test.py --flag",
        config={"steps": 3},
        hardware=hardware,
        date_utc=date,
        complete=complete,
        units={"seconds": "s"},
        rows=rows if rows is not None else [{"name": "a", "seconds": 1.5, "ok": True}],
    )


# The format


def test_a_result_round_trips_through_its_file_and_leaves_no_temporary_file(tmp_path):
    result = _result()
    path = write_result(result, tmp_path)
    assert path.name == "train_speed-cpu-20260102T030405Z.json"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert read_result(path) == result
    values = json.loads(path.read_text())
    assert values["format"] == "vae-tutorial-result" and values["format_version"] == FORMAT_VERSION
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask, "the user's usual permissions"


def test_rewriting_a_run_replaces_its_file(tmp_path):
    result = _result(complete=False)
    write_result(result, tmp_path)
    result.rows.append({"name": "b", "seconds": 2.0})
    result.complete = True
    path = write_result(result, tmp_path)
    assert len(list(tmp_path.iterdir())) == 1
    assert read_result(path).complete and len(read_result(path).rows) == 2


def test_the_kernel_path_a_run_took_is_recorded():
    """A run under ATEN_CPU_CAPABILITY=default says so, and names the variables that chose it."""
    code = "from vae_tutorial import results; h = results.hardware('cpu'); "
    code += "print(h['cpu_kernels'], h['kernel_settings'], sep='|')"
    plain = {k: v for k, v in os.environ.items() if k not in results.KERNEL_SETTINGS}
    chosen = {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}
    for env, settings in [
        (chosen, "ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2"),
        ({}, "None"),
    ]:
        run = [sys.executable, "-c", code]
        out = subprocess.run(run, env={**plain, **env}, capture_output=True, text=True)
        kernels, named = out.stdout.strip().split("|")
        assert named == settings, out.stderr
        assert (kernels == "DEFAULT") == bool(env)


def test_the_machine_and_the_software_are_recorded():
    hardware = results.hardware("cpu")
    assert hardware["device"] == "cpu" and hardware["gpu"] is None
    assert hardware["cpu_cores"] >= 1 and hardware["cpu_model"]
    assert hardware["torch_threads"] == torch.get_num_threads()
    software = _result().software
    assert software["torch"] == torch.__version__ and software["python"].count(".") == 2


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda v: {**v, "format_version": FORMAT_VERSION + 1}, "version"),
        (lambda v: {**v, "format": "something else"}, "format"),
        (lambda v: {k: x for k, x in v.items() if k != "rows"}, "missing fields.*rows"),
        (lambda v: {**v, "rows": [{"seconds": [1.0, 2.0]}]}, "rows: expected"),
        (lambda v: {**v, "rows": {"seconds": 1.0}}, "rows: expected a list"),
    ],
)
def test_a_file_in_another_format_is_refused_with_a_reason(change, message):
    with pytest.raises(ValueError, match=message):
        Result.from_json(change(_result().to_json()))


def test_latest_is_the_newest_complete_run_of_that_kind_and_device(tmp_path):
    write_result(_result(date="2026-01-01T00:00:00Z"), tmp_path)
    write_result(_result(date="2026-01-02T00:00:00Z", rows=[{"name": "newest"}]), tmp_path)
    write_result(_result(date="2026-01-03T00:00:00Z", complete=False), tmp_path)
    write_result(_result(date="2026-01-04T00:00:00Z", device="cuda"), tmp_path)
    write_result(_result(kind="other", date="2026-01-05T00:00:00Z"), tmp_path)
    chosen = _result(date="2026-01-06T00:00:00Z", rows=[{"name": "another kernel path"}])
    chosen.hardware["kernel_settings"] = "ATEN_CPU_CAPABILITY=default"
    write_result(chosen, tmp_path)
    assert latest("train_speed", device="cpu", directory=tmp_path).rows == [{"name": "newest"}]
    assert latest("train_speed", device="cuda", directory=tmp_path).date_utc[:10] == "2026-01-04"
    assert latest("train_speed", device="mps", directory=tmp_path) is None
    assert len(load_results("train_speed", directory=tmp_path)) == 5


def test_one_row_is_found_by_its_columns_or_the_error_says_what_matched():
    result = _result(rows=[{"loop": "fit", "batch": 1}, {"loop": "fit", "batch": 2}])
    assert result.one(loop="fit", batch=2) == {"loop": "fit", "batch": 2}
    with pytest.raises(KeyError, match="found 2"):
        result.one(loop="fit")
    with pytest.raises(KeyError, match="found 0"):
        result.one(loop="classic")


def test_the_installed_copy_of_the_files_is_read_first(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "PACKAGED", tmp_path / "not-installed")
    assert results.results_dir() == STORED
    monkeypatch.setattr(results, "PACKAGED", tmp_path)
    assert results.results_dir() == tmp_path


# The stored files


def test_every_stored_result_file_reads_and_is_named_after_its_run():
    files = sorted(STORED.glob("*.json"))
    assert files, "benchmarks/results/ holds no result file"
    for path in files:
        assert path.name == read_result(path).file_name


def _speed_runs():
    runs = [latest("train_speed", device=d, directory=STORED) for d in ("cpu", "cuda", "mps")]
    assert runs[0] is not None, "no complete CPU run of benchmarks/train_speed.py is stored"
    return [run for run in runs if run is not None]


def test_each_stored_speed_run_has_every_row_chapter_5_reads():
    for run in _speed_runs():
        base = {"batch_size": 128, "precision": "fp32", "compile": False}
        for loop in ("classic", "fit", "floor"):
            assert run.one(loop=loop, **base)["ms_per_step"] > 0
        for precision in ("fp32", "bf16"):
            for compile in (False, True):
                row = run.one(loop="fit", batch_size=128, precision=precision, compile=compile)
                assert row["first_epoch_seconds"] > 0
        sizes = {row["batch_size"] for row in run.select(loop="fit", precision="fp32")}
        assert len(sizes) >= 3, f"{run.path.name}: fit at three batch sizes"
        assert speed_table(run).count("\n") == len(run.rows) + 1


def test_the_speed_benchmark_writes_a_valid_file(tmp_path):
    train_speed = _script("train_speed")
    train_speed.main(
        ["--device", "cpu", "--steps", "2", "--repeats", "1", "--batch-sizes", "128"]
        + ["--no-compile", "--out", str(tmp_path)]
    )
    (path,) = tmp_path.glob("train_speed-cpu-*.json")
    run = read_result(path)
    assert run.complete and run.hardware["device"] == "cpu"
    assert {(row["loop"], row["precision"]) for row in run.rows} == {
        ("fit", "fp32"),
        ("fit", "bf16"),
        ("floor", "fp32"),
        ("classic", "fp32"),
    }
    assert all(row["steps"] == 2 and row["seconds"] > 0 for row in run.rows)


def test_a_speed_row_holds_the_median_round_and_the_spread():
    """One slow round (other work on the machine) moves neither the median nor the rates."""
    row = _script("train_speed").row({"steps": 10, "images": 1280}, [0.5, 9.0, 0.4, 0.6, 0.45])
    assert (row["seconds"], row["seconds_fastest"], row["seconds_slowest"]) == (0.5, 0.4, 9.0)
    assert row["ms_per_step"] == 50.0 and row["images_per_second"] == 2560.0


# The pages that quote them


def _copy_pages(root: Path) -> None:
    """README, the index and _toc.yml, and an empty stand-in for each chapter, under root."""
    (root / "book").mkdir()
    for name in ("README.md", "book/index.md", "_toc.yml"):
        shutil.copy(ROOT / name, root / name)
    for chapter in ROOT.glob("book/*.ipynb"):
        (root / "book" / chapter.name).touch()


def test_readme_and_the_index_agree_with_the_result_files():
    assert report.stale_pages() == [], "run python benchmarks/report.py"


def test_a_figure_edited_by_hand_fails_the_check(tmp_path):
    _copy_pages(tmp_path)
    assert report.stale_pages(root=tmp_path) == []
    index = tmp_path / "book" / "index.md"
    text = index.read_text()
    table = text.index("| seconds |")
    index.write_text(text[:table] + "| seconds | 1" + text[table + len("| seconds |") :])
    assert report.stale_pages(root=tmp_path) == ["book/index.md"]


def test_a_chapter_without_a_run_time_fails_the_check(tmp_path):
    _copy_pages(tmp_path)
    toc = tmp_path / "_toc.yml"
    toc.write_text(toc.read_text() + "  - file: book/99_new_chapter\n")
    (tmp_path / "book" / "99_new_chapter.ipynb").touch()
    with pytest.raises(ValueError, match="no run time for 99_new_chapter"):
        report.stale_pages(root=tmp_path)


def _reference(complete=True, nats=88.123, date="2026-01-02T03:04:05Z", curve=None):
    """A `reference` run as benchmarks/reference.py writes it: curve, test, units and time rows.

    curve: its curve rows (default: epochs 10 and 20); the run is scored at the last epoch."""
    result = _result(kind="reference", date=date, complete=complete)
    result.config = {
        "run": "mlp-400-20",
        "seed": 0,
        "model": {"kind": "vae", "arch": "mlp", "hidden_dim": 400, "latent_dim": 20},
        "train": {"iwae_k": 1, "warmup_epochs": 0, "binarize": "dynamic"},
        "protocol": {
            "train_images": "the first 50000 training images, dynamically binarized",
            "selection": "validation -ELBO every 10 epochs, best kept",
        },
    }
    curve = curve or [
        {"row": "curve", "epoch": e, "validation_neg_elbo": 95.0 - e / 10, "train_neg_elbo": 94.0}
        | {"test_neg_elbo": 94.5, "seconds": 60.0}
        for e in (10, 20)
    ]
    epoch, seconds = curve[-1]["epoch"], sum(row["seconds"] for row in curve)
    result.rows = curve + [
        {"row": "test", "epoch": epoch, "estimator": "neg_elbo", "k": 1, "nats": 92.5}
        | {"se_images": 0.31, "bits_per_dim": 0.17},
        {"row": "test", "epoch": epoch, "estimator": "neg_L_k", "k": 5000, "nats": nats}
        | {"se_images": 0.29, "bits_per_dim": 0.1624},
        {"row": "units", "epoch": epoch, "active_units": 17, "latent_dim": 20},
        {"row": "time", "epochs": epoch, "train_seconds": seconds, "test_seconds": 600.0}
        | {"wall_seconds": 720.0},
    ]
    return result


def _table_rows(table: str) -> list[dict[str, str]]:
    """A Markdown table's rows as {column: cell} (the header row names the columns)."""
    lines = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()]
    return [dict(zip(lines[0], cells, strict=True)) for cells in lines[2:]]


def test_the_reference_table_shows_complete_runs_beside_the_literature(tmp_path):
    write_result(_reference(), tmp_path)
    write_result(_reference(complete=False, nats=80.0, date="2026-01-03T03:04:05Z"), tmp_path)
    table = reference_table(tmp_path)
    rows = {row["model"]: row for row in _table_rows(table)}
    run = rows["784-400-20 MLP VAE, seed 0"]
    assert run["test -log p(x)"] == "88.12 ± 0.29" and run["test -ELBO"] == "92.50 ± 0.31"
    assert run["active units"] == "17 of 20" and run["trained on"] == "-ELBO, epoch 20 of 20"
    assert run["estimator"] == "-L_5000"
    assert run["binarization"] == "dynamic (training), static (test)"
    assert run["protocol"] == (
        "the first 50000 training images, dynamically binarized; "
        "selection: validation -ELBO every 10 epochs, best kept"
    )
    assert "80.00" not in table  # a run still in progress is not in the table
    vae, iwae, iwae2, classic = (rows[figure["model"]] for figure in LITERATURE)
    assert vae["test -log p(x)"] == "86.76" and iwae["test -log p(x)"] == "85.54"
    assert iwae2["test -log p(x)"] == "83.89"
    for figure in (vae, iwae, iwae2):  # Burda et al. 2016, table 1: dynamically binarized, L_5000
        assert figure["binarization"] == "dynamic" and figure["estimator"] == "-L_5000"
        assert figure["protocol"] == "60,000 training images, 3,280 passes, no early stopping"
    assert (
        classic["binarization"] == "none: grey levels"
        and "NOT a log-likelihood" in classic["estimator"]
    )
    # the example's printed test loss is a -ELBO in nats, quoted as "about": not a -log p(x)
    assert classic["test -ELBO"] == "about 105" and classic["test -log p(x)"] == ""
    assert "{cite}`burda2016importance`" in reference_table(tmp_path, cite=True)
    assert run["source"].startswith("this book: `benchmarks/results/reference-")
    book = {r["model"]: r for r in _table_rows(reference_table(tmp_path, cite=True))}
    assert book["784-400-20 MLP VAE, seed 0"]["source"].startswith("this book: `reference-")
    block = report.reference_block(tmp_path)
    assert "took 0.2 h of wall time" in block and "20 epochs at 6.0 s each" in block
    assert "then 10 min of test scoring" in block


def test_the_table_splits_into_scores_and_protocol_for_a_narrow_page(tmp_path):
    write_result(_reference(), tmp_path)
    whole = _table_rows(reference_table(tmp_path))
    scores = _table_rows(reference_table(tmp_path, columns=SCORES))
    protocol = _table_rows(reference_table(tmp_path, columns=PROTOCOL))
    sources = _table_rows(reference_table(tmp_path, columns=SOURCES))
    assert list(scores[0]) == SCORES and list(protocol[0]) == PROTOCOL
    assert list(sources[0]) == SOURCES
    assert set(SCORES) | set(PROTOCOL) | set(SOURCES) == set(whole[0])  # every column shown
    for row, *parts in zip(whole, scores, protocol, sources, strict=True):  # the same cells
        assert all(row == {**row, **part} for part in parts)
    with pytest.raises(ValueError, match="unknown columns \\['nats'\\]; choose from"):
        reference_table(tmp_path, columns=["model", "nats"])


def test_a_two_layer_run_shows_its_layers_its_passes_and_its_units_per_layer(tmp_path):
    result = _reference()
    result.config["run"] = "burda-iwae5-2l"
    result.config["model"] = {"kind": "hvae", "arch": "mlp", "hidden_dim": 400}
    result.config["model"] |= {"hidden": [200, 200], "latent_dim": 100}
    result.config["model"] |= {"hidden2": [100, 100], "latent_dim2": 50}
    result.config["train"]["iwae_k"] = 5
    result.config["protocol"] = {
        "train_images": "all 60000 training images, dynamically binarized",
        "passes": "3280 of 3280",
        "selection": "none: the last pass is the model scored",
    }
    result.rows = [r for r in result.rows if r["row"] != "units"] + [
        {"row": "units", "layer": 1, "active_units": 30, "dims": 100},
        {"row": "units", "layer": 2, "active_units": 9, "dims": 50},
    ]
    write_result(result, tmp_path)
    (run,) = [r for r in _table_rows(reference_table(tmp_path)) if "this book" in r["source"]]
    assert run["model"] == "784-200-200-100-100-100-50 MLP 2-layer VAE (IWAE k = 5), seed 0"
    assert run["active units"] == "z1: 30 of 100, z2: 9 of 50"
    assert run["trained on"] == "-L_5, epoch 20 of 20"
    assert run["protocol"] == (
        "all 60000 training images, dynamically binarized; 3280 of 3280 passes; "
        "selection: none: the last pass is the model scored"
    )
    result.rows = [r for r in result.rows if r["row"] != "time"]
    result.rows.append({"row": "time", "epochs": 20, "wall_seconds": 7200.0})
    result.rows[-1] |= {"core_seconds": 5400.0}
    write_result(result, tmp_path)
    block = report.reference_block(tmp_path)  # README: no validation, so no projection
    assert "took 2.0 h of wall time and 1.5 core-hours for 20 passes" in block


def test_a_reference_figure_edited_by_hand_fails_the_check():
    text = (ROOT / "README.md").read_text()
    assert report.rewritten(text, "README.md") == text, "run python benchmarks/report.py"
    edited = text.replace("| 86.76 ", "| 86.75 ")
    assert edited != text
    assert report.rewritten(edited, "README.md") == text
    with pytest.raises(ValueError, match="expected one pair of marker lines"):
        report.rewritten(text.replace(report.BEGIN_REFERENCE, ""), "README.md")


def test_every_chapter_has_a_stored_run_time():
    run = latest("chapter_times", directory=STORED)
    assert run is not None, "no complete run of benchmarks/chapter_times.py is stored"
    timed = {row["chapter"] for row in run.select(mode="fresh")}
    assert set(report.toc_chapters()) <= timed


# Packaging


def test_pyproject_ships_the_result_files_as_package_data():
    text = (ROOT / "pyproject.toml").read_text()  # no tomllib: Python 3.10 is supported
    assert 'packages = ["vae_tutorial", "vae_tutorial.benchmark_results"]' in text
    assert 'package-dir = { "vae_tutorial.benchmark_results" = "benchmarks/results" }' in text
    assert 'package-data = { "vae_tutorial.benchmark_results" = ["*.json"] }' in text
    assert results.PACKAGED.name == "benchmark_results"


def test_a_built_wheel_holds_every_result_file(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(ROOT / "vae_tutorial", source / "vae_tutorial")
    shutil.copytree(STORED, source / "benchmarks" / "results")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    done = subprocess.run(
        [*command, "-w", str(tmp_path / "wheel"), str(source)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    stored = {f"vae_tutorial/benchmark_results/{p.name}" for p in STORED.glob("*.json")}
    assert stored and stored <= names


# The GPU check


def _gpu_check(outdir: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(outdir)],
        env={**os.environ, "PYTHON": sys.executable, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_the_gpu_check_says_no_gpu_here_and_fails(tmp_path):
    done = _gpu_check(tmp_path / "out")
    assert done.returncode != 0
    assert "no GPU here" in done.stderr
    assert not (tmp_path / "out").exists()


def test_the_gpu_check_fails_fast_without_mnist_instead_of_downloading(tmp_path):
    done = _gpu_check(tmp_path / "out", GPU_CHECK_DRY_RUN="1", VAE_TUTORIAL_DATA=str(tmp_path))
    assert done.returncode == 1
    assert "MNIST is not ready" in done.stderr and "does not download" in done.stderr
    assert not (tmp_path / "out").exists()


def test_named_runs_started_in_the_same_second_get_their_own_files(tmp_path):
    first, second = _reference(), _reference()
    second.config = {**second.config, "run": "mlp-400-50-warmup"}
    paths = {write_result(first, tmp_path), write_result(second, tmp_path)}
    assert len(paths) == 2 and len(list(tmp_path.glob("*.json"))) == 2
    assert {read_result(path).config["run"] for path in paths} == {
        "mlp-400-20",
        "mlp-400-50-warmup",
    }


def test_readme_says_where_each_reference_curve_leads_as_a_range(tmp_path):
    # a noise-free curve 90 + 40 t^(-1/2), its test -L_5000 5 nats below: every window agrees
    curve = [
        {"row": "curve", "epoch": e, "validation_neg_elbo": 90.0 + 40.0 * e**-0.5}
        | {"seconds": 60.0}
        for e in range(10, 410, 10)
    ]
    write_result(_reference(nats=90.0 + 40.0 * 400**-0.5 - 5.0, curve=curve), tmp_path)
    block = report.reference_block(tmp_path)
    # at t = 3280: 85 + 40 / sqrt(3280) = 85.70; at t -> inf: 85.00; 6 s per epoch: 5.5 h
    assert "projects 85.70 to 85.70 nats of test -log p(x) at 3,280 epochs" in block
    assert "(asymptotes 85.00 to 85.00; 86.76: every fit is below it; 85.54: not settled" in block
    assert "83.89: every fit stays above it, even at t -> inf)" in block
    assert "its median 6.0 s each would take about 5 h" in block
    assert block.endswith(report.CAVEAT)
    write_result(_reference(date="2026-01-05T03:04:05Z"), tmp_path / "short")  # 2 curve points
    assert "too short to project" in report.reference_block(tmp_path / "short")
