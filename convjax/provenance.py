"""Where a result came from: code version, library versions, devices.

I/O (runs `git`, reads package metadata). Written into every results.json, so a table of
results can say which code and which libraries produced each number.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any

import jax

PACKAGE_DIR = Path(__file__).resolve().parent
LIBRARIES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy",
             "tensorflow-datasets", "grain")


def code_version() -> dict[str, Any]:
    """The git commit and whether the tree had uncommitted changes; outside a git checkout
    (an installed wheel), a hash of the package's source files instead."""
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", "-C", str(PACKAGE_DIR), *args], capture_output=True,
                                  text=True, check=True, timeout=10).stdout.strip()

        return {"git_commit": git("rev-parse", "HEAD"),
                "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        digest = hashlib.sha256()
        for path in sorted(PACKAGE_DIR.rglob("*.py")):
            digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode())
            digest.update(path.read_bytes())
        return {"source_sha256": digest.hexdigest()[:16]}


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def devices() -> dict[str, Any]:
    local = jax.local_devices()
    return {"backend": jax.default_backend(), "device_kind": local[0].device_kind,
            "device_count": jax.device_count(), "process_count": jax.process_count()}


def provenance() -> dict[str, Any]:
    return {**code_version(), "python": platform.python_version(),
            "libraries": library_versions(), **devices()}
