"""Image folders (`<root>/<class>/**/*.jpg`): listing with Keras's rules, loading, archives.

I/O. Listing follows `keras.utils.image_dataset_from_directory` exactly: classes are the sorted
sub-directory names (hidden ones skipped; a symlinked class directory counts), each class
directory is walked recursively with `os.walk`, the walk sorted by directory path (so `cat/a/`,
`cat/a-b/`, `cat/a/x/`: not depth-first, but as Keras does), files sorted within a directory,
and only .jpg/.jpeg/.png/.bmp/.gif files (any case) kept. `open_image_folder` lists a folder as a
random-access `FolderSource` (decoded on demand, through its thread pool and cache);
`load_image_folder` decodes a whole folder into an `ArraySource`; `resolve_folder` extracts a
`.tar.gz` archive once. The slow first times (extracting, decoding) show their progress.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from convjax.data.arrays import ArraySource
from convjax.data.decode import DecodeSpec
from convjax.data.folder_cache import default_cache_dir, resolve_cache_dir
from convjax.data.folder_source import FolderSource
from convjax.data.progress import Progress

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def class_directories(root: str | Path, class_names: list[str] | None = None) -> list[str]:
    """The class sub-directories of `root`: sorted, hidden skipped, or `class_names` (a subset,
    in the order given)."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder not found: {root}")
    found = [d for d in sorted(os.listdir(root))
             if os.path.isdir(os.path.join(root, d)) and not d.startswith(".")]
    if class_names is None:
        return found
    class_names = list(class_names)
    if len(set(class_names)) != len(class_names):
        raise ValueError(f"class_names has duplicates: {class_names}")
    missing = [c for c in class_names if c not in found]
    if missing:
        raise ValueError(f"class_names {missing} are not sub-directories of {root}; "
                         f"found {found} (class_names must be a subset of them)")
    return class_names


def walk_image_files(directory: str, follow_links: bool = False) -> list[str]:
    """Image files under `directory`, recursively, in Keras's order."""
    walk = sorted(os.walk(directory, followlinks=follow_links), key=lambda entry: entry[0])
    return [os.path.join(dirpath, name)
            for dirpath, _, names in walk
            for name in sorted(names) if name.lower().endswith(IMAGE_EXTENSIONS)]


def list_image_files(root: str | Path, class_names: list[str] | None = None,
                     follow_links: bool = False) -> tuple[list[str], list[int], tuple[str, ...]]:
    """(files, labels, class_names), labels inferred from the class sub-directories."""
    classes = class_directories(root, class_names)
    if not classes:
        raise ValueError(f"no class sub-directories in {root} (expected <root>/<class>/*.jpg)")
    files, labels = [], []
    for label, name in enumerate(classes):
        found = walk_image_files(os.path.join(root, name), follow_links)
        files += found
        labels += [label] * len(found)
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    return files, labels, tuple(classes)


def load_image_folder(
    root: str | Path,
    image_size: tuple[int, int] = (32, 32),
    color_mode: str = "rgb",
    cache_dir: str | Path | None | bool = None,
    on_error: str = "skip",
    interpolation: str = "bilinear",
    progress: bool = True,
) -> ArraySource:
    """Every image under `root/<class>/`, decoded (or read from the cache) into memory.

    `cache_dir=None` uses `$CONVJAX_CACHE` or `~/.cache/convjax`; `False` disables caching.
    Unreadable files are skipped with a warning naming them (`on_error="raise"` stops instead).
    A decode that takes more than a few seconds shows its progress on stderr (unless
    `progress=False`). For data larger than memory, use `open_image_folder` and a batch source.
    """
    source = open_image_folder(root, image_size, color_mode, cache_dir, on_error, interpolation)
    return source.to_array_source(progress, name=f"{Path(root).name}/")


def open_image_folder(
    root: str | Path,
    image_size: tuple[int, int] = (32, 32),
    color_mode: str = "rgb",
    cache_dir: str | Path | None | bool = None,
    on_error: str = "skip",
    interpolation: str = "bilinear",
) -> FolderSource:
    """The images under `root/<class>/` as a random-access `FolderSource`: listed now,
    decoded (or read from the cache) only when asked for. Arguments as `load_image_folder`."""
    files, labels, classes = list_image_files(root)
    spec = DecodeSpec(tuple(image_size), color_mode, interpolation)
    return FolderSource(files, labels, classes, spec, cache_dir=resolve_cache_dir(cache_dir),
                        on_error=on_error)


# What a truncated or damaged .tar(.gz) raises part-way: gzip's EOFError ("Compressed file
# ended before the end-of-stream marker"), BadGzipFile, zlib.error, or tarfile's own errors.
CORRUPT_ARCHIVE_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error, tarfile.TarError)


def extract_archive(path: Path, dest: Path, progress: bool = True) -> None:
    """Extracts `path` beside `dest`, then renames: a killed extraction never looks complete,
    and a failed one leaves nothing behind. One that takes more than a few seconds shows its
    progress on stderr (unless `progress=False`): files so far and the share of the archive
    read (counting its files first would mean decompressing it twice)."""
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    size = max(1, path.stat().st_size)
    try:
        with (open(path, "rb") as raw, tarfile.open(fileobj=raw) as tar,
              Progress(f"extracting {path.name}", enabled=progress, check_every=100,
                       fraction=lambda: raw.tell() / size) as shown):
            tar.extractall(tmp, members=_counted(tar, shown), filter="data")
        os.replace(tmp, dest)
    except BaseException as err:  # a full disk or Ctrl-C too: never leave a partial tree
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError) and os.path.isdir(dest):
            return  # another process (a multi-process run) extracted it first
        if isinstance(err, CORRUPT_ARCHIVE_ERRORS):
            raise ValueError(f"{path}: the archive is truncated or corrupt "
                             f"({type(err).__name__}: {err}); copy it again") from err
        raise


def _counted(tar: tarfile.TarFile, shown: Progress) -> Iterator[tarfile.TarInfo]:
    """The archive's members, as `extractall` reads them, counting its files."""
    for member in tar:
        shown.update(member.isfile())
        yield member


def resolve_folder(path: str | Path, cache_dir: str | Path | None = None,
                   progress: bool = True) -> Path:
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
    cache_root = Path(cache_dir) if cache_dir else default_cache_dir()
    dest = cache_root / "archives" / key.hexdigest()[:16]
    if not dest.exists():
        extract_archive(path, dest, progress)
    entries = [p for p in dest.iterdir() if not p.name.startswith(".")]
    # Archives usually hold one top-level folder (e.g. cifar10/): return it.
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else dest
