"""A dataset of image files that streams batches: decoded in worker threads, prefetched.

I/O. `FolderDataset` holds only the file list and labels; each epoch it decodes the files in
that epoch's order in a thread pool (PIL releases the GIL while decoding and resizing, so
threads use every core without copying pixels between processes), keeping a window of
`prefetch_batches` batches in flight. The order of epoch `e` is a pure function of
`(seed, e)`. With a cache folder, the first full pass also writes the decoded arrays to a
memory-mapped file (see `folder_cache`), and every later epoch or run reads from it.

Unreadable files are skipped (and batches filled from the next files) with one warning per pass
that names every newly skipped file, or raise with the file's path when `on_error="raise"`.
"""

from __future__ import annotations

import os
import warnings
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from convjax.data.arrays import ArraySource
from convjax.data.decode import BadImageError, DecodeSpec, decode_image
from convjax.data.folder_cache import CacheWriter, DecodedCache, cache_key, read_cache
from convjax.data.loader import epoch_order

# What a batch's labels look like, per mode (Keras's conventions).
LABEL_MODES = (
    "int",  # int32 (B,): class indices (sparse_categorical_crossentropy)
    "categorical",  # float32 (B, K): one-hot
    "binary",  # float32 (B, 1): 0 or 1, as image_dataset_from_directory
    "sparse",  # float32 (B,): class indices as floats, as flow_from_directory "sparse"/"binary"
    "input",  # the images themselves (autoencoders), as flow_from_directory "input"
    None,  # no labels: batches are images only
)


class SkippedImagesWarning(UserWarning):
    """Some files could not be decoded and were left out (the message lists them)."""


