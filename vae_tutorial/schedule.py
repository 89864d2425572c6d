r"""Learning-rate schedules, per pass over the training set (epoch).

- `"constant"` (the default): $\eta_e = \eta$ at every epoch $e$.
- `"burda"` (Burda, Grosse and Salakhutdinov 2016, section 5): eight stages $i = 0, \dots, 7$;
  stage $i$ lasts $3^i$ passes at

  $$\eta_e = \eta \cdot 10^{-i/7}, \qquad \text{stage } i \text{ while }
  \sum_{j<i} 3^j = \tfrac{3^i - 1}{2} \le e < \tfrac{3^{i+1} - 1}{2},$$

  with $\eta = 10^{-3}$ in the paper: from $10^{-3}$ down to $10^{-4}$ in the last stage, over
  $\sum_{i=0}^{7} 3^i = (3^8 - 1)/2 = 3280$ passes. An epoch past the end keeps the last rate.

`scheduler(optimizer, name)` wraps the schedule in `torch.optim.lr_scheduler.LambdaLR`: call its
`step()` once after each epoch; its `state_dict()` holds the epoch reached, so a run that saves it
beside the optimizer's resumes on the same rate sequence.
"""

from __future__ import annotations

import torch

from vae_tutorial import checks

SCHEDULES = ("constant", "burda")
BURDA_STAGES = 8  # i = 0..7, stage i of 3^i passes


def burda_stage(epoch: int) -> int:
    """Stage i of a 0-based epoch: (3^i - 1) / 2 <= epoch < (3^(i+1) - 1) / 2; 7 past the end."""
    epoch = checks.int_at_least("burda_stage: epoch", epoch, 0, "epochs count from 0")
    stage = 0
    while stage < BURDA_STAGES - 1 and epoch >= (3 ** (stage + 1) - 1) // 2:
        stage += 1
    return stage


def lr_factor(name: str, epoch: int) -> float:
    """eta_e / eta at a 0-based epoch: 1 for "constant", 10^(-i/7) in stage i for "burda"."""
    checks.one_of("schedule", name, SCHEDULES)
    epoch = checks.int_at_least("lr_factor: epoch", epoch, 0, "epochs count from 0")
    if name == "constant":
        return 1.0
    return 10 ** (-burda_stage(epoch) / 7)  # $10^{-i/7}$


def learning_rate(name: str, base_lr: float, epoch: int) -> float:
    """The learning rate at a 0-based epoch: base_lr * lr_factor(name, epoch)."""
    base_lr = checks.real("base_lr", base_lr, low=0.0, open_low=True)
    return base_lr * lr_factor(name, epoch)  # $\eta_e = \eta \cdot 10^{-i/7}$


def total_passes(name: str) -> int | None:
    """The passes a schedule lasts: 3280 for "burda"; None for "constant" (no length of its own)."""
    checks.one_of("schedule", name, SCHEDULES)
    if name == "constant":
        return None
    return sum(3**i for i in range(BURDA_STAGES))  # $\sum_{i=0}^{7} 3^i = 3280$


class LRFactor:
    """lr_factor(name, epoch) as a callable object, so LambdaLR's state_dict saves the name."""

    def __init__(self, name: str) -> None:
        checks.one_of("schedule", name, SCHEDULES)
        self.name = name

    def __call__(self, epoch: int) -> float:
        return lr_factor(self.name, epoch)


def scheduler(optimizer: torch.optim.Optimizer, name: str) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR, lr = (the optimizer's lr) * lr_factor(name, epoch): call step() per epoch."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError(
            f"scheduler: expected a torch.optim.Optimizer, got {checks.describe(optimizer)}"
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, LRFactor(name))
