"""The training objective's schedule: beta's warm-up at every epoch, not only at its endpoints."""

from vae_tutorial.objective import kl_warmup


def test_warmup_raises_beta_linearly_and_holds_it_at_1():
    # E_w = 4: beta_e = 1/4, 2/4, 3/4, then 1 for every later epoch (not only the endpoints)
    assert [kl_warmup(e, 4) for e in range(10)] == [0.25, 0.5, 0.75] + [1.0] * 7
    assert [kl_warmup(e, 1) for e in range(3)] == [1.0, 1.0, 1.0]
    assert kl_warmup(500, 0) == 1.0
