"""Feature extraction: run a frozen backbone once over a dataset, cache the result on disk.

I/O (the cache). The course's cheaper transfer-learning path: instead of running the frozen
backbone every epoch, compute its pooled features once and train a small MLP on them. The
cache file's name is a hash of everything the features depend on — the backbone's weights,
its configuration, the pixel normalisation and the images themselves — so a stale cache (other
weights, other resize, other photos) is never reused.

The normalisation is a `convjax.normalize.Normalization` spec, never a function: a function
cannot be fingerprinted by what it computes (two closures with different constants, or two
lambdas, look the same from outside), so one would silently serve the other's features.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from enum import Enum
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from convjax.data.arrays import ArraySource
from convjax.normalize import Normalization


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


def _check_normalization(normalization: Any) -> Normalization:
    if not isinstance(normalization, Normalization):
        raise TypeError(
            "feature extraction needs a convjax.normalize.Normalization spec (e.g. RESCALE, "
            "INCEPTION, LITE or Normalization(scale, offset)), whose value the feature cache "
            f"can fingerprint; got {type(normalization).__name__} {normalization!r}"
        )
    return normalization


def config_text(value: Any) -> str:
    """A canonical text of a configuration value: a module's or dataclass's every field,
    recursively; plain values by repr; functions and classes by qualified name.

    Not `repr(module)`: Flax prints a callable field by its `__name__` alone (a lambda as
    `<lambda>`, any function named `relu` as `relu`) and leaves out `repr=False` fields, so two
    backbones computing different things could print alike. Raises TypeError for what has no
    value identity (lambdas, closures, partials, arbitrary objects).
    """
    if isinstance(value, (bool, int, float, complex, str, bytes, type(None), np.dtype, Enum)):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__}({', '.join(map(config_text, value))})"
    if isinstance(value, dict):
        items = sorted((config_text(k), config_text(v)) for k, v in value.items())
        return "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # A module's parent and name say where it is bound, not what it computes.
        skip = ("parent", "name") if isinstance(value, nn.Module) else ()
        fields = [f.name for f in dataclasses.fields(value) if f.name not in skip]
        inner = ", ".join(f"{name}={config_text(getattr(value, name))}" for name in fields)
        return f"{_qualified_name(type(value))}({inner})"
    qualname = getattr(value, "__qualname__", None)
    if callable(value) and isinstance(qualname, str) and "<" not in qualname:
        return _qualified_name(value)  # a module-level function or class: its name is its value
    raise TypeError(
        f"cannot fingerprint {type(value).__name__} {value!r}: a lambda, closure, partial or "
        "other object without a value representation could stand for different computations"
    )


def _qualified_name(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{obj.__qualname__}"


def cache_key(
    source: ArraySource, backbone: nn.Module, variables: dict, normalization: Normalization
) -> str:
    """The hash naming the cached features of `source` under this backbone and normalisation."""
    spec = config_text(_check_normalization(normalization))
    return fingerprint(variables, config_text(backbone), spec, source.images, source.labels)


# Jitted once at module level: the backbone and the spec are static (hashable, compared by
# value, so an equal module built again reuses the compiled program); the variables are an
# argument, never closed over, so millions of weights are not baked in as constants.
@functools.partial(jax.jit, static_argnames=("backbone", "normalization"))
def _frozen_outputs(
    variables: dict, images_bhwc: jax.Array, *, backbone: nn.Module, normalization: Normalization
) -> jax.Array:
    return backbone.apply(variables, normalization(images_bhwc), train=False)


def extract_features(
    backbone: nn.Module, variables: dict, images_uint8: np.ndarray,
    normalization: Normalization, batch_size: int = 64,
) -> np.ndarray:
    """The backbone's outputs (inference mode) for every image, as float32 numpy."""
    _check_normalization(normalization)
    outputs = []
    for start in range(0, len(images_uint8), batch_size):
        chunk = images_uint8[start : start + batch_size]
        pad = batch_size - len(chunk)  # one compiled shape: pad the last batch, then drop
        padded = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
        batch = _frozen_outputs(variables, padded, backbone=backbone, normalization=normalization)
        outputs.append(np.asarray(batch)[: len(chunk)])
    return np.concatenate(outputs).astype(np.float32)


def cached_features(
    source: ArraySource, backbone: nn.Module, variables: dict, normalization: Normalization,
    cache_dir: str | Path, batch_size: int = 64,
) -> tuple[ArraySource, bool]:
    """(features as an ArraySource, whether they came from the cache)."""
    key = cache_key(source, backbone, variables, normalization)
    path = Path(cache_dir) / f"features-{key}.npy"
    if path.exists():
        return ArraySource(np.load(path), source.labels, source.class_names), True
    feats = extract_features(backbone, variables, source.images, normalization, batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, feats)
    os.replace(tmp, path)  # a killed run never leaves a truncated cache file
    return ArraySource(feats, source.labels, source.class_names), False
