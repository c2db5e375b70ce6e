"""DeviceArrays (convjax.data.device_batches) and the choice of batch source
(convjax.data.batch_sources), on the 4 fake CPU devices that conftest.py forces."""

import jax
import numpy as np
import pytest

from convjax.data import (
    DeviceArrays,
    StreamingBatches,
    epoch_order,
    make_batch_source,
)
from convjax.sharding import batch_sharded, make_mesh
from helpers import tiny_arrays

N, B = 30, 8  # 30 examples: not a multiple of the 4 devices, so the sharded copy is padded


@pytest.fixture(scope="module")
def mesh():
    assert jax.device_count() == 4, "conftest.py should fake 4 CPU devices"
    return make_mesh()


def host(batch) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in batch.items()}


def test_train_batches_are_the_epoch_order_gathered_on_device(mesh):
    src = tiny_arrays(N, shape=(4, 4, 3))
    data = DeviceArrays(src, batch_size=B, seed=3, mesh=mesh)
    batches = [host(b) for b in data.train_batches(epoch=2)]
    order = epoch_order(N, 3, 2)
    assert len(batches) == data.steps_per_epoch == N // B
    for k, batch in enumerate(batches):
        rows = order[k * B : (k + 1) * B]
        np.testing.assert_array_equal(batch["image"], src.images[rows])
        np.testing.assert_array_equal(batch["label"], src.labels[rows])
    first = next(data.train_batches(epoch=2))
    assert first["image"].sharding.is_equivalent_to(batch_sharded(mesh), 4)
    assert first["label"].dtype == np.int32
    assert (data.num_examples, data.image_shape, data.num_classes) == (N, (4, 4, 3), 3)


def test_sharded_data_gives_the_same_batches_and_holds_a_share_per_device(mesh):
    src = tiny_arrays(N, shape=(4, 4, 3))
    whole = DeviceArrays(src, batch_size=B, seed=0, mesh=mesh)
    shared = DeviceArrays(src, batch_size=B, seed=0, mesh=mesh, shard_data=True)
    assert whole.images.addressable_shards[0].data.shape[0] == N
    assert shared.images.addressable_shards[0].data.shape[0] == 8  # ceil(30 / 4)
    for a, b in zip(whole.train_batches(1), shared.train_batches(1), strict=True):
        for key in ("image", "label"):
            np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))
    for a, b in zip(whole.eval_batches(), shared.eval_batches(), strict=True):
        for key in ("image", "label", "mask"):
            np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))


def test_starting_at_step_k_continues_the_epoch_exactly(mesh):
    data = DeviceArrays(tiny_arrays(N, shape=(4, 4, 3)), batch_size=B, seed=1, mesh=mesh)
    full = [host(b) for b in data.train_batches(epoch=4)]
    resumed = [host(b) for b in data.train_batches(epoch=4, start_step=2)]
    assert len(resumed) == len(full) - 2
    for a, b in zip(full[2:], resumed, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
    unshuffled = DeviceArrays(tiny_arrays(N, shape=(4, 4, 3)), batch_size=B, seed=1, mesh=mesh,
                              shuffle=False)
    assert host(next(unshuffled.train_batches(5)))["label"].tolist() == \
        tiny_arrays(N).labels[:B].tolist()


def test_eval_batches_pad_the_last_batch_and_mask_it(mesh):
    src = tiny_arrays(N, shape=(4, 4, 3))
    batches = [host(b) for b in DeviceArrays(src, batch_size=B, seed=0, mesh=mesh).eval_batches()]
    assert len(batches) == 4 and [b["mask"].sum() for b in batches] == [8, 8, 8, 6]
    seen = np.concatenate([b["image"][b["mask"] > 0] for b in batches])
    np.testing.assert_array_equal(seen, src.images)  # every example once, in order


def test_batch_larger_than_the_data_names_the_setting(mesh):
    data = DeviceArrays(tiny_arrays(12, shape=(2, 2, 1)), batch_size=16, seed=0, mesh=mesh)
    with pytest.raises(ValueError, match=r"train\.batch_size=16 .*\(12 examples\)"):
        _ = data.steps_per_epoch
    assert sum(np.asarray(b["mask"]).sum() for b in data.eval_batches()) == 12  # eval is fine
    with pytest.raises(ValueError, match="multiple of the 4 devices"):
        DeviceArrays(tiny_arrays(12), batch_size=6, seed=0, mesh=mesh)


def test_the_budget_picks_replicated_sharded_or_streaming(mesh):
    src = tiny_arrays(N, shape=(4, 4, 3))
    row = 4 * 4 * 3 + 4  # image bytes + an int32 label
    kwargs = {"batch_size": B, "seed": 0, "mesh": mesh}
    whole = make_batch_source(src, device_budget_bytes=N * row, **kwargs)
    assert isinstance(whole, DeviceArrays) and not whole.shard_data
    shared = make_batch_source(src, device_budget_bytes=N * row - 1, **kwargs)
    assert isinstance(shared, DeviceArrays) and shared.shard_data  # a share fits, all does not
    streamed = make_batch_source(src, device_budget_bytes=8 * row - 1, **kwargs)
    assert isinstance(streamed, StreamingBatches)  # never copied whole to every device
    single = make_batch_source(src, device_budget_bytes=N * row - 1, batch_size=B, seed=0,
                               mesh=make_mesh(jax.devices()[:1]))
    assert isinstance(single, StreamingBatches)  # one device: sharding would not help
    streamed.close()
    single.close()


def test_batches_make_no_implicit_transfer(mesh):
    for kwargs in ({}, {"shard_data": True}):
        data = DeviceArrays(tiny_arrays(N, shape=(4, 4, 3)), batch_size=B, seed=0, mesh=mesh,
                            **kwargs)
        next(data.train_batches(0))  # compiled outside the guard
        with jax.transfer_guard("disallow"):  # as in the loop's hot path
            assert len(list(data.train_batches(1))) == 3
