"""Choosing the train/validation/test splits an experiment asks for.

I/O (lists folders, extracts archives, reads tfds). One function, `load_splits`, turns a
`DataConfig` into three random-access sources. An image folder is only listed: its splits are
`FolderSource`s, split and sampled on the file list and decoded later by the batch source
(once, into device memory, when they fit; batch by batch when they do not), so a folder larger
than memory still trains. tfds splits are read whole into `ArraySource`s. `CONVJAX_DATA`
overrides a tfds source with an image folder, so the same command runs online (tfds) and
offline (shared JPEG folders).
"""

from __future__ import annotations

import os
from pathlib import Path

from convjax.data.config import DataConfig
from convjax.data.folder import open_image_folder, resolve_folder
from convjax.data.source import Source
from convjax.data.splits import sample, split_validation
from convjax.data.tfds_source import load_tfds


def _folder_splits(cfg: DataConfig, folder: str, progress: bool) -> tuple[Source, Source]:
    cache = cfg.cache_dir or None
    root = resolve_folder(folder, cache, progress)
    train_dir = Path(root) / "train"
    # Cats-vs-Dogs ships train/ and validation/; CIFAR-10 train/ and test/.
    test_dir = next((Path(root) / d for d in ("test", "validation") if (Path(root) / d).is_dir()),
                    None)
    if not train_dir.is_dir() or test_dir is None:
        raise FileNotFoundError(
            f"data folder {root} must contain train/<class>/ and test/<class>/ "
            "(or validation/<class>/) sub-folders"
        )
    train = open_image_folder(train_dir, cfg.image_size, cfg.color_mode, cache)
    test = open_image_folder(test_dir, cfg.image_size, cfg.color_mode, cache)
    return train, test


def load_splits(cfg: DataConfig, seed: int, progress: bool = True
                ) -> tuple[Source, Source | None, Source]:
    """(train, validation or None, test) as the config describes: `FolderSource`s for an
    image folder, `ArraySource`s for tfds. `progress`: show a slow archive extraction."""
    folder = cfg.folder or os.environ.get("CONVJAX_DATA", "")
    if cfg.source == "folder" or (cfg.source == "tfds" and folder):
        if not folder:
            raise ValueError("data.source='folder' needs data.folder (or CONVJAX_DATA)")
        train, test = _folder_splits(cfg, folder, progress)
    elif cfg.source == "tfds":
        train = load_tfds(cfg.name, "train", cfg.tfds_dir)
        test = load_tfds(cfg.name, "test", cfg.tfds_dir)
    else:
        raise ValueError(f"unknown data.source {cfg.source!r}; choose 'tfds' or 'folder'")
    train, val = split_validation(sample(train, cfg.train_limit, seed), cfg.validation_split,
                                  seed)
    return train, val, sample(test, cfg.test_limit, seed)
