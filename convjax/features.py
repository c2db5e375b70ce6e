"""Feature extraction: run a frozen backbone once over a dataset, cache the result on disk.

I/O (the cache). The course's cheaper transfer-learning path: instead of running the frozen
backbone every epoch, compute its pooled features once and train a small MLP on them. The
cache file's name is a hash of everything the features depend on — the backbone's weights,
its configuration, the preprocessing and the images themselves — so a stale cache (other
weights, other resize, other photos) is never reused.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from convjax.data.arrays import ArraySource


def fingerprint(*parts: Any) -> str:
    """sha256 over arrays (bytes, shape, dtype), pytrees of arrays, and plain values (repr)."""
    digest = hashlib.sha256()
    for part in parts:
        for leaf in jax.tree_util.tree_leaves(part):
            if hasattr(leaf, "shape"):
                array = np.ascontiguousarray(np.asarray(leaf))
                digest.update(f"{array.shape}{array.dtype}".encode())
                digest.update(array.tobytes())
            else:
                digest.update(repr(leaf).encode())
    return digest.hexdigest()[:24]


def extract_features(
    backbone: nn.Module, variables: dict, images_uint8: np.ndarray,
    preprocess: Callable[[jax.Array], jax.Array], batch_size: int = 64,
) -> np.ndarray:
    """The backbone's outputs (inference mode) for every image, as float32 numpy."""

    # Variables are an argument, not a closure: closed-over arrays would be baked into the
    # compiled program as constants (millions of them for a backbone).
    @jax.jit
    def features(variables, batch):
        return backbone.apply(variables, preprocess(batch.astype(np.float32)), train=False)

    outputs = []
    for start in range(0, len(images_uint8), batch_size):
        chunk = images_uint8[start : start + batch_size]
        pad = batch_size - len(chunk)  # one compiled shape: pad the last batch, then drop
        padded = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
        outputs.append(np.asarray(features(variables, padded))[: len(chunk)])
    return np.concatenate(outputs).astype(np.float32)


def cached_features(
    source: ArraySource, backbone: nn.Module, variables: dict,
    preprocess: Callable[[jax.Array], jax.Array], cache_dir: str | Path, batch_size: int = 64,
) -> tuple[ArraySource, bool]:
    """(features as an ArraySource, whether they came from the cache)."""
    key = fingerprint(variables, repr(backbone), preprocess.__module__, preprocess.__name__,
                      source.images, source.labels)
    path = Path(cache_dir) / f"features-{key}.npy"
    if path.exists():
        return ArraySource(np.load(path), source.labels, source.class_names), True
    feats = extract_features(backbone, variables, source.images, preprocess, batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, feats)
    os.replace(tmp, path)  # a killed run never leaves a truncated cache file
    return ArraySource(feats, source.labels, source.class_names), False
