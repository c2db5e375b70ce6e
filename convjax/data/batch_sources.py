"""Choosing a batch source: device-resident when the data fits a memory budget, else streaming.

I/O (may read every example into memory, then places it). `make_batch_source` is what the
runner calls; it never copies an array larger than the budget to every device: such data is
sharded over the devices when a share fits, and streamed otherwise. Data that fits is read
once (a folder decoded through its cache, with progress on stderr when slow); streamed data
is never read whole.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh

from convjax.data.arrays import ArraySource
from convjax.data.batches import BatchSource
from convjax.data.device_batches import DeviceArrays
from convjax.data.progress import Progress
from convjax.data.source import Source, report_skipped
from convjax.data.streaming_batches import StreamingBatches

UNKNOWN_DEVICE_BUDGET = 2 << 30  # bytes, where the backend reports no memory size (CPU)


def make_batch_source(source: Source, *, batch_size: int, seed: int, mesh: Mesh,
                      shuffle: bool = True, device_budget_bytes: int | None = None,
                      prefetch: int = 2, progress: bool = True,
                      name: str = "examples") -> BatchSource:
    """`DeviceArrays` if the data fits `device_budget_bytes` per device (replicated, or
    sharded over several devices), else `StreamingBatches`. The budget defaults to a quarter
    of the smallest device's memory (the rest is for parameters and activations).
    `progress`: show a slow first read of data that fits, as "decoding `name`: ..."."""
    budget = default_device_budget(mesh) if device_budget_bytes is None else device_budget_bytes
    devices = mesh.devices.size
    common = {"batch_size": batch_size, "seed": seed, "mesh": mesh, "shuffle": shuffle}
    read = {"progress": progress, "name": name}
    if bytes_per_device(source, devices, sharded=False) <= budget:
        return DeviceArrays(to_arrays(source, **read), **common)
    if devices > 1 and bytes_per_device(source, devices, sharded=True) <= budget:
        return DeviceArrays(to_arrays(source, **read), **common, shard_data=True)
    return StreamingBatches(source, **common, prefetch=prefetch)


def bytes_per_device(source: Source, devices: int, sharded: bool) -> int:
    """Device memory the examples and labels of `source` take on each device."""
    rows = -(-len(source) // devices) if sharded else len(source)
    return rows * _row_bytes(source)


def batch_bytes_per_device(source: Source, batch_size: int, devices: int) -> int:
    """Device memory one batch of `source` takes on each device (its share of the rows)."""
    return -(-batch_size // devices) * _row_bytes(source)


def _row_bytes(source: Source) -> int:
    itemsize = source.images.dtype.itemsize if isinstance(source, ArraySource) else 1  # uint8
    return math.prod(source.image_shape) * itemsize + 4  # + the int32 label


def default_device_budget(mesh: Mesh) -> int:
    """A quarter of the smallest memory among this process's devices of `mesh`."""
    limits = [(d.memory_stats() or {}).get("bytes_limit") for d in mesh.devices.flat
              if d.process_index == jax.process_index()]
    known = [limit for limit in limits if limit]
    return min(known) // 4 if known else UNKNOWN_DEVICE_BUDGET


def to_arrays(source: Source, chunk: int = 256, progress: bool = True,
              name: str = "examples") -> ArraySource:
    """Every example of `source` in index order, in memory. Read with `get_batch`, as
    streaming reads it, so both paths hold the same examples (a folder's unreadable file is
    replaced the same way). A read that takes more than a few seconds (a folder's first
    decode) shows its progress on stderr, unless `progress=False`."""
    if isinstance(source, ArraySource):
        return source
    n = len(source)
    images = np.empty((n, *source.image_shape), np.uint8)
    labels = np.empty((n,), np.int32)
    with Progress(f"decoding {name}", n, "images", enabled=progress) as shown:
        for start in range(0, n, chunk):
            indices = np.arange(start, min(start + chunk, n))
            images[indices], labels[indices] = source.get_batch(indices)
            shown.update(len(indices))
    report_skipped(source)
    return ArraySource(images, labels, tuple(source.class_names))

