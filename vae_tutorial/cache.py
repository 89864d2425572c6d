"""The cache of trained models: chapters share a finished run instead of training it again.

A run is stored as its checkpoint, `<cache_dir>/<config_key>.pt`, so an interrupted run resumes
where it stopped. The key hashes the fields of both configs that differ from their defaults,
`CHECKPOINT_VERSION` and `data.DYNAMIC_DRAW`: a package that writes another checkpoint format, or
draws its binary images another way, never reads an old cache file, it trains the model again;
an option added later, off by default, keeps every key.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from vae_tutorial import checkpoint, data
from vae_tutorial.config import ModelConfig, TrainConfig, changed, resolve
from vae_tutorial.download import default_root
from vae_tutorial.train import FitResult, fit


def config_key(model_config: ModelConfig, train_config: TrainConfig) -> str:
    """A short hash of both configs and the checkpoint format version: the cache file's name."""
    try:
        model_config, train_config = resolve(model_config, train_config)  # the likelihood's home
    except ValueError as error:
        raise ValueError(f"config_key: {error}") from None
    text = json.dumps(
        {
            "model": changed(model_config),
            "train": changed(train_config),
            "checkpoint_version": checkpoint.CHECKPOINT_VERSION,
            "dynamic_draw": data.DYNAMIC_DRAW,
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def trained_model(
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    device: str | torch.device | None = None,
    cache_dir: str | Path | None = None,
    progress: bool | None = None,
) -> FitResult:
    """The model these configs train: loaded from the cache if there, else trained and cached.

    The cache file is the run's checkpoint, `<cache_dir>/<config_key>.pt`, default cache_dir
    `default_root() / "models"`; an interrupted run resumes where it stopped. The cache folder is
    checked for writing before any training.
    """
    cache_dir = default_root() / "models" if cache_dir is None else Path(cache_dir)
    path = checkpoint.ensure_writable(
        cache_dir / f"{config_key(model_config, train_config)}.pt", "cache_dir"
    )
    try:
        return fit(
            model_config,
            train_config,
            device=device,
            checkpoint_path=path,
            resume=True,
            progress=progress,
        )
    except checkpoint.CheckpointError as error:
        raise checkpoint.CheckpointError(
            f"trained_model: the cached run {str(path)!r} cannot be used ({error}); "
            "delete that file to train the model again"
        ) from None
