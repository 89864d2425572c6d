"""`iwae.dataset_bound`, the one entry point for a score: one seeded stream of z_i through its
batches in order, the likelihood it is told to score with, and bounds that hold no graph."""

import pytest
import torch

from vae_tutorial.config import ModelConfig
from vae_tutorial.iwae import dataset_bound, importance_weighted_bound, log_importance_weights
from vae_tutorial.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(latent_dim=3, hidden_dim=16, **kwargs))


def _binary(n: int = 7) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, 784), 0.3), generator=torch.Generator().manual_seed(1))


def _by_hand(model, images, k, seed, batch_size, **kwargs) -> torch.Tensor:
    """importance_weighted_bound over consecutive batches, drawing from one generator in turn."""
    generator = torch.Generator().manual_seed(seed)
    return torch.cat(
        [
            importance_weighted_bound(
                model, images[i : i + batch_size], k, generator=generator, **kwargs
            )
            for i in range(0, len(images), batch_size)
        ]
    )


def test_one_seed_is_one_stream_through_the_batches_and_another_seed_differs():
    model, images = _model(), _binary()
    bounds = dataset_bound(model, images, 4, seed=3, batch_size=3)  # batches of 3, 3 and 1
    torch.testing.assert_close(bounds, _by_hand(model, images, 4, 3, 3), rtol=0, atol=0)
    assert torch.equal(bounds, dataset_bound(model, images, 4, seed=3, batch_size=3))
    other = dataset_bound(model, images, 4, seed=4, batch_size=3)
    assert (other - bounds).abs().min() > 0  # every image's z_i differ


def test_the_named_likelihood_scores_every_batch():
    model = _model(likelihood="continuous_bernoulli")
    grey = torch.rand(5, 784, generator=torch.Generator().manual_seed(2))
    named = dataset_bound(model, grey, 3, seed=0, batch_size=2, likelihood="continuous_bce")
    want = _by_hand(model, grey, 3, 0, 2, likelihood="continuous_bce")
    torch.testing.assert_close(named, want, rtol=0, atol=0)
    own = dataset_bound(model, grey, 3, seed=0, batch_size=2)
    torch.testing.assert_close(own, _by_hand(model, grey, 3, 0, 2), rtol=0, atol=0)
    # log C(lambda) > 0 for each of the 784 pixels: the two differ by far more than rounding
    assert (own - named).min() > 784 * 0.69


def test_bounds_returned_to_the_user_hold_no_graph():
    model, images = _model(), _binary(4)
    assert all(p.requires_grad for p in model.parameters())
    assert not importance_weighted_bound(model, images, 3).requires_grad
    assert not dataset_bound(model, images, 3).requires_grad


def test_seeded_log_weights_repeat_and_another_seed_differs():
    model, x = _model(), _binary(3)

    def weights(seed):
        return log_importance_weights(model, x, 4, generator=torch.Generator().manual_seed(seed))

    assert weights(0).requires_grad  # the training objective differentiates them
    assert torch.equal(weights(0), weights(0))
    assert (weights(0) - weights(1)).abs().min() > 0