class CacheWriteWarning(UserWarning):
    """The decoded-image cache could not be written (e.g. a full disk); loading goes on
    without it."""


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
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        if labels is None and label_mode not in (None, "input"):
            raise ValueError(f"label_mode={label_mode!r} needs labels")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be positive or None, got {batch_size}")
        self.file_paths = list(file_paths)
        self.labels = None if labels is None else np.asarray(labels, np.int32)
        self.class_names = class_names
        self.spec, self.label_mode, self.batch_size = spec, label_mode, batch_size
        self.shuffle, self.seed, self.drop_remainder = shuffle, int(seed), drop_remainder
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        # One decode thread per core by default: decoding is CPU-bound once the files are in
        # the OS cache, and Python's default (cores + 4) made a 2-core machine ~15% slower
        # through GIL hand-offs between the extra threads. Raise it for slow network disks.
        self.on_error = on_error
        self.num_workers = num_workers or os.cpu_count() or 1
        self.prefetch_batches = prefetch_batches
        # Cache rows are in sorted-path order: row_of[i] is the row of file_paths[i] (the
        # rank of its path; argsort of an argsort turns "who is k-th" into "which k am I").
        by_path = np.argsort(np.asarray(self.file_paths, dtype=object), kind="stable")
        self.row_of = np.argsort(by_path)
        self.bad: dict[int, str] = {}  # file index -> reason, as discovered
        self._reported: set[int] = set()
        self._cache: DecodedCache | None = None
        self._writer: CacheWriter | None = None
        self._epochs_started = 0

    def __len__(self) -> int:
        """Batches per epoch, counting the files not (yet) known to be unreadable."""
        n = len(self.file_paths) - len(self.bad)
        if self.batch_size is None:
            return n
        return n // self.batch_size if self.drop_remainder else -(-n // self.batch_size)

    @property
    def num_classes(self) -> int:
        return len(self.class_names or ())

    def __iter__(self) -> Iterator:
        epoch, self._epochs_started = self._epochs_started, self._epochs_started + 1
        return self.epoch(epoch)

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """File indices of `epoch` in order, known-unreadable files left out (pure given them)."""
        order = epoch_order(len(self.file_paths), self.seed, epoch, self.shuffle)
        return order[~np.isin(order, list(self.bad))]

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator:
        """Batches of `epoch`, from batch `start_step` (exact once unreadable files are known:
        always with a complete cache, otherwise after one full pass)."""
        self._open_cache()
        order = self.epoch_indices(epoch)[start_step * (self.batch_size or 1):]
        examples = self._examples(order)
        if self.batch_size is None:
            return (self._package(image[None], np.asarray([i]), single=True)
                    for i, image in examples)
        return self._batches(examples)

    def to_array_source(self) -> ArraySource:
        """Every readable image in file order, in memory (for datasets that fit on device)."""
        if self.labels is None:
            raise ValueError("an ArraySource needs labels; this dataset has labels=None")
        self._open_cache()
        images = np.empty((len(self.file_paths), *self.spec.shape), np.uint8)
        kept = []
        for i, image in self._examples(np.arange(len(self.file_paths))):
            images[len(kept)] = image
            kept.append(i)
        names = self.class_names or tuple(str(c) for c in range(int(self.labels.max()) + 1))
        return ArraySource(images[: len(kept)], self.labels[np.asarray(kept, int)], names)

    # -- internals ------------------------------------------------------------------------

    def _open_cache(self) -> None:
        """Uses a published cache, or starts writing one (first call only)."""
        if self.cache_dir is None or self._cache is not None or self._writer is not None:
            return
        folder, n = self.cache_dir / "folders", len(self.file_paths)
        key = cache_key(sorted(self.file_paths), self.spec)
        self._cache = read_cache(folder, key, n, self.spec.shape)
        if self._cache is None:
            self._writer = CacheWriter(folder, key, n, self.spec.shape, self.spec)
            return
        file_of_row = np.argsort(self.row_of)
        for row, why in self._cache.bad.items():
            self.bad[int(file_of_row[row])] = f"{why} (recorded in the cache)"

    def _load(self, i: int) -> np.ndarray | None:
        """File `i` decoded (or read from the cache); None if unreadable and skipped."""
        if i in self.bad:  # its cache row holds zeros, not an image
            return None
        row = int(self.row_of[i])
        if self._cache is not None:
            return np.asarray(self._cache.images[row])
        writer = self._writer  # read once: another decode thread may drop it (_drop_cache)
        if writer is not None and writer.known[row]:
            return writer.get(row)
        try:
            image = decode_image(self.file_paths[i], self.spec)
        except BadImageError as err:
            if self.on_error == "raise":
                raise
            self.bad[i] = str(err)
            if writer is not None:
                writer.put_bad(row, str(err))
            return None
        if writer is not None:
            try:
                writer.put(row, image)
            except OSError as err:  # a full disk, say
                self._drop_cache(writer, err)
        return image

    def _drop_cache(self, writer: CacheWriter, err: OSError) -> None:
        """Stops caching for this dataset, with one warning, and goes on decoding: the cache
        is an optimisation, and losing it must not stop training. Dropping the writer deletes
        its partial file; no later epoch tries again (the disk is likely still full)."""
        if self._writer is writer:  # not yet dropped by another decode thread
            self._writer, self.cache_dir = None, None
            warnings.warn(f"not caching decoded images in {writer.folder}: {err}",
                          CacheWriteWarning, stacklevel=3)

    def _examples(self, order: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """(file index, image) for each readable file of `order`, decoded ahead in threads."""
        try:
            if self._cache is not None:  # a memmap read is a copy: no threads needed
                readable = ((int(i), self._load(i)) for i in order)
                yield from ((i, image) for i, image in readable if image is not None)
                return
            yield from self._decoded_in_threads(order)
            if self._writer is not None and self._writer.complete:
                self._publish_cache()
        finally:  # also when the consumer stops early: never a silent drop
            self._report_skipped()

    def _publish_cache(self) -> None:
        writer = self._writer
        try:
            self._cache, self._writer = writer.finish(), None
        except OSError as err:
            self._drop_cache(writer, err)

    def _decoded_in_threads(self, order: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        window = (self.batch_size or 1) * (self.prefetch_batches + 1)
        upcoming = iter(order.tolist())
        pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="convjax-decode")
        pending: deque[tuple[int, Future]] = deque()
        try:
            for i in upcoming:
                pending.append((i, pool.submit(self._load, i)))
                if len(pending) >= window:
                    break
            while pending:
                i, future = pending.popleft()
                following = next(upcoming, None)
                if following is not None:
                    pending.append((following, pool.submit(self._load, following)))
                image = future.result()  # re-raises a decode error with on_error="raise"
                if image is not None:
                    yield i, image
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _batches(self, examples: Iterator[tuple[int, np.ndarray]]) -> Iterator:
        chunk: list[tuple[int, np.ndarray]] = []
        for example in examples:
            chunk.append(example)
            if len(chunk) == self.batch_size:
                yield self._package(np.stack([im for _, im in chunk]), [i for i, _ in chunk])
                chunk = []
        if chunk and not self.drop_remainder:
            yield self._package(np.stack([im for _, im in chunk]), [i for i, _ in chunk])

    def _package(self, images: np.ndarray, indices, single: bool = False):
        """images (+ labels in `label_mode`'s format) as Keras yields them."""
        if self.label_mode is None:
            return images[0] if single else images
        if self.label_mode == "input":
            labels = images.copy()
        else:
            labels = encode_labels(self.labels[np.asarray(indices)], self.label_mode,
                                   self.num_classes)
        return (images[0], labels[0]) if single else (images, labels)

    def _report_skipped(self) -> None:
        new = sorted(set(self.bad) - self._reported)
        if not new:
            return
        self._reported.update(new)
        lines = "\n".join(f"  {self.bad[i]}" for i in new)
        warnings.warn(
            f"skipped {len(new)} unreadable image file(s) of {len(self.file_paths)} "
            f"(pass on_error='raise' to stop instead):\n{lines}",
            SkippedImagesWarning, stacklevel=2)
