"""Data parallelism over all local devices: a 1-D mesh whose axis shards the batch.

Pure placement helpers (no I/O). Parameters are replicated; each batch's
indices are split over the "batch" axis, so the gathered batch, the forward pass and the
gradient all-reduce run SPMD under one `jax.jit`, on 1 CPU, 8 GPUs or a TPU slice alike.
Multi-host runs call `jax.distributed.initialize()` first and use the same code.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

BATCH_AXIS = "batch"


def make_mesh(devices: list | None = None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (BATCH_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(BATCH_AXIS))


def check_divisible(batch_size: int, mesh: Mesh, name: str = "batch_size") -> None:
    n = mesh.devices.size
    if batch_size % n:
        raise ValueError(f"{name}={batch_size} must be a multiple of the {n} devices")


def place_replicated(tree, mesh: Mesh):
    """A copy of `tree` on every device of `mesh` (the train state, the metric sums).

    A copy, never an alias: the steps donate the state's buffers, and the caller's arrays
    must survive. With several processes `device_put` cannot target devices of other
    processes, so each process builds its addressable shards from its own host copy (every
    process holds the same values: same seed, same checkpoint).
    """
    sharding = replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding, may_alias=False)

    def put(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):  # the state's RNG key
            return jax.random.wrap_key_data(put(jax.random.key_data(x)),
                                            impl=jax.random.key_impl(x))
        host = np.asarray(jax.device_get(x))
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)
