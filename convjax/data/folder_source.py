"""Image files as a random-access source: `source[i]` decodes (or reads from the cache) file i.

I/O. `FolderSource` holds the file list (listed with Keras's rules by folder.py or
directory.py), the labels and a `DecodeSpec`; `get_batch` decodes a batch's files in a thread
pool (PIL releases the GIL while decoding and resizing, so threads use every core without
copying pixels between processes). With a cache folder, every decoded row also goes to the
decoded-array cache (`folder_cache.FolderCache`), and a complete cache is read instead.
`subset(indices)` (a train/validation split, a sample) keeps only some files and reads
through the same cache, so the splits of one folder fill, and later read, one cache.

Unreadable files, with `on_error="skip"` (the default): `len` is the number of files, fixed,
so the steps of an epoch never change. File i, if unreadable, is served as the next readable
file after it in file order (wrapping around), label included: a pure function of the files,
so every pass, process and resumed run sees the same batches. A warning names each bad file
once, when a pass ends (`report_skipped`). `to_array_source` leaves them out instead (it
decodes everything, so it knows). With `on_error="raise"` the first one raises
`BadImageError` naming it; a folder where no file is readable says exactly that.
"""

from __future__ import annotations

import copy
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

from convjax.data.arrays import ArraySource
from convjax.data.decode import BadImageError, DecodeSpec, decode_image
from convjax.data.folder_cache import FolderCache
from convjax.data.progress import Progress
from convjax.data.splits import sample

DECODE_CHUNK = 1024  # files decoded per thread-pool call by `to_array_source` (progress steps)


class SkippedImagesWarning(UserWarning):
    """Some files could not be decoded and were skipped (the message lists them)."""


