"""Batches for the loop: epoch order as a pure function of (seed, epoch), on-device gathering.

Pure apart from `DeviceDataset`, which places the arrays on the devices once. When a dataset
fits in accelerator memory (CIFAR-10 is ~150 MB as uint8), keeping it there and gathering
each batch by index on device removes host-to-device copies from the hot loop; the indices
per step are a few hundred int32s.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from convjax.data.arrays import ArraySource


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The permutation of examples for `epoch`: the same for the same (seed, epoch), always.

    A resumed run therefore continues on exactly the batch it would have seen next.
    """
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, epoch]).permutation(n)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Training drops the last partial batch (one compiled shape, unbiased batch norm)."""
    if batch_size > n:
        raise ValueError(
            f"batch_size={batch_size} is larger than the dataset ({n} examples); "
            "lower train.batch_size"
        )
    return n // batch_size


def train_indices(
    n: int, batch_size: int, seed: int, epoch: int, start_step: int = 0
) -> Iterator[np.ndarray]:
    """Index arrays of each training batch of `epoch`, from `start_step` (for exact resume)."""
    order = epoch_order(n, seed, epoch)
    for step in range(start_step, steps_per_epoch(n, batch_size)):
        yield order[step * batch_size : (step + 1) * batch_size].astype(np.int32)


def eval_indices(n: int, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(indices, mask) covering every example once; the last batch is padded with index 0
    and mask 0, so evaluation compiles one shape and still counts each example exactly once."""
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(start + batch_size, n), dtype=np.int32)
        mask = np.ones(batch_size, np.float32)
        mask[len(idx) :] = 0.0
        yield np.pad(idx, (0, batch_size - len(idx))), mask


@dataclass(frozen=True)
class DeviceDataset:
    """An `ArraySource` resident on the devices (replicated), gathered by index."""

    images: jax.Array
    labels: jax.Array
    source: ArraySource

    @classmethod
    def put(cls, source: ArraySource, sharding: jax.sharding.Sharding | None = None):
        images = jax.device_put(source.images, sharding)
        labels = jax.device_put(source.labels, sharding)
        return cls(images, labels, source)

    def __len__(self) -> int:
        return len(self.source)


def gather(images: jax.Array, labels: jax.Array, indices: jax.Array) -> dict[str, jax.Array]:
    """The batch at `indices` (called inside the loop's jitted step)."""
    return {"image": jnp.take(images, indices, axis=0), "label": jnp.take(labels, indices)}
