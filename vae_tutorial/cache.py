"""The cache of trained models: chapters share a finished run instead of training it again.

A run is stored as its checkpoint, `<cache_dir>/<config_key>.pt`, so an interrupted run resumes
where it stopped. The key hashes both configs and `CHECKPOINT_VERSION`: a package that writes
another checkpoint format never reads an old cache file, it trains the model again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import torch

from vae_tutorial import checkpoint
from vae_tutorial.download import default_root
from vae_tutorial.models import ModelConfig
from vae_tutorial.train import FitResult, TrainConfig, fit


def config_key(model_config: ModelConfig, train_config: TrainConfig) -> str:
    """A short hash of both configs and the checkpoint format version: the cache file's name."""
    if not isinstance(model_config, ModelConfig) or not isinstance(train_config, TrainConfig):
        raise ValueError(
            "config_key: expected a ModelConfig and a TrainConfig, "
            f"got {type(model_config).__name__} and {type(train_config).__name__}"
        )
    text = json.dumps(
        {
            "model": asdict(model_config),
            "train": asdict(train_config),
            "checkpoint_version": checkpoint.CHECKPOINT_VERSION,
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
