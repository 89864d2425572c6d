"""What the ranks of a data-parallel run share and what they must not: their z ~ q(z|x) noise
streams (`rank_seed`), rank 0's role, and the world size they record. No processes are started."""

import itertools

import torch

from vae_tutorial.distributed import World, rank_seed

SEEDS, EPOCHS, RANKS = range(3), range(40), range(8)


def test_every_rank_epoch_and_seed_has_its_own_noise_seed():
    seeds = [rank_seed(s, e, r) for s, e, r in itertools.product(SEEDS, EPOCHS, RANKS)]
    assert len(set(seeds)) == len(seeds)  # no two (seed, epoch, rank) share a stream
    assert rank_seed(5, 7, 3) == rank_seed(5, 7, 3)  # and a run repeats its own


def test_two_ranks_draw_different_noise_and_each_repeats_it():
    def draws(rank, epoch=4):
        torch.manual_seed(rank_seed(0, epoch, rank))  # what fit does at the start of an epoch
        return torch.randn(64, 8)  # the eps of z = mu + sigma * eps

    first, second = draws(0), draws(1)
    assert torch.equal(first, draws(0)) and torch.equal(second, draws(1))
    # independent N(0, 1) streams: correlation about 0 (sd 1/sqrt(512) = 0.044), not 1
    correlation = torch.corrcoef(torch.stack([first.flatten(), second.flatten()]))[0, 1]
    assert abs(float(correlation)) < 0.25
    assert not torch.equal(draws(0, epoch=4), draws(0, epoch=5))  # nor does an epoch repeat


def test_rank_0_alone_is_the_main_rank_and_every_rank_records_the_world_size():
    ranks = [World(rank=r, size=4) for r in range(4)]
    assert [w.is_main for w in ranks] == [True, False, False, False]
    assert [w.record()["world_size"] for w in ranks] == [4, 4, 4, 4]
