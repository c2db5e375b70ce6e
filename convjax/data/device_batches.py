"""TEMPORARY stand-in (replaced by the data branch): device-resident batches."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from convjax.data.arrays import ArraySource
from convjax.data.batches import epoch_order
from convjax.sharding import batch_sharded, replicated


@jax.jit
def _gather(images, labels, indices):
    return {"image": jnp.take(images, indices, axis=0), "label": jnp.take(labels, indices)}


class DeviceArrays:
    def __init__(self, source: ArraySource, *, batch_size: int, seed: int = 0, mesh):
        self.source, self.batch_size, self.seed, self.mesh = source, batch_size, seed, mesh
        self.num_examples = len(source)
        if batch_size > self.num_examples:
            raise ValueError(f"train.batch_size={batch_size} is larger than the dataset "
                             f"({self.num_examples} examples)")
        self.steps_per_epoch = self.num_examples // batch_size
        self.image_shape = source.image_shape
        self.num_classes = len(source.class_names)
        self.images = jax.device_put(source.images, replicated(mesh))
        self.labels = jax.device_put(source.labels, replicated(mesh))

    def train_batches(self, epoch: int, start_step: int = 0):
        order = epoch_order(self.num_examples, self.seed, epoch)
        for step in range(start_step, self.steps_per_epoch):
            idx = order[step * self.batch_size : (step + 1) * self.batch_size].astype(np.int32)
            yield _gather(self.images, self.labels, jax.device_put(idx, batch_sharded(self.mesh)))

    def eval_batches(self):
        b = self.batch_size
        for start in range(0, self.num_examples, b):
            idx = np.arange(start, min(start + b, self.num_examples), dtype=np.int32)
            mask = np.zeros(b, np.float32)
            mask[: len(idx)] = 1.0
            idx = np.pad(idx, (0, b - len(idx)))
            batch = _gather(self.images, self.labels, jax.device_put(idx, batch_sharded(self.mesh)))
            yield {**batch, "mask": jax.device_put(mask, batch_sharded(self.mesh))}

    def close(self) -> None:
        pass
