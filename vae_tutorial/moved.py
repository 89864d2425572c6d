"""Names that moved in this release: importable from their old module for one more, with a warning.

An old module calls `keep_old_names(__name__)`. Then `from old import name` and `old.name` give
the object from its new home and raise a `DeprecationWarning` that names the new import; the
module's own names, and its own code's use of a moved name it imports, do not warn (a module's code
reads its globals without attribute access). A renamed method is a `renamed(new name)` attribute.
"""

from __future__ import annotations

import importlib
import sys
import types
import warnings

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
MOVED = {  # old module -> {new module: the names that moved there from it}
    "train": {
        "config": ("TrainConfig",),
        "history": ("History",),
        "test_set": ("TEST_BATCH", "TEST_SEED", "load_test_set"),
    },
    "models": {
        "config": ("ModelConfig",),
        "labels": ("CLASSES", "check_labels", "label_args"),
        "networks": ("IMAGE_SHAPE", "PIXELS"),
    },
    "elbo": {
        "config": ("LIKELIHOODS",),
        "likelihoods": LIKELIHOOD_NAMES,
        "objective": ("free_bits_kl", "kl_warmup"),
    },
    "evaluate": {"iwae": ("ROWS_PER_CHUNK", "importance_weighted_bound", "log_importance_weights")},
    "explorer": {"explorer_widget": ("LatentExplorer",)},
    "checkpoint": {"resume": ("capture_rng", "check_resumable", "restore_rng")},
    "run": {"config": ("TEST_DATA", "TrainConfig"), "history": ("SCORING", "History")},
}


HOMES = {  # old module -> {name: its new module}
    f"vae_tutorial.{old}": {
        name: f"vae_tutorial.{new}" for new, names in to.items() for name in names
    }
    for old, to in MOVED.items()
}


class _OldModule(types.ModuleType):
    """A module that warns when a name that moved out of it is read from it."""

    def __getattribute__(self, name: str) -> object:
        old = types.ModuleType.__getattribute__(self, "__name__")
        new = HOMES[old].get(name)
        if new is None:
            return super().__getattribute__(name)
        warnings.warn(
            f"{old}.{name} moved to {new}: write `from {new} import {name}` "
            f"(importing it from {old} stops working in the next release)",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(new), name)

    def __dir__(self) -> list[str]:
        """The module's own names: help() and inspect do not read (and warn for) the moved."""
        return sorted(set(super().__dir__()) - set(HOMES[self.__name__]))


def keep_old_names(module: str) -> None:
    """Keep the names that moved out of `module` (MOVED) importable from it, with a warning."""
    sys.modules[module].__class__ = _OldModule


class renamed:  # noqa: N801  (used like a function: `decode_probs = renamed("decode_mean")`)
    """A method's old name: gives the method of the new name, with a warning naming it."""

    def __init__(self, new: str) -> None:
        self.new = new

    def __set_name__(self, owner: type, name: str) -> None:
        self.old = name

    def __get__(self, instance: object, owner: type | None = None) -> object:
        cls = (owner or type(instance)).__name__
        warnings.warn(
            f"{cls}.{self.old} is now {cls}.{self.new}: call {self.new} "
            f"({self.old} stops working in the next release)",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(owner if instance is None else instance, self.new)
