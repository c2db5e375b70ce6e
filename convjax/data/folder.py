"""Image folders (`<root>/<class>/*.jpg`), decoded once and cached as arrays on disk.

I/O. Keras `image_dataset_from_directory` semantics for the parts the core needs: classes are
the sorted sub-directory names (hidden ones skipped), files are walked recursively in sorted
order, images are converted to RGB or grayscale and resized with PIL. Decoding runs in a
thread pool (PIL releases the GIL while decoding), and the decoded uint8 array is cached in
`<cache_dir>/folders/<key>.npz`, keyed by the file list (paths, sizes, mtimes), the size and
the colour mode, so a changed folder is never served stale.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from convjax.data.arrays import ArraySource

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def default_cache_dir() -> Path:
    return Path(os.environ.get("CONVJAX_CACHE", Path.home() / ".cache" / "convjax"))


def list_image_files(root: Path) -> tuple[list[Path], list[int], tuple[str, ...]]:
    """(files, labels, class_names) with Keras's ordering rules."""
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"no class sub-directories in {root} (expected <root>/<class>/*.jpg)")
    files, labels = [], []
    for label, name in enumerate(classes):
        for dirpath, dirnames, filenames in os.walk(root / name):
            dirnames.sort()
            for filename in sorted(filenames):
                if filename.lower().endswith(IMAGE_EXTENSIONS):
                    files.append(Path(dirpath) / filename)
                    labels.append(label)
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    return files, labels, tuple(classes)


def decode_image(path: Path, size: tuple[int, int], color_mode: str) -> np.ndarray:
    """One file to a uint8 (H, W, C) array; the error names the file."""
    mode = {"rgb": "RGB", "grayscale": "L"}.get(color_mode)
    if mode is None:
        raise ValueError(f"color_mode must be 'rgb' or 'grayscale', got {color_mode!r}")
    try:
        with Image.open(path) as img:
            img = img.convert(mode)
            if img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as err:
        raise ValueError(f"cannot decode image {path}: {err}") from err
    return array[..., None] if array.ndim == 2 else array


def _cache_key(files: list[Path], size: tuple[int, int], color_mode: str) -> str:
    digest = hashlib.sha256(f"{size}|{color_mode}".encode())
    for f in files:
        stat = f.stat()
        digest.update(f"{f}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def _decode_all(files: list[Path], size: tuple[int, int], color_mode: str) -> np.ndarray:
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        arrays = list(pool.map(lambda f: decode_image(f, size, color_mode), files, chunksize=64))
    return np.stack(arrays)


def load_image_folder(
    root: str | Path,
    image_size: tuple[int, int] = (32, 32),
    color_mode: str = "rgb",
    cache_dir: str | Path | None = None,
) -> ArraySource:
    """Decodes every image under `root` (or reads the cache). `cache_dir=None` uses
    `$CONVJAX_CACHE` or `~/.cache/convjax`; pass `False` to disable caching."""
    files, labels, classes = list_image_files(Path(root))
    image_size = tuple(image_size)
    cache_file = None
    if cache_dir is not False:
        cache_root = Path(cache_dir) if cache_dir else default_cache_dir()
        cache_file = cache_root / "folders" / f"{_cache_key(files, image_size, color_mode)}.npz"
        if cache_file.exists():
            with np.load(cache_file) as cached:
                return ArraySource(cached["images"], cached["labels"], classes)
    images = _decode_all(files, image_size, color_mode)
    source = ArraySource(images, np.asarray(labels, np.int32), classes)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        # Write-then-rename: an interrupted write never leaves a truncated cache behind.
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, images=source.images, labels=source.labels)
        os.replace(tmp, cache_file)
    return source


def resolve_folder(path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """A folder as is; a `.tar.gz` archive is extracted once into the cache and that folder
    returned (so the shared data archives can be used without unpacking by hand)."""
    path = Path(path)
    if path.is_dir():
        return path
    if not path.exists():
        raise FileNotFoundError(f"data folder or archive not found: {path}")
    if not path.name.endswith((".tar.gz", ".tgz", ".tar")):
        raise ValueError(f"expected a folder or a .tar.gz archive, got {path}")
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    dest = (Path(cache_dir) if cache_dir else default_cache_dir()) / "archives" / key.hexdigest()[:16]
    if not dest.exists():
        # Extract beside, then rename: a killed extraction never looks complete.
        tmp = dest.with_name(f"{dest.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        with tarfile.open(path) as tar:
            tar.extractall(tmp, filter="data")
        os.replace(tmp, dest)
    entries = [p for p in dest.iterdir() if not p.name.startswith(".")]
    # Archives usually hold one top-level folder (e.g. cifar10/): return it.
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else dest
