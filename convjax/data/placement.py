"""Putting host data on the mesh: batches (sharded over the batch axis) and whole datasets.

I/O (host-to-device transfers). The one place both batch sources place data, so single- and
multi-process runs differ only here. With several processes each reads only the rows of a
global batch that its own devices hold (`local_rows`) and the global array is assembled
from every process's part with `jax.make_array_from_process_local_data`.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, Sharding

from convjax.sharding import batch_sharded


def local_rows(mesh: Mesh, batch_size: int) -> slice:
    """The rows of a global batch that this process's devices hold: all of them in a single
    process; `process_index * local : (process_index + 1) * local` on a mesh whose devices are
    in process order (`jax.devices()` order), and whatever the sharding says otherwise."""
    if jax.process_count() == 1:
        return slice(0, batch_size)
    spans = batch_sharded(mesh).addressable_devices_indices_map((batch_size,)).values()
    starts = [span[0].indices(batch_size)[0] for span in spans]
    stops = [span[0].indices(batch_size)[1] for span in spans]
    rows = slice(min(starts), max(stops))
    if rows.stop - rows.start != sum(b - a for a, b in zip(starts, stops)):
        raise ValueError("this process's devices hold non-contiguous rows of the batch; "
                         "build the mesh from jax.devices() (process order)")
    return rows


def place_batch(mesh: Mesh, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """This process's rows of a global batch -> global arrays sharded over the batch axis."""
    sharding = batch_sharded(mesh)
    if jax.process_count() == 1:
        return jax.device_put(local, sharding)
    return {name: jax.make_array_from_process_local_data(sharding, rows)
            for name, rows in local.items()}


def place_dataset(array: np.ndarray, sharding: Sharding) -> jax.Array:
    """A whole array (present in every process) placed with `sharding`: each device receives
    only its own part (all of it when replicated), in one or several processes alike."""
    if jax.process_count() == 1:
        return jax.device_put(array, sharding)  # explicit: allowed under transfer_guard
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])
