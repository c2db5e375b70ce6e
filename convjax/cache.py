"""Where convjax keeps what it computes once: decoded image folders, converted weights, features.

I/O helpers only. One root, `$CONVJAX_CACHE` or `~/.cache/convjax`, with a sub-folder per kind
(`folders/`, `archives/`, `weights/`, `kernels/`), and one file-hash function for cache keys
and checks.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("CONVJAX_CACHE") or Path.home() / ".cache" / "convjax")


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 1 MiB chunks (weight files are ~100 MB)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
