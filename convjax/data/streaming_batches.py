"""`StreamingBatches`: a `BatchSource` for data that does not fit on the devices.

I/O (threads, host-to-device transfers). Each batch's indices come from `indices.py`, the
same as `DeviceArrays`; this process's rows of the batch are read with `source.get_batch`
(a `FolderSource` decodes them in a thread pool: the default, measured faster than worker
processes on small hosts) and put on the mesh by a background thread that stays at most
`prefetch` batches ahead (bounded: host memory stays flat however slow the step).
Stopping early, or `close()`, stops that thread.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator

import numpy as np
from jax.sharding import Mesh

from convjax.data.batches import Batch
from convjax.data.indices import eval_indices, steps_per_epoch, train_indices
from convjax.data.placement import local_rows, place_batch
from convjax.data.prefetch import prefetch
from convjax.data.source import Source, report_skipped
from convjax.sharding import check_divisible


class StreamingBatches:
    """Host batches read from a random-access source, prefetched to the devices."""

    def __init__(self, source: Source, *, batch_size: int, seed: int, mesh: Mesh,
                 shuffle: bool = True, prefetch: int = 2):
        check_divisible(batch_size, mesh, "batch_size")
        if prefetch < 0:
            raise ValueError(f"prefetch must be >= 0 batches, got {prefetch}")
        self.source = source
        self.batch_size, self.seed, self.mesh, self.shuffle = batch_size, seed, mesh, shuffle
        self.prefetch = prefetch
        self.num_examples = len(source)
        self.image_shape = tuple(source.image_shape)
        self.num_classes = len(source.class_names)
        self._streams: weakref.WeakSet = weakref.WeakSet()  # running iterations, for close()

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.num_examples, self.batch_size)

    def train_batches(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        indices = train_indices(self.num_examples, self.batch_size, self.seed, epoch,
                                start_step, self.shuffle)
        return self._stream({"index": i} for i in indices)

    def eval_batches(self) -> Iterator[Batch]:
        indices = eval_indices(self.num_examples, self.batch_size)
        return self._stream({"index": i, "mask": m} for i, m in indices)

    def close(self) -> None:
        """Stops every iteration still running (its thread is joined)."""
        for stream in list(self._streams):
            stream.close()

    def _stream(self, index_batches: Iterator[dict[str, np.ndarray]]) -> Iterator[Batch]:
        stream = prefetch(self._placed(index_batches), self.prefetch, "convjax-stream")
        self._streams.add(stream)
        try:
            yield from stream
        finally:  # also when the consumer stops mid-epoch
            stream.close()
            report_skipped(self.source)

    def _placed(self, index_batches: Iterator[dict[str, np.ndarray]]) -> Iterator[Batch]:
        """Runs in the prefetch thread: read this process's rows, put them on the mesh."""
        rows = local_rows(self.mesh, self.batch_size)
        for host in index_batches:
            images, labels = self.source.get_batch(host.pop("index")[rows])
            local = {"image": images, "label": np.asarray(labels, np.int32)}
            yield place_batch(self.mesh, local | {k: v[rows] for k, v in host.items()})
