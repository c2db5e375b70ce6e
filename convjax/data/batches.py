"""The batch-source protocol: the one way data reaches `fit` and `evaluate`.

Protocol only (no I/O here). Two implementations:

- `DeviceArrays` (data/device_batches.py): for data that fits. The arrays are placed on the
  devices once and each batch is gathered by index on device.
- `StreamingBatches` (data/streaming_batches.py): for data that does not. Host batches are
  decoded from a random-access source and put on the devices through a bounded prefetch queue.

Either way:
- The order of epoch `e` is a pure function of `(seed, e)` (`epoch_order`), and a source can
  start an epoch at any step, so the position `(epoch, step_in_epoch)` is all a backup needs
  for an exact resume.
- Batches are global `jax.Array`s sharded over the mesh's batch axis
  (`sharding.batch_sharded`). With several processes each reads only its share of every batch
  and the global batch is assembled with `jax.make_array_from_process_local_data`.
- Training drops the last partial batch (one compiled shape); evaluation pads the last batch
  and marks the padding with `mask == 0`, so every example counts exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import jax
import numpy as np

Batch = dict[str, jax.Array]  # {"image": uint8 (B,H,W,C), "label": int32 (B,), "mask": f32 (B,)}


class BatchSource(Protocol):
    batch_size: int  # the global batch (all devices, all processes)
    num_examples: int  # examples in the dataset (train batches cover steps_per_epoch * batch_size)
    steps_per_epoch: int  # full training batches per epoch
    image_shape: tuple[int, ...]  # one example's shape, e.g. (32, 32, 3)
    num_classes: int  # from the data (class folders, tfds metadata, or the labels)

    def train_batches(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """Batches `start_step .. steps_per_epoch - 1` of `epoch`, shuffled by (seed, epoch),
        each {"image", "label"} placed on the mesh."""
        ...

    def eval_batches(self) -> Iterator[Batch]:
        """Every example once, in order, {"image", "label", "mask"}; last batch padded."""
        ...

    def close(self) -> None:
        """Stops worker threads/processes (a no-op for device-resident data)."""
        ...


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The permutation of examples for `epoch`: the same for the same (seed, epoch), always.

    A resumed run therefore continues on exactly the batch it would have seen next.
    """
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, epoch]).permutation(n)
