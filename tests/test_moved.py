"""Names that moved in issue 20 import from their old module for one release, with a warning."""

import importlib
import pkgutil
import subprocess
import sys
import warnings

import pytest
import torch

import vae_tutorial
from vae_tutorial.config import ModelConfig
from vae_tutorial.models import build_model

LIKELIHOOD_NAMES = (
    "TAYLOR_BELOW",
    "bernoulli_log_likelihood",
    "continuous_bce",
    "continuous_bernoulli_log_likelihood",
    "continuous_bernoulli_log_norm",
    "continuous_bernoulli_mean",
    "likelihood_mean",
    "log_likelihood",
)
OLD = {  # old module -> {name: new module}: what readers and the chapters imported before issue 20
    "train": {
        "TrainConfig": "config",
        "History": "history",
        "TEST_BATCH": "test_set",
        "TEST_SEED": "test_set",
        "load_test_set": "test_set",
    },
    "models": {
        "ModelConfig": "config",
        "CLASSES": "labels",
        "check_labels": "labels",
        "label_args": "labels",
        "IMAGE_SHAPE": "networks",
        "PIXELS": "networks",
    },
    "elbo": {
        "LIKELIHOODS": "config",
        "kl_warmup": "objective",
        "free_bits_kl": "objective",
        **dict.fromkeys(LIKELIHOOD_NAMES, "likelihoods"),
    },
    "evaluate": dict.fromkeys(
        ("ROWS_PER_CHUNK", "importance_weighted_bound", "log_importance_weights"), "iwae"
    ),
    "explorer": {"LatentExplorer": "explorer_widget"},
    "checkpoint": dict.fromkeys(("capture_rng", "check_resumable", "restore_rng"), "resume"),
    "run": {
        "TrainConfig": "config",
        "TEST_DATA": "config",
        "History": "history",
        "SCORING": "history",
    },
}
MOVES = [(old, name, new) for old, names in OLD.items() for name, new in names.items()]


def module(name: str) -> object:
    return importlib.import_module(f"vae_tutorial.{name}")


@pytest.mark.parametrize(("old", "name", "new"), MOVES, ids=lambda v: v)
def test_an_old_name_imports_the_same_object_and_warns_naming_the_new_import(old, name, new):
    namespace = {}
    with pytest.warns(DeprecationWarning) as caught:
        exec(f"from vae_tutorial.{old} import {name}", namespace)  # as a reader's cell does
        by_attribute = getattr(module(old), name)
    assert namespace[name] is by_attribute is getattr(module(new), name)
    assert len(caught) == 2
    for warning in caught:
        assert f"`from vae_tutorial.{new} import {name}`" in str(warning.message)
        # attributed to the line that imports, so that Jupyter shows it under the reader's cell
        assert warning.filename in ("<string>", __file__)


@pytest.mark.parametrize(("old", "name", "new"), MOVES, ids=lambda v: v)
def test_a_name_in_its_new_home_does_not_warn(old, name, new):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exec(f"from vae_tutorial.{new} import {name}", {})


@pytest.mark.parametrize("old", OLD)
def test_an_old_modules_own_names_do_not_warn(old):
    names = dir(module(old))  # help() and inspect read each name dir() lists
    assert not set(names) & set(OLD[old])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in names:
            getattr(module(old), name)


def test_the_package_imports_no_old_name():
    modules = [m.name for m in pkgutil.iter_modules(vae_tutorial.__path__) if m.name != "__main__"]
    code = "import importlib\n" + "".join(
        f"importlib.import_module('vae_tutorial.{m}')\n" for m in modules
    )
    result = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", code],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("kind", ["vae", "ae", "cvae"])
def test_decode_probs_is_decode_mean_with_a_warning(kind):
    model = build_model(ModelConfig(kind=kind, latent_dim=2, hidden_dim=8))
    z = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    labels = (torch.tensor([0, 4, 9]),) if kind == "cvae" else ()
    with pytest.warns(
        DeprecationWarning, match=r"\.decode_probs is now \w+\.decode_mean"
    ) as caught:
        old = model.decode_probs(z, *labels)
    assert caught[0].filename == __file__
    torch.testing.assert_close(old, model.decode_mean(z, *labels), rtol=0, atol=0)
