"""Keras-style image datasets (`image_dataset_from_directory`'s result): host batches.

I/O. `FolderDataset` is a thin front over a `FolderSource` (folder_source.py): iterating it
runs an epoch, whose order is `epoch_order(seed, e)`; the batches' files are decoded in the
source's thread pool, a bounded number of batches ahead (`prefetch_batches`), and, with a
cache folder, written to (then read from) the decoded-array cache. Batches are uint8 numpy
images and labels in Keras's `label_mode` formats. Unreadable files follow the source's
policy: replaced by the next readable file (so `len` never changes), with one warning per
pass naming each, or `on_error="raise"`. Training goes through `make_batch_source` instead,
which puts batches on the devices.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from convjax.data.arrays import ArraySource
from convjax.data.batches import epoch_order
from convjax.data.decode import DecodeSpec
from convjax.data.folder_cache import CacheWriteWarning
from convjax.data.folder_source import FolderSource, SkippedImagesWarning
from convjax.data.prefetch import prefetch

__all__ = ["CacheWriteWarning", "FolderDataset", "SkippedImagesWarning", "encode_labels"]

# What a batch's labels look like, per mode (Keras's conventions).
LABEL_MODES = (
    "int",  # int32 (B,): class indices (sparse_categorical_crossentropy)
    "categorical",  # float32 (B, K): one-hot
    "binary",  # float32 (B, 1): 0 or 1, as image_dataset_from_directory
    "sparse",  # float32 (B,): class indices as floats, as flow_from_directory "sparse"/"binary"
    "input",  # the images themselves (autoencoders), as flow_from_directory "input"
    None,  # no labels: batches are images only
)


def encode_labels(labels: np.ndarray, label_mode: str, num_classes: int) -> np.ndarray:
    """int class indices -> the label array `label_mode` asks for (pure)."""
    if label_mode == "int":
        return labels.astype(np.int32)
    if label_mode == "categorical":
        return np.eye(num_classes, dtype=np.float32)[labels]
    if label_mode == "binary":
        return labels.astype(np.float32)[..., None]
    if label_mode == "sparse":
        return labels.astype(np.float32)
    raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")


class FolderDataset:
    """Batches `(images uint8 (B, H, W, C), labels)` (or images only) from image files.

    Iterating (`for images, labels in ds`) runs the next epoch: 0, 1, 2, ... (a new order
    each time, as a Keras dataset reshuffles); `ds.epoch(e)` runs epoch `e` explicitly.
    """

    def __init__(self, file_paths: list[str], labels: np.ndarray | None,
                 class_names: tuple[str, ...] | None, spec: DecodeSpec, *,
                 label_mode: str | None = "int", batch_size: int | None = 32,
                 shuffle: bool = True, seed: int = 0, drop_remainder: bool = False,
                 cache_dir: str | Path | None = None, on_error: str = "skip",
                 num_workers: int | None = None, prefetch_batches: int = 2):
        if label_mode not in LABEL_MODES:
            raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
        if labels is None and label_mode not in (None, "input"):
            raise ValueError(f"label_mode={label_mode!r} needs labels")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be positive or None, got {batch_size}")
        self.source = FolderSource(file_paths, labels, class_names, spec, cache_dir=cache_dir,
                                   on_error=on_error, num_workers=num_workers)
        self.labels = None if labels is None else self.source.labels
        self.label_mode, self.batch_size = label_mode, batch_size
        self.shuffle, self.seed, self.drop_remainder = shuffle, int(seed), drop_remainder
        self.prefetch_batches = prefetch_batches
        self._epochs_started = 0

    @property
    def file_paths(self) -> list[str]:
        return self.source.file_paths

    @property
    def class_names(self) -> tuple[str, ...] | None:
        return self.source.class_names or None

    @property
    def spec(self) -> DecodeSpec:
        return self.source.spec

    @property
    def num_classes(self) -> int:
        return len(self.source.class_names)

    def __len__(self) -> int:
        """Batches per epoch (examples when `batch_size` is None)."""
        n = len(self.source)
        if self.batch_size is None:
            return n
        return n // self.batch_size if self.drop_remainder else -(-n // self.batch_size)

    def __iter__(self) -> Iterator:
        epoch, self._epochs_started = self._epochs_started, self._epochs_started + 1
        return self.epoch(epoch)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator:
        """Batches of `epoch`, from batch `start_step` (exact resume)."""
        size = self.batch_size or 1
        order = epoch_order(len(self.source), self.seed, epoch, self.shuffle)
        chunks = (order[start : start + size] for start in range(0, len(self) * size, size))
        batches = (self.source.get_batch(chunk) for chunk in list(chunks)[start_step:])
        return self._packaged(prefetch(batches, self.prefetch_batches, "convjax-folder"))

    def to_array_source(self) -> ArraySource:
        """Every readable image in file order, in memory (unreadable files left out)."""
        return self.source.to_array_source()

    def _packaged(self, batches: Iterator) -> Iterator:
        try:
            for images, labels in batches:
                yield self._package(images, labels)
        finally:  # also when the consumer stops early: never a silent skip
            batches.close()
            self.source.report_skipped()

    def _package(self, images: np.ndarray, labels: np.ndarray):
        """images (+ labels in `label_mode`'s format) as Keras yields them."""
        if self.label_mode == "input":
            labels = images.copy()
        elif self.label_mode is not None:
            labels = encode_labels(labels, self.label_mode, self.num_classes)
        if self.batch_size is None:
            images, labels = images[0], labels[0]
        return images if self.label_mode is None else (images, labels)
