"""Functions refuse a model they cannot serve, by its class, before any work, naming what they
expect: a conditional model where labels cannot be passed, a one-layer model where a two-layer one
is needed and the reverse, an autoencoder where q(z|x) is needed."""

import re

import pytest
import torch

from vae_tutorial.checks import model_kind
from vae_tutorial.config import ModelConfig
from vae_tutorial.evaluate import encode_dataset, evaluate_elbo
from vae_tutorial.explorer import export_decoder
from vae_tutorial.explorer_widget import LatentExplorer
from vae_tutorial.hierarchical_scores import evaluate_hierarchical_elbo, hierarchical_dataset_bound
from vae_tutorial.inference_gap import gaussian_elbo, inference_gaps
from vae_tutorial.iwae import dataset_bound, importance_weighted_bound
from vae_tutorial.models import VAE, build_model
from vae_tutorial.plots import plot_manifold
from vae_tutorial.sampling import decode_grid, interpolate, reconstruct, sample_prior

pytestmark = pytest.mark.usefixtures("one_thread")

KINDS = {
    "vae": ModelConfig(latent_dim=2, hidden_dim=8),
    "ae": ModelConfig(kind="ae", latent_dim=2, hidden_dim=8),
    "cvae": ModelConfig(kind="cvae", latent_dim=2, hidden_dim=8),
    "hvae": ModelConfig(kind="hvae", latent_dim=2, hidden=(8,), latent_dim2=2, hidden2=(8,)),
}
NAMES = {
    "vae": "a VAE (kind 'vae')",
    "ae": "an autoencoder (kind 'ae')",
    "cvae": "a conditional VAE (kind 'cvae')",
    "hvae": "a hierarchical VAE (kind 'hvae')",
}
X = torch.bernoulli(torch.full((3, 784), 0.3), generator=torch.Generator().manual_seed(0))
Y = torch.tensor([1, 2, 3])
MU = torch.zeros(3, 2)
ONE_LAYER = ("vae", "cvae")  # q(z|x) and one z: the scores of evaluate and iwae
# Each entry point, the kinds it serves, and a call of it on a model (a wrong one: refused).
CALLS = {
    "evaluate_elbo": (ONE_LAYER, lambda m: evaluate_elbo(m, X)),
    "encode_dataset": (("vae", "cvae", "ae"), lambda m: encode_dataset(m, X)),
    "dataset_bound": (ONE_LAYER, lambda m: dataset_bound(m, X, 2)),
    "importance_weighted_bound": (ONE_LAYER, lambda m: importance_weighted_bound(m, X, 2)),
    "reconstruct": (("vae", "cvae", "ae"), lambda m: reconstruct(m, X)),
    "interpolate": (("vae", "ae"), lambda m: interpolate(m, X[0], X[1])),
    "decode_grid": (("vae", "ae"), lambda m: decode_grid(m, 3)),
    "inference_gaps": (("vae",), lambda m: inference_gaps(m, X, k=2, steps=1)),
    "gaussian_elbo": (("vae",), lambda m: gaussian_elbo(m, X, MU, MU)),
    "evaluate_hierarchical_elbo": (("hvae",), lambda m: evaluate_hierarchical_elbo(m, X)),
    "hierarchical_dataset_bound": (("hvae",), lambda m: hierarchical_dataset_bound(m, X, 2)),
}


def _model(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(KINDS[kind])


@pytest.mark.parametrize("name", CALLS)
def test_each_entry_point_refuses_the_kinds_it_cannot_serve(name):
    served, call = CALLS[name]
    expected = " or ".join(NAMES[k] for k in served)
    for kind in KINDS:
        if kind in served:
            continue
        with pytest.raises(ValueError) as error:
            call(_model(kind))
        assert str(error.value).startswith(f"{name}: expected {expected}, got {NAMES[kind]}; ")


@pytest.mark.parametrize("name", ["evaluate_elbo", "dataset_bound", "inference_gaps"])
def test_the_kind_is_checked_before_anything_else(name):
    """A wrong kind with NaN weights and no labels: the kind is named, not the weights or y."""
    served, call = CALLS[name]
    model = _model("hvae")
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(ValueError, match=f"{name}: expected .*got {re.escape(NAMES['hvae'])}"):
        call(model)


def test_a_served_kind_is_accepted():
    for served, call in CALLS.values():
        assert call(_model(served[0])) is not None  # the first kind each serves runs through


def test_the_messages_say_what_to_do():
    hvae, cvae = _model("hvae"), _model("cvae")
    with pytest.raises(ValueError, match="has its own functions .hierarchical_scores"):
        evaluate_elbo(hvae, X)
    with pytest.raises(ValueError, match="the scores of a one-layer model: evaluate, iwae$"):
        hierarchical_dataset_bound(_model("vae"), X, 2)
    with pytest.raises(ValueError, match="decode the path yourself"):
        interpolate(cvae, X[0], X[1])
    with pytest.raises(ValueError, match=r"takes labels y, which this function does not"):
        inference_gaps(cvae, X, k=2, steps=1)
    with pytest.raises(ValueError, match=r"got \[1, 2\] \(a list\); build one with build_model"):
        model_kind("f", [1, 2], (VAE,))


def test_a_hierarchical_vae_takes_no_labels():
    with pytest.raises(ValueError, match="sample_prior: expected no labels for a model of kind"):
        sample_prior(_model("hvae"), 3, labels=Y)


def test_the_explorer_refuses_a_conditional_vae_before_writing(tmp_path):
    """export_decoder used to fail inside the decoder with 'pass y, e.g. model(x, y)'."""
    path = tmp_path / "explorer.js"
    codes, labels = torch.zeros(3, 2), Y
    message = f"model: expected {NAMES['vae']}, got {NAMES['cvae']}; a CVAE takes labels y"
    for kind in ("cvae", "hvae", "ae"):
        with pytest.raises(ValueError, match=r"model: expected a VAE \(kind 'vae'\), got "):
            export_decoder(_model(kind), codes, labels, path)
        with pytest.raises(ValueError, match=r"model: expected a VAE \(kind 'vae'\), got "):
            LatentExplorer(_model(kind), codes, labels)
    with pytest.raises(ValueError, match=re.escape(message)):
        export_decoder(_model("cvae"), codes, labels, path)
    with pytest.raises(ValueError, match=r"decode_grid: expected a VAE \(kind 'vae'\) or an"):
        plot_manifold(_model("cvae"), 3)
    assert not path.exists()
    assert export_decoder(_model("vae"), codes, labels, path) and path.exists()
