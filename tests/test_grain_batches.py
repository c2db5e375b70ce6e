"""GrainBatches: Grain worker processes read the same batches as the thread-based stream,
from any starting step, for training and evaluation."""

import jax
import numpy as np

from convjax.data import DeviceArrays, StreamingBatches
from convjax.data.grain_batches import GrainBatches
from convjax.sharding import make_mesh
from helpers import require_module, tiny_arrays


def host(batches):
    return [{k: np.asarray(v) for k, v in b.items()} for b in batches]


def test_grain_reads_the_same_batches_as_threads_from_any_step():
    require_module("grain")
    mesh = make_mesh(jax.devices()[:2])
    data = tiny_arrays(30)
    common = {"batch_size": 8, "seed": 3, "mesh": mesh}
    grain_src = GrainBatches(data, workers=2, **common)
    threads = StreamingBatches(data, **common)
    both = host(grain_src.train_batches(1, start_step=1)), host(threads.train_batches(1, 1))
    assert len(both[0]) == 2  # steps 1 and 2 of 3
    expected = host(DeviceArrays(data, **common).train_batches(1, 1))
    for got, want, ref in zip(*both, expected):
        for key in ("image", "label"):
            np.testing.assert_array_equal(got[key], want[key])
            np.testing.assert_array_equal(got[key], ref[key])
    evals = host(grain_src.eval_batches())
    assert sum(float(b["mask"].sum()) for b in evals) == 30
    grain_src.close()
