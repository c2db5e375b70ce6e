"""Choosing and loading the train/validation/test splits an experiment asks for.

I/O (through the sources). One function, `load_splits`, turns a `DataConfig` into three
`ArraySource`s; `CONVJAX_DATA` overrides a tfds source with an image folder, so the same
command runs online (tfds) and offline (shared JPEG folders).
"""

from __future__ import annotations

import os
from pathlib import Path

from convjax.data.arrays import ArraySource, split_validation
from convjax.data.config import DataConfig
from convjax.data.folder import load_image_folder, resolve_folder
from convjax.data.tfds_source import load_tfds


def _folder_splits(cfg: DataConfig, folder: str) -> tuple[ArraySource, ArraySource]:
    cache = cfg.cache_dir or None
    root = resolve_folder(folder, cache)
    train_dir = Path(root) / "train"
    # Cats-vs-Dogs ships train/ and validation/; CIFAR-10 train/ and test/.
    test_dir = next((Path(root) / d for d in ("test", "validation") if (Path(root) / d).is_dir()),
                    None)
    if not train_dir.is_dir() or test_dir is None:
        raise FileNotFoundError(
            f"data folder {root} must contain train/<class>/ and test/<class>/ "
            "(or validation/<class>/) sub-folders"
        )
    train = load_image_folder(train_dir, cfg.image_size, cfg.color_mode, cache)
    test = load_image_folder(test_dir, cfg.image_size, cfg.color_mode, cache)
    return train, test


def load_splits(
    cfg: DataConfig, seed: int
) -> tuple[ArraySource, ArraySource | None, ArraySource]:
    """(train, validation or None, test) as the config describes."""
    folder = cfg.folder or os.environ.get("CONVJAX_DATA", "")
    if cfg.source == "folder" or (cfg.source == "tfds" and folder):
        if not folder:
            raise ValueError("data.source='folder' needs data.folder (or CONVJAX_DATA)")
        train, test = _folder_splits(cfg, folder)
    elif cfg.source == "tfds":
        train = load_tfds(cfg.name, "train", cfg.tfds_dir)
        test = load_tfds(cfg.name, "test", cfg.tfds_dir)
    else:
        raise ValueError(f"unknown data.source {cfg.source!r}; choose 'tfds' or 'folder'")
    train, val = split_validation(train.sample(cfg.train_limit, seed), cfg.validation_split, seed)
    return train, val, test.sample(cfg.test_limit, seed)
