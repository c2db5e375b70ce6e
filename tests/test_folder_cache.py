"""The decoded-image cache (convjax.data.folder_cache) under failure: a disk full before the
first row, and temporaries left by killed first passes."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from convjax.data import CacheWriteWarning, folder_cache, image_dataset_from_directory
from helpers import write_image_folder


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def batches(root: Path, **kwargs) -> list[np.ndarray]:
    ds = image_dataset_from_directory(root, image_size=(4, 4), batch_size=4, seed=0,
                                      verbose=False, **kwargs)
    return [images for images, _ in ds.epoch(0)]


def temporaries(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "folders").glob("*.tmp"))


def test_a_disk_full_when_the_cache_opens_drops_it_with_a_warning(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "d", per_class=3)
    cache = tmp_path / "cache"
    want = batches(root)

    def full_disk(filename, *args, **kwargs):
        Path(filename).touch()  # as a real ENOSPC does, the file exists when it fails
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(folder_cache.np.lib.format, "open_memmap", full_disk)
    with pytest.warns(CacheWriteWarning, match="No space left"):
        got = batches(root, cache_dir=cache)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)  # decoding went on: nothing lost
    assert temporaries(cache) == []


def test_temporaries_of_dead_writers_are_removed(tmp_path):
    root = write_image_folder(tmp_path / "d", per_class=2)
    folders = tmp_path / "cache" / "folders"
    folders.mkdir(parents=True)
    host, dead = folder_cache._host(), dead_pid()
    stale = [folders / f"0123abcd.{dead}.140000.npy.tmp",  # killed, before hosts were named
             folders / f"0123abcd.{host}.{dead}.140002.npy.tmp"]  # killed
    kept = [folders / f"0123abcd.{os.getpid()}.140001.npy.tmp",  # a writer still running
            folders / f"0123abcd.other-host.{dead}.140003.npy.tmp"]  # its pids mean nothing here
    for path in stale + kept:
        path.write_bytes(b"\0" * 64)
    batches(root, cache_dir=tmp_path / "cache")
    assert [p.exists() for p in stale + kept] == [False, False, True, True]
