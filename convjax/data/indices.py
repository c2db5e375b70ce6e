"""Which examples each batch holds: training batches of an epoch, evaluation batches.

Pure (numpy only). Both batch sources (device-resident and streaming) take their indices
from here, so for the same `(seed, epoch)` they yield the same examples in the same order.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from convjax.data.batches import epoch_order


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Full training batches per epoch: the last partial batch is dropped (one compiled
    shape, unbiased batch norm)."""
    if batch_size > n:
        raise ValueError(f"train.batch_size={batch_size} is larger than the training set "
                         f"({n} examples); lower train.batch_size")
    return n // batch_size


def train_indices(n: int, batch_size: int, seed: int, epoch: int, start_step: int = 0,
                  shuffle: bool = True) -> Iterator[np.ndarray]:
    """int32 indices of each training batch of `epoch`, from `start_step` (exact resume)."""
    order = epoch_order(n, seed, epoch, shuffle)
    for step in range(start_step, steps_per_epoch(n, batch_size)):
        yield order[step * batch_size : (step + 1) * batch_size].astype(np.int32)


def eval_indices(n: int, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(indices, mask) covering every example once, in order; the last batch is padded with
    index 0 and mask 0, so evaluation compiles one shape and counts each example once."""
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(start + batch_size, n), dtype=np.int32)
        mask = np.ones(batch_size, np.float32)
        mask[len(idx) :] = 0.0
        yield np.pad(idx, (0, batch_size - len(idx))), mask
