"""Moved: `TrainConfig` to `config`, `History` to `history`; importable here for one release."""

from vae_tutorial import moved

moved.keep_old_names(__name__)  # TrainConfig, History, TEST_DATA, SCORING: see `moved`
