"""On-disk cache of decoded, resized images: one memory-mapped `.npy` per (files, decode spec).

I/O. The key hashes every file's absolute path, size and modification time together with the
`DecodeSpec` (size, colour mode, interpolation, crop/pad), so a changed folder or setting is
never served stale. Rows are in sorted-path order, so every shuffle or seed of the same files
shares one cache. A cache is written once, row by row while the first pass decodes, and only
published (renamed into place) when every row is known; readers memory-map it, so later
epochs and runs cost a page-cache copy instead of a JPEG decode. `FolderCache` is the wrapper
a `FolderSource` reads through (both batch paths use it); a failure to write (a full disk)
drops the cache with one `CacheWriteWarning` and decoding goes on.

    <cache_dir>/folders/<key>.npy    uint8 (N, H, W, C), rows of unreadable files left zero
    <cache_dir>/folders/<key>.json   {"n", "shape", "spec", "bad": {row: "path: reason"}}
    <cache_dir>/folders/<key>.<host>.<pid>.<id>.npy.tmp   a cache being written
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convjax.cache import cache_root
from convjax.data.decode import BadImageError, DecodeSpec

CACHE_VERSION = 2  # bump when decoding changes, so old caches are not reused


class CacheWriteWarning(UserWarning):
    """The decoded-image cache could not be written (e.g. a full disk); loading goes on
    without it."""


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
    writer is garbage-collected (or `discard`ed), so an abandoned first pass leaves nothing.
    Not thread-safe on its own: `FolderCache` serialises the calls.

    Rows go in with `os.pwrite` rather than through a writable memory map: the page-cache
    copy then costs no page faults; a memory map made the first (cache-writing) pass ~20%
    slower than a pass without a cache on 2 cores (benchmarks/bench_folder_loader.py). A
    row's pwrite takes microseconds against milliseconds for its decode, so serialising the
    writes behind `FolderCache`'s lock costs nothing measurable.
    """

    def __init__(self, folder: Path, key: str, n: int, shape: tuple[int, ...], spec: DecodeSpec):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.key, self.spec = folder, key, spec
        self.shape = (n, *shape)
        self._tmp = folder / f"{key}.{_host()}.{os.getpid()}.{id(self)}.npy.tmp"
        try:  # a valid .npy of the final size (header + zeros); only its data offset is kept
            header = np.lib.format.open_memmap(self._tmp, "w+", np.uint8, self.shape)
            self._offset, self._row_bytes = header.offset, int(np.prod(shape))
            del header
            self._fd = os.open(self._tmp, os.O_RDWR)
        except BaseException:  # a disk full before the first row: leave no temporary behind
            self._tmp.unlink(missing_ok=True)
            raise
        self.known = np.zeros(n, bool)  # rows decoded or found unreadable
        self._unknown = n  # rows not yet known (so `complete` is O(1))
        self.bad: dict[int, str] = {}
        self._close = weakref.finalize(self, _discard, self._fd, self._tmp)

    def put(self, row: int, image: np.ndarray) -> None:
        data = np.ascontiguousarray(image, np.uint8)
        if data.size != self._row_bytes:
            raise ValueError(f"cache row {row}: expected {self.shape[1:]}, got {image.shape}")
        os.pwrite(self._fd, data, self._offset + row * self._row_bytes)
        self._mark_known(row)

    def _mark_known(self, row: int) -> None:
        if not self.known[row]:
            self.known[row] = True
            self._unknown -= 1

    def get(self, row: int) -> np.ndarray:
        """A row written earlier by `put`."""
        data = os.pread(self._fd, self._row_bytes, self._offset + row * self._row_bytes)
        return np.frombuffer(data, np.uint8).reshape(self.shape[1:])

    def put_bad(self, row: int, reason: str) -> None:
        self.bad[row] = reason
        self._mark_known(row)

    @property
    def complete(self) -> bool:
        return self._unknown == 0

    def discard(self) -> None:
        """Closes and deletes the unfinished file now (rather than when garbage-collected)."""
        self._close()

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


def _host() -> str:
    """This machine's name, as a temporary file name records it (no dots: they separate)."""
    return socket.gethostname().replace(".", "-") or "localhost"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def remove_stale_temporaries(folder: Path) -> None:
    """Deletes caches being written by processes of this host that have exited: a killed first
    pass would otherwise leave a full-size file forever. Another host's files (a cache folder
    on a shared disk) are left alone: its pids mean nothing here."""
    for path in folder.glob("*.npy.tmp"):
        parts = path.name.split(".")
        if len(parts) == 6:  # <key>.<host>.<pid>.<id>.npy.tmp
            host, pid = parts[1], parts[2]
        elif len(parts) == 5:  # <key>.<pid>.<id>.npy.tmp, written before hosts were recorded
            host, pid = _host(), parts[1]
        else:
            continue
        if host == _host() and pid.isdigit() and not _process_alive(int(pid)):
            path.unlink(missing_ok=True)


class FolderCache:
    """The cache wrapper a `FolderSource` reads through: decoded rows by row number.

    A published cache is read from its memory map. Otherwise every row decoded is written as
    it comes (whatever the order, whichever batch path decoded it) and the cache is published
    when the last row is known. Any OSError while writing drops the cache with one
    `CacheWriteWarning`; decoding goes on, and nothing retries (the disk is likely still full).
    Thread-safe: the writer is used under one lock, held for page-cache copies, never for a
    decode; the published memory map needs none.
    """

    def __init__(self, folder: Path, sorted_paths: Sequence[str], spec: DecodeSpec):
        self.folder, n = folder, len(sorted_paths)
        key = cache_key(sorted_paths, spec)
        self._lock = threading.Lock()
        self._writer: CacheWriter | None = None
        self.published = read_cache(folder, key, n, spec.shape)
        if self.published is None:
            try:  # stale files first: the space they free may be what this one needs
                remove_stale_temporaries(folder)
                self._writer = CacheWriter(folder, key, n, spec.shape, spec)
            except OSError as err:
                self._warn(err)

    @property
    def recorded_bad(self) -> dict[int, str]:
        """row -> why, for the unreadable files a published cache recorded."""
        return {} if self.published is None else dict(self.published.bad)

    def load(self, row: int, decode: Callable[[], np.ndarray]) -> np.ndarray:
        """Row `row` from the cache if known, else `decode()` (and written). Raises
        `BadImageError` for an unreadable file, whether found now or recorded earlier."""
        known = self._read(row)
        if known is not None:
            return known
        try:
            image = decode()
        except BadImageError as err:
            self._write(row, None, str(err))
            raise
        self._write(row, image, None)
        return image

    def _read(self, row: int) -> np.ndarray | None:
        published = self.published
        if published is not None:
            if row in published.bad:
                raise BadImageError(f"{published.bad[row]} (recorded in the cache)")
            return np.asarray(published.images[row])
        with self._lock:
            writer = self._writer
            if writer is None or not writer.known[row]:
                return None
            if row in writer.bad:
                raise BadImageError(writer.bad[row])
            return writer.get(row)

    def _write(self, row: int, image: np.ndarray | None, bad: str | None) -> None:
        with self._lock:
            writer = self._writer
            if writer is None or writer.known[row]:
                return
            try:
                writer.put(row, image) if bad is None else writer.put_bad(row, bad)
                if writer.complete:
                    self.published, self._writer = writer.finish(), None
            except OSError as err:  # a full disk, say
                self._writer = None
                writer.discard()
                self._warn(err)

    def _warn(self, err: OSError) -> None:
        warnings.warn(f"not caching decoded images in {self.folder}: {err}", CacheWriteWarning,
                      stacklevel=4)
