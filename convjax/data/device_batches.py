"""`DeviceArrays`: a `BatchSource` for data that fits on the devices.

I/O (places the arrays once, then only a few hundred int32 indices per step). When a dataset
fits in accelerator memory (CIFAR-10 is ~150 MB as uint8), keeping it there and gathering
each batch by index on device removes host-to-device copies from the hot loop. The arrays
are replicated on every device, or, when that would not fit but a share per device would,
sharded over the batch axis; the gather returns the same batch either way.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from convjax.data.arrays import ArraySource
from convjax.data.batches import Batch
from convjax.data.indices import eval_indices, steps_per_epoch, train_indices
from convjax.data.placement import local_rows, place_batch, place_dataset
from convjax.sharding import BATCH_AXIS, batch_sharded, check_divisible, replicated


class DeviceArrays:
    """Arrays resident on the mesh; each batch is gathered there by index."""

    def __init__(self, source: ArraySource, *, batch_size: int, seed: int, mesh: Mesh,
                 shuffle: bool = True, shard_data: bool = False):
        check_divisible(batch_size, mesh, "batch_size")
        self.batch_size, self.seed, self.mesh, self.shuffle = batch_size, seed, mesh, shuffle
        self.num_examples = len(source)
        self.image_shape = source.image_shape
        self.num_classes = len(source.class_names)
        self.shard_data = shard_data and mesh.devices.size > 1
        images, labels = source.images, source.labels.astype(np.int32)
        sharding = replicated(mesh)
        if self.shard_data:  # pad to a whole share per device; padding rows are never indexed
            pad = -len(labels) % mesh.devices.size
            images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
            labels = np.concatenate([labels, np.zeros(pad, np.int32)])
            sharding = batch_sharded(mesh)
        self.images = place_dataset(images, sharding)
        self.labels = place_dataset(labels, sharding)

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.num_examples, self.batch_size)

    def train_batches(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        for indices in train_indices(self.num_examples, self.batch_size, self.seed, epoch,
                                     start_step, self.shuffle):
            yield self._gather({"index": indices})

    def eval_batches(self) -> Iterator[Batch]:
        for indices, mask in eval_indices(self.num_examples, self.batch_size):
            yield self._gather({"index": indices, "mask": mask})

    def close(self) -> None:
        """Nothing to stop: the arrays are freed with this object."""

    def _gather(self, host: dict[str, np.ndarray]) -> Batch:
        rows = local_rows(self.mesh, self.batch_size)
        placed = place_batch(self.mesh, {k: v[rows] for k, v in host.items()})
        images, labels = gather_batch(self.images, self.labels, placed.pop("index"),
                                      mesh=self.mesh, data_sharded=self.shard_data)
        return {"image": images, "label": labels, **placed}


# The only jit outside the step builder (steps.py): this is data placement, not training. It
# is a tiny program compiled once per (shapes, mesh), and keeping it apart from the step
# means the step takes a plain batch whichever batch source made it.
@functools.partial(jax.jit, static_argnames=("mesh", "data_sharded"))
def gather_batch(images: jax.Array, labels: jax.Array, indices: jax.Array, *, mesh: Mesh,
                 data_sharded: bool) -> tuple[jax.Array, jax.Array]:
    """The examples at `indices` (sharded over the batch axis), sharded like them."""
    if not data_sharded:  # every device holds all rows: each gathers its share locally
        out = jnp.take(images, indices, axis=0), jnp.take(labels, indices, axis=0)
        return jax.lax.with_sharding_constraint(out, batch_sharded(mesh))
    spec = PartitionSpec(BATCH_AXIS)
    return jax.shard_map(_gather_from_shards, mesh=mesh, in_specs=(spec, spec, spec),
                         out_specs=(spec, spec))(images, labels, indices)


def _gather_from_shards(images: jax.Array, labels: jax.Array, indices: jax.Array):
    """Per device, with rows sharded: every device sees the whole batch's indices, fills in
    the rows it owns (zeros elsewhere), and a reduce-scatter sums the exactly-one owner of
    each row into the device that needs it. Memory per device: its share of the data plus
    one batch, never the whole dataset (as an operand-replicating gather could be)."""
    wanted = jax.lax.all_gather(indices, BATCH_AXIS, tiled=True)  # (B,)
    first = jax.lax.axis_index(BATCH_AXIS) * images.shape[0]
    local = wanted - first
    mine = (local >= 0) & (local < images.shape[0])
    local = jnp.where(mine, local, 0)

    def owned(x):
        keep = mine.reshape(-1, *([1] * (x.ndim - 1)))
        return jnp.where(keep, jnp.take(x, local, axis=0), jnp.zeros((), x.dtype))

    return tuple(jax.lax.psum_scatter(owned(x), BATCH_AXIS, scatter_dimension=0, tiled=True)
                 for x in (images, labels))