class FolderSource:
    """Random access to image files: `source[i]` is (uint8 (H, W, C) image, int label)."""

    def __init__(self, file_paths: Sequence[str], labels: Sequence[int] | np.ndarray | None,
                 class_names: Sequence[str] | None, spec: DecodeSpec, *,
                 cache_dir: str | Path | None = None, on_error: str = "skip",
                 num_workers: int | None = None):
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        self.file_paths = list(file_paths)
        n = len(self.file_paths)
        # Unlabelled files (Keras's labels=None) get label -1, which no class has.
        self.labels = (np.full(n, -1, np.int32) if labels is None
                       else np.asarray(labels, np.int32).reshape(-1))
        if len(self.labels) != n:
            raise ValueError(f"got {len(self.labels)} labels for {n} files")
        self.class_names = tuple(class_names or ())
        self.spec, self.on_error = spec, on_error
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        # One decode thread per core by default: decoding is CPU-bound once the files are in
        # the OS cache, and Python's default (cores + 4) made a 2-core machine ~15% slower
        # through GIL hand-offs between the extra threads. Raise it for slow network disks.
        self.num_workers = num_workers or os.cpu_count() or 1
        # Cache rows are in sorted-path order, shared by every shuffle of the same files:
        # row_of[i] is the rank of file i's path (argsort of an argsort).
        self.row_of = np.argsort(np.argsort(np.asarray(self.file_paths, dtype=object),
                                            kind="stable"))
        self._shared = (None if self.cache_dir is None else
                        _SharedCache(self.cache_dir / "folders", self.file_paths, spec))
        self._start_bookkeeping()

    def _start_bookkeeping(self) -> None:
        self._lock = threading.Lock()  # guards _cache and _bad (threads of several batches)
        self._cache: FolderCache | None = None
        self._bad: dict[int, str] = {}  # file index -> why it is unreadable, as found
        self._reported: set[int] = set()

    def __len__(self) -> int:
        return len(self.file_paths)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.spec.shape

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} files")
        j, image, found = self._readable_from(i % len(self))
        self._record(found)
        return image, int(self.labels[j])

    def get_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(images (B, H, W, C) uint8, labels (B,) int32) of `indices`, decoded in threads."""
        results = self._map(self._readable_from, np.asarray(indices, np.int64).tolist())
        # Bad files are recorded here, in the calling thread, once the workers are done.
        self._record([bad for _, _, found in results for bad in found])
        images = np.empty((len(results), *self.spec.shape), np.uint8)
        for k, (_, image, _) in enumerate(results):
            images[k] = image
        return images, self.labels[np.asarray([j for j, _, _ in results], np.int64)]

    def subset(self, indices: np.ndarray) -> FolderSource:
        """The files at `indices`, in that order: a split or sample taken on the file list,
        before any decoding. It reads through the same cache (one per folder, whichever
        subsets are used) and, like any source, serves an unreadable file as the next
        readable one of its own files."""
        indices = np.asarray(indices, np.int64)
        view = copy.copy(self)
        view.file_paths = [self.file_paths[i] for i in indices.tolist()]
        view.labels, view.row_of = self.labels[indices], self.row_of[indices]
        view._start_bookkeeping()
        return view

    def sample(self, n: int, seed: int) -> FolderSource:
        """`n` files drawn without replacement (all when n <= 0 or n >= len), in their
        original order: the same rule, hence the same examples, as `ArraySource.sample`."""
        return sample(self, n, seed)

    def to_array_source(self, progress: bool = True, name: str = "images") -> ArraySource:
        """Every readable image in file order, in memory; unreadable files are left out.
        A decode that takes more than a few seconds shows its progress on stderr."""
        if (self.labels < 0).any():
            raise ValueError("an ArraySource needs labels; this dataset has labels=None")
        loaded = []
        with Progress(f"decoding {name}", len(self), "images", enabled=progress) as shown:
            for start in range(0, len(self), DECODE_CHUNK):
                loaded += self._map(self._try_load, range(start, min(start + DECODE_CHUNK,
                                                                     len(self))))
                shown.update(len(loaded) - shown.done)
        self._record([(i, str(r)) for i, r in enumerate(loaded) if isinstance(r, Exception)])
        kept = [i for i, r in enumerate(loaded) if not isinstance(r, Exception)]
        if not kept:
            raise self._all_unreadable(str(loaded[0]))
        self.report_skipped("left out")
        images = np.empty((len(kept), *self.spec.shape), np.uint8)
        for k, i in enumerate(kept):
            images[k] = loaded[i]
        names = self.class_names or tuple(str(c) for c in range(int(self.labels.max()) + 1))
        return ArraySource(images, self.labels[kept], names)

    def report_skipped(self, how: str = "each replaced by the next readable file") -> None:
        """One warning naming every unreadable file found since the last one."""
        with self._lock:
            new = sorted(set(self._bad) - self._reported)
            self._reported.update(new)
            lines = "\n".join(f"  {self._bad[i]}" for i in new)
        if new:
            warnings.warn(
                f"skipped {len(new)} unreadable image file(s) of {len(self)} ({how}; pass "
                f"on_error='raise' to stop instead):\n{lines}", SkippedImagesWarning, stacklevel=3)

    # -- internals ------------------------------------------------------------------------

    def _map(self, fn: Callable, indices) -> list:
        """`fn` over `indices`, in threads unless the rows come from a complete cache (a
        memory-map read is a copy: threads would only add hand-offs)."""
        indices = list(indices)
        cache = self._opened_cache()
        if self.num_workers == 1 or len(indices) < 2 or (cache and cache.published):
            return [fn(i) for i in indices]
        # A pool per call: a few threads cost ~0.1 ms to start, nothing outlives the call,
        # and no thread is left behind however the caller stops.
        with ThreadPoolExecutor(min(self.num_workers, len(indices)),
                                thread_name_prefix="convjax-decode") as pool:
            return list(pool.map(fn, indices))

    def _load(self, i: int) -> np.ndarray:
        """File i decoded (or read from the cache); `BadImageError` if it is unreadable."""
        with self._lock:
            known_bad = self._bad.get(i)
        if known_bad is not None:  # not decoded again
            raise BadImageError(known_bad)
        decode = partial(decode_image, self.file_paths[i], self.spec)
        cache = self._opened_cache()
        return decode() if cache is None else cache.load(int(self.row_of[i]), decode)

    def _try_load(self, i: int) -> np.ndarray | BadImageError:
        try:
            return self._load(i)
        except BadImageError as err:
            if self.on_error == "raise":
                raise
            return err

    def _readable_from(self, i: int) -> tuple[int, np.ndarray, list[tuple[int, str]]]:
        """(j, image j, unreadable files met) for the first readable file j = i, i+1, ...
        (wrapping around). Runs in worker threads: it returns what it found, never records."""
        found: list[tuple[int, str]] = []
        for step in range(len(self)):
            j = (i + step) % len(self)
            try:
                return j, self._load(j), found
            except BadImageError as err:
                if self.on_error == "raise":
                    raise
                found.append((j, str(err)))
        raise self._all_unreadable(found[0][1])

    def _record(self, found: list[tuple[int, str]]) -> None:
        with self._lock:
            for i, why in found:
                self._bad.setdefault(i, why)

    def _all_unreadable(self, example: str) -> ValueError:
        folder = os.path.commonpath([os.path.dirname(p) for p in self.file_paths])
        return ValueError(f"all {len(self)} image files under {folder} are unreadable "
                          f"(e.g. {example})")

    def _opened_cache(self) -> FolderCache | None:
        """The cache, opened on first use (hashing every file's identity takes a while)."""
        if self._shared is None:
            return None
        with self._lock:
            if self._cache is None:
                self._cache = self._shared.opened()
                recorded = self._cache.recorded_bad
                if recorded:  # rows of the folder -> this source's files (a subset's too)
                    files_of_row: dict[int, list[int]] = {}
                    for i, row in enumerate(self.row_of.tolist()):
                        files_of_row.setdefault(row, []).append(i)
                    for row, why in recorded.items():
                        for i in files_of_row.get(row, []):
                            self._bad[i] = f"{why} (recorded in the cache)"
            return self._cache


class _SharedCache:
    """A folder's `FolderCache`, opened once by whichever of the folder's sources (the whole
    folder or any subset) reads first; its rows are the whole folder's, in sorted-path order."""

    def __init__(self, folder: Path, file_paths: Sequence[str], spec: DecodeSpec):
        self.folder, self.sorted_paths, self.spec = folder, sorted(file_paths), spec
        self._lock = threading.Lock()
        self._cache: FolderCache | None = None

    def opened(self) -> FolderCache:
        with self._lock:
            if self._cache is None:
                self._cache = FolderCache(self.folder, self.sorted_paths, self.spec)
            return self._cache
