"""One of two processes that test_placement.py starts on localhost (not a test).

    python placement_worker.py PROCESS_ID PORT

Each process fakes 2 CPU devices, so the mesh has 4 over 2 processes. For each batch source
(DeviceArrays replicated and sharded, StreamingBatches) it checks that the shards of every
batch this process holds are the rows the epoch order says, then prints "<name> ok".
"""

import os
import sys
from pathlib import Path

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from convjax.data import DeviceArrays, StreamingBatches, epoch_order  # noqa: E402
from convjax.data.placement import local_rows  # noqa: E402
from convjax.sharding import make_mesh  # noqa: E402
from helpers import tiny_arrays  # noqa: E402

N, B = 30, 8


def check(batch: dict, want: dict) -> None:
    for key, rows in want.items():
        for shard in batch[key].addressable_shards:
            np.testing.assert_array_equal(np.asarray(shard.data), rows[shard.index], key)


def main(process_id: int, port: str) -> None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # cross-process on CPU
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)
    mesh = make_mesh()
    assert local_rows(mesh, B) == slice(4 * process_id, 4 * process_id + 4)
    src = tiny_arrays(N, shape=(2, 2, 1))
    order = epoch_order(N, 0, 1)
    for name, batches in (
            ("replicated", DeviceArrays(src, batch_size=B, seed=0, mesh=mesh)),
            ("sharded", DeviceArrays(src, batch_size=B, seed=0, mesh=mesh, shard_data=True)),
            ("streaming", StreamingBatches(src, batch_size=B, seed=0, mesh=mesh))):
        for k, batch in enumerate(batches.train_batches(1)):
            rows = order[k * B : (k + 1) * B]
            check(batch, {"image": src.images[rows], "label": src.labels[rows]})
        for k, batch in enumerate(batches.eval_batches()):
            rows = np.arange(k * B, (k + 1) * B)
            mask = (rows < N).astype(np.float32)
            rows = np.where(rows < N, rows, 0)
            check(batch, {"image": src.images[rows], "label": src.labels[rows], "mask": mask})
        print(name, "ok", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
