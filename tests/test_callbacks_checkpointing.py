import json

import jax
import numpy as np
import pytest
from fake_loop import attach, make_control, set_weight, tiny_fit

from convjax import checkpoint
from convjax.callbacks import ModelCheckpoint


def run_epochs(callback, values, monitor="val_loss", control=None):
    control = control or make_control()
    cbs = attach([callback], control)
    cbs.call("on_train_begin", {})
    for epoch, value in enumerate(values):
        set_weight(control, epoch)
        cbs.call("on_epoch_begin", epoch, {})
        cbs.call("on_epoch_end", epoch, {monitor: value, "loss": 1.0})
    cbs.call("on_train_end", {})
    return control


def saved_epoch(path):
    return checkpoint.read_tree(path)[1]["epoch"]


def test_formats_the_path_with_the_1_based_epoch_and_log_keys(tmp_path):
    run_epochs(ModelCheckpoint(tmp_path / "m-{epoch:02d}-{val_loss:.2f}"), [0.5, 0.25])
    names = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".json"))
    assert names == ["m-01-0.50", "m-02-0.25"]
    tree, meta = checkpoint.read_tree(tmp_path / "m-02-0.25")
    assert meta["epoch"] == 2 and meta["logs"]["val_loss"] == 0.25
    assert set(tree) >= {"params", "opt_state", "rng", "step"}  # the whole train state


def test_save_best_only_keeps_the_best_at_a_fixed_path(tmp_path):
    path = tmp_path / "best"
    run_epochs(ModelCheckpoint(path, save_best_only=True), [0.5, 0.4, 0.45, 0.3, 0.35])
    tree, meta = checkpoint.read_tree(path)
    assert meta["epoch"] == 4 and meta["value"] == 0.3
    assert float(tree["params"]["dense"]["bias"][0]) == 3.0  # the weights of epoch index 3


def test_save_weights_only_saves_params_and_batch_stats(tmp_path):
    run_epochs(ModelCheckpoint(tmp_path / "w", save_weights_only=True), [1.0])
    tree, _ = checkpoint.read_tree(tmp_path / "w")
    assert set(tree) == {"params"} or set(tree) == {"params", "batch_stats"}
    assert "opt_state" not in tree


def test_max_to_keep_never_deletes_the_latest_or_the_best(tmp_path):
    cb = ModelCheckpoint(tmp_path / "e{epoch}", max_to_keep=1)
    run_epochs(cb, [0.5, 0.2, 0.6, 0.7])
    kept = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".json"))
    assert kept == ["e2", "e4"]  # the best (val_loss 0.2) and the latest
    assert cb.best_path.endswith("e2")


def test_best_value_survives_a_restart(tmp_path):
    path = tmp_path / "best"
    run_epochs(ModelCheckpoint(path, save_best_only=True), [0.5, 0.3])
    restarted = ModelCheckpoint(path, save_best_only=True)
    run_epochs(restarted, [0.4, 0.35])  # worse than 0.3: must not overwrite
    assert saved_epoch(path) == 2 and restarted.best == 0.3
    record = json.loads((tmp_path / "best.checkpoints.json").read_text())
    assert record["best"] == 0.3 and record["monitor"] == "val_loss"
    run_epochs(restarted, [0.1])
    assert saved_epoch(path) == 1 and restarted.best == 0.1


def test_initial_value_threshold_must_be_beaten(tmp_path):
    path = tmp_path / "best"
    run_epochs(ModelCheckpoint(path, save_best_only=True, initial_value_threshold=0.2), [0.3])
    assert not path.exists()
    run_epochs(ModelCheckpoint(path, save_best_only=True, monitor="val_accuracy",
                               initial_value_threshold=0.5), [0.6], monitor="val_accuracy")
    assert saved_epoch(path) == 1


def test_save_freq_counts_batches_across_epochs(tmp_path):
    cb = ModelCheckpoint(tmp_path / "e{epoch}-b{batch}", save_freq=3)
    control = make_control(steps_per_epoch=4)
    cbs = attach([cb], control)
    cbs.call("on_train_begin", {})
    asked = []
    for epoch in range(2):
        cbs.call("on_epoch_begin", epoch, {})
        for batch in range(4):
            asked.append(cbs.wants_batch_logs(batch))
            cbs.call("on_train_batch_end", batch, {"loss": 1.0} if asked[-1] else {})
        cbs.call("on_epoch_end", epoch, {"loss": 1.0})
    names = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".json"))
    assert names == ["e1-b3", "e2-b2"]  # batches 3 and 6 of 8; no save at epoch ends
    assert asked == [False, False, True, False, False, True, False, False]


@pytest.mark.parametrize("save_freq", [False, True, 0, -1, "batch"])
def test_invalid_save_freq(save_freq, tmp_path):
    with pytest.raises(ValueError, match="save_freq"):
        ModelCheckpoint(tmp_path / "x", save_freq=save_freq)


def test_missing_format_key_names_the_path(tmp_path):
    with pytest.raises(KeyError, match="Failed to format"):
        run_epochs(ModelCheckpoint(tmp_path / "{val_acc:.2f}"), [0.5])


def test_in_fit_the_last_checkpoint_holds_the_final_weights(tmp_path):
    cb = ModelCheckpoint(tmp_path / "last", save_weights_only=True)
    state, _ = tiny_fit([cb], epochs=2)
    tree, meta = checkpoint.read_tree(tmp_path / "last")
    assert meta["epoch"] == 2
    for saved, final in zip(jax.tree.leaves(tree["params"]), jax.tree.leaves(state.params)):
        np.testing.assert_array_equal(saved, final)
