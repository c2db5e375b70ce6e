"""On-disk cache of decoded, resized images: one memory-mapped `.npy` per (files, decode spec).

I/O. The key hashes every file's absolute path, size and modification time together with the
`DecodeSpec` (size, colour mode, interpolation, crop/pad), so a changed folder or setting is
never served stale. Rows are in sorted-path order, so every shuffle or seed of the same files
shares one cache. A cache is written once, row by row while the first pass decodes, and only
published (renamed into place) when every row is known; readers memory-map it, so later
epochs and runs cost a page-cache copy instead of a JPEG decode.

    <cache_dir>/folders/<key>.npy    uint8 (N, H, W, C), rows of unreadable files left zero
    <cache_dir>/folders/<key>.json   {"n", "shape", "spec", "bad": {row: "path: reason"}}
"""

from __future__ import annotations

import hashlib
import json
import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convjax.cache import cache_root
from convjax.data.decode import DecodeSpec

CACHE_VERSION = 2  # bump when decoding changes, so old caches are not reused


def default_cache_dir() -> Path:
    return cache_root()


def resolve_cache_dir(cache_dir: str | Path | bool | None) -> Path | None:
    """False: no cache; None or True: `$CONVJAX_CACHE` or `~/.cache/convjax`; else that folder."""
    if cache_dir is False:
        return None
    if cache_dir is None or cache_dir is True or cache_dir == "":
        return default_cache_dir()
    return Path(cache_dir)


def cache_key(sorted_paths: Sequence[str], spec: DecodeSpec) -> str:
    """Hash of the decode settings and each file's identity (path, size, mtime)."""
    digest = hashlib.sha256(f"v{CACHE_VERSION}|{spec!r}".encode())
    for path in sorted_paths:
        stat = os.stat(path)
        digest.update(f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


@dataclass(frozen=True)
class DecodedCache:
    """A complete cache: every row decoded, or known to be unreadable."""

    images: np.ndarray  # uint8 (N, H, W, C), memory-mapped read-only, sorted-path order
    bad: dict[int, str]  # row -> why that file could not be decoded


def _paths(folder: Path, key: str) -> tuple[Path, Path]:
    return folder / f"{key}.npy", folder / f"{key}.json"


def read_cache(folder: Path, key: str, n: int, shape: tuple[int, ...]) -> DecodedCache | None:
    """The published cache for `key`, or None if there is none (or it does not fit)."""
    images_path, meta_path = _paths(folder, key)
    if not (images_path.exists() and meta_path.exists()):
        return None
    images = np.load(images_path, mmap_mode="r")
    meta = json.loads(meta_path.read_text())
    if images.shape != (n, *shape) or meta.get("n") != n:
        return None  # a hash collision or a foreign file: decode again rather than trust it
    return DecodedCache(images, {int(row): why for row, why in meta["bad"].items()})


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class CacheWriter:
    """Fills a new cache as rows are decoded (in any order, across epochs); `finish` publishes
    it once every row is known. An unfinished writer's temporary file is deleted when the
    writer is garbage-collected, so an abandoned first pass leaves nothing behind.

    Rows go in with `os.pwrite` rather than through a writable memory map: worker threads
    then copy into the page cache without page faults, which on 2 cores made the first
    (cache-writing) pass ~20% slower than a pass without a cache (benchmarks/
    bench_folder_loader.py). pwrite releases the GIL, and distinct rows never overlap, so
    the decode threads write concurrently without a lock.
    """

    def __init__(self, folder: Path, key: str, n: int, shape: tuple[int, ...], spec: DecodeSpec):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.key, self.spec = folder, key, spec
        self.shape = (n, *shape)
        self._tmp = folder / f"{key}.{os.getpid()}.{id(self)}.npy.tmp"
        # A valid .npy of the final size (header + zeros); only its data offset is kept.
        header = np.lib.format.open_memmap(self._tmp, "w+", np.uint8, self.shape)
        self._offset, self._row_bytes = header.offset, int(np.prod(shape))
        del header
        self._fd = os.open(self._tmp, os.O_RDWR)
        self.known = np.zeros(n, bool)  # rows decoded or found unreadable
        self.bad: dict[int, str] = {}
        self._close = weakref.finalize(self, _discard, self._fd, self._tmp)

    def put(self, row: int, image: np.ndarray) -> None:
        data = np.ascontiguousarray(image, np.uint8)
        if data.size != self._row_bytes:
            raise ValueError(f"cache row {row}: expected {self.shape[1:]}, got {image.shape}")
        os.pwrite(self._fd, data, self._offset + row * self._row_bytes)
        self.known[row] = True

    def get(self, row: int) -> np.ndarray:
        """A row written earlier by `put`."""
        data = os.pread(self._fd, self._row_bytes, self._offset + row * self._row_bytes)
        return np.frombuffer(data, np.uint8).reshape(self.shape[1:])

    def put_bad(self, row: int, reason: str) -> None:
        self.bad[row] = reason
        self.known[row] = True

    @property
    def complete(self) -> bool:
        return bool(self.known.all())

    def finish(self) -> DecodedCache:
        """Publishes the cache: data on disk first (fsync, so a crash never leaves a published
        file of zeros), then the metadata, then the images (whose presence marks it done)."""
        images_path, meta_path = _paths(self.folder, self.key)
        os.fsync(self._fd)
        meta = {"n": len(self.known), "shape": list(self.shape[1:]),
                "spec": repr(self.spec), "bad": {str(r): why for r, why in self.bad.items()}}
        _write_atomic(meta_path, json.dumps(meta, indent=1))
        os.replace(self._tmp, images_path)
        self._close()  # the file is published: only the descriptor is left to close
        return DecodedCache(np.load(images_path, mmap_mode="r"), dict(self.bad))


def _discard(fd: int, tmp: Path) -> None:
    """Closes a writer's file and deletes it if it was never published."""
    os.close(fd)
    tmp.unlink(missing_ok=True)
