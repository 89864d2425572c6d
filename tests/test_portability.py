"""tests/portability.py: a run stopped from outside is not recorded as complete."""

import signal
import sys
from pathlib import Path

import portability
import pytest

from vae_tutorial.download import default_root


@pytest.mark.parametrize(
    ("code", "verdict"),
    [
        ("os.kill(os.getpid(), signal.SIGTERM)", "killed by SIGTERM"),
        ("os.kill(os.getpid(), signal.SIGKILL)", "killed by SIGKILL"),
        ("sys.exit(2)", "interrupted (pytest exit 2)"),  # pytest's answer to Ctrl-C
        ("sys.exit(1)", ""),  # tests failed: the run ended, the result is complete
        ("pass", ""),
    ],
)
def test_a_run_killed_from_outside_is_marked_stopped(tmp_path, code, verdict):
    command = [sys.executable, "-c", f"import os, signal, sys\n{code}"]
    exit_code, seconds = portability.run_logged(command, {}, tmp_path / "run.log")
    assert portability.stopped(exit_code) == verdict and seconds >= 0


def test_main_records_a_stopped_run_as_incomplete(monkeypatch, tmp_path):
    """main writes complete=False when one path's run was killed, True when all ran to the end."""
    written = []
    monkeypatch.setattr(portability, "LOGS", tmp_path)
    monkeypatch.setattr(portability, "check_path", lambda path, env: {"aten": "X"})
    monkeypatch.setattr(portability, "write_result", lambda r: written.append(r) or tmp_path)

    def run_logged(command, env, log, code=0):
        log.write_text("the run's last line\n")
        return code, 0.1

    for code, complete in ((-signal.SIGTERM, False), (2, False), (1, True), (0, True)):
        monkeypatch.setattr(portability, "run_logged", lambda *a, c=code: run_logged(*a, c))
        status = portability.main(["--paths", "native avx2", "--chapters", "none"])
        assert written[-1].complete is complete and status == int(code != 0)


def test_chapters_train_in_a_model_cache_of_their_own(monkeypatch, tmp_path):
    """Under each path the chapters start from an empty model cache with the checkout's MNIST."""
    seen = {}
    monkeypatch.setattr(portability, "LOGS", tmp_path)
    monkeypatch.setattr(portability, "check_path", lambda path, env: {"aten": "X"})
    stale = tmp_path / "avx2-data" / "models"
    stale.mkdir(parents=True)
    (stale / "old.pt").write_text("a model trained under another path")

    def run_logged(command, env, log):
        root = env.get("VAE_TUTORIAL_DATA")
        seen[command[-3] if "--nbval" in command else "units"] = root
        if root:  # what the chapters would find there
            seen["files"] = sorted(p.name for p in Path(root).iterdir())
            seen["mnist"] = (Path(root) / "MNIST").resolve()
        log.write_text("ok\n")
        return 0, 0.1

    monkeypatch.setattr(portability, "run_logged", run_logged)
    portability.run_path("avx2", ["book/01_autoencoders.ipynb"], True, None)
    assert seen["units"] is None  # the unit tests make their own temporary caches
    assert Path(seen["book/01_autoencoders.ipynb"]) == tmp_path / "avx2-data"
    assert seen["files"] == ["MNIST"]  # the stale model is gone
    assert seen["mnist"] == (default_root() / "MNIST").resolve()
