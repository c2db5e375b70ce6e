import shutil

import jax
import numpy as np
import pytest
from fake_loop import make_state

from convjax import checkpoint
from convjax.checkpoint import Backup


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def make_backup(index: int) -> Backup:
    state = make_state(ema=True).replace(step=np.int32(index))
    sums = {"loss_sum": np.float32(1.25 + index), "correct": np.float32(3), "count": np.float32(8),
            "nonfinite": np.float32(0)}
    states = {"History#0": {"epoch": [0], "history": {"loss": [float("nan")]}},
              "EarlyStopping#0": {"wait": 1, "arrays": {"params": {"w": np.arange(3.0)}}}}
    return Backup(state, epoch=2, step_in_epoch=index, sums=sums, stop_training=False,
                  callback_states=states)


def test_state_round_trip_including_the_rng_key(tmp_path):
    state = make_state(ema=True)
    with checkpoint.make_manager(tmp_path) as manager:
        checkpoint.save(manager, 3, state, {"epoch": 1})
        restored, meta = checkpoint.restore(manager, make_state(ema=True))
    assert meta == {"epoch": 1}
    assert_trees_equal(restored, state)


def test_backup_round_trip_keeps_sums_callback_arrays_and_nan(tmp_path):
    backup = make_backup(4)
    with checkpoint.make_manager(tmp_path) as manager:
        checkpoint.save_backup(manager, 0, backup)
        index, got = checkpoint.restore_latest_backup(manager, make_state(ema=True))
    assert index == 0 and (got.epoch, got.step_in_epoch, got.stop_training) == (2, 4, False)
    assert_trees_equal(got.state, backup.state)
    assert got.sums["loss_sum"] == np.float32(5.25) and got.sums["loss_sum"].dtype == np.float32
    np.testing.assert_array_equal(got.callback_states["EarlyStopping#0"]["arrays"]["params"]["w"],
                                  [0, 1, 2])
    assert np.isnan(got.callback_states["History#0"]["history"]["loss"][0])
    assert got.callback_states["History#0"]["arrays"] is None


def test_a_write_killed_before_its_rename_leaves_the_previous_backup_usable(tmp_path):
    with checkpoint.make_manager(tmp_path) as manager:
        checkpoint.save_backup(manager, 0, make_backup(1))
    # What a save killed half-way leaves: Orbax's temporary directory, never renamed.
    (tmp_path / "1.orbax-checkpoint-tmp-1234" / "state").mkdir(parents=True)
    (tmp_path / "1.orbax-checkpoint-tmp-1234" / "state" / "junk").write_bytes(b"\0" * 10)
    with checkpoint.make_manager(tmp_path) as manager:
        index, got = checkpoint.restore_latest_backup(manager, make_state(ema=True))
    assert index == 0 and got.step_in_epoch == 1


def test_an_unreadable_latest_backup_falls_back_to_the_previous_one(tmp_path):
    with checkpoint.make_manager(tmp_path, max_to_keep=2) as manager:
        checkpoint.save_backup(manager, 0, make_backup(1))
        checkpoint.save_backup(manager, 1, make_backup(2))
    shutil.rmtree(tmp_path / "1" / "state")  # corrupt the latest
    with checkpoint.make_manager(tmp_path, max_to_keep=2) as manager:
        with pytest.warns(UserWarning, match="backup 1 unreadable"):
            index, got = checkpoint.restore_latest_backup(manager, make_state(ema=True))
    assert index == 0 and got.step_in_epoch == 1


def test_no_backup_restores_nothing(tmp_path):
    with checkpoint.make_manager(tmp_path) as manager:
        assert checkpoint.restore_latest_backup(manager, make_state()) is None


def test_write_tree_replaces_and_reads_back_as_numpy_or_like(tmp_path):
    path = tmp_path / "best"
    checkpoint.write_tree(path, {"w": np.zeros(2)}, {"epoch": 1})
    checkpoint.write_tree(path, {"w": np.ones(2)}, {"epoch": 2})
    tree, meta = checkpoint.read_tree(path)
    assert meta["epoch"] == 2 and isinstance(tree["w"], np.ndarray)
    np.testing.assert_array_equal(tree["w"], [1, 1])
    state = make_state()
    checkpoint.write_tree(tmp_path / "full", state, {})
    restored, _ = checkpoint.read_tree(tmp_path / "full", like=make_state())
    assert_trees_equal(restored, state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "full"]  # nothing left over


def test_a_swap_interrupted_between_its_renames_is_completed(tmp_path):
    path = tmp_path / "ckpt"
    checkpoint.write_tree(path, {"w": np.zeros(2)}, {"v": 1})
    checkpoint.write_tree(tmp_path / "new", {"w": np.ones(2)}, {"v": 2})
    # Killed after moving the old one aside, before renaming the staged one into place:
    path.rename(tmp_path / "ckpt.replaced")
    (tmp_path / "new").rename(tmp_path / "ckpt.incoming")
    assert checkpoint.read_tree(path)[1] == {"v": 2}
    assert not (tmp_path / "ckpt.incoming").exists()


def test_a_staging_write_killed_half_way_keeps_the_old_checkpoint(tmp_path):
    path = tmp_path / "ckpt"
    checkpoint.write_tree(path, {"w": np.zeros(2)}, {"v": 1})
    (tmp_path / "ckpt.incoming.orbax-checkpoint-tmp-99").mkdir()  # never finished
    assert checkpoint.read_tree(path)[1] == {"v": 1}
    checkpoint.write_tree(path, {"w": np.ones(2)}, {"v": 2})
    assert checkpoint.read_tree(path)[1] == {"v": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # the leftover is gone
