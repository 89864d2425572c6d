"""Moved: `TrainConfig` to `config`, `History` to `history`; importable here for one release."""

from vae_tutorial.config import TEST_DATA, TrainConfig  # noqa: F401
from vae_tutorial.history import SCORING, History  # noqa: F401
