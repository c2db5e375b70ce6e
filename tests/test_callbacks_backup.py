"""BackupAndRestore in-process: an exception stands in for the crash (test_resume.py kills
real processes)."""

import csv

import jax
import numpy as np
import pytest
from fake_loop import tiny_fit

from convjax.callbacks import (
    BackupAndRestore,
    CSVLogger,
    EarlyStopping,
    LambdaCallback,
    ReduceLROnPlateau,
)


class Crash(Exception):
    pass


def crash_at(epoch, batch):
    def maybe_crash(b, logs):
        if b == batch and cb.loop.epoch == epoch:
            raise Crash

    cb = LambdaCallback(on_train_batch_begin=maybe_crash)
    return cb


def watchers(tmp_path):
    """Stateful callbacks whose state must survive the crash for the results to match."""
    return [EarlyStopping(monitor="loss", patience=5, restore_best_weights=True),
            ReduceLROnPlateau(monitor="loss", patience=0, factor=0.5, min_delta=0.05),
            CSVLogger(tmp_path / "log.csv")]


def assert_same_run(a, b):
    (state_a, hist_a), (state_b, hist_b) = a, b
    for x, y in zip(jax.tree.leaves((state_a.params, state_a.opt_state)),
                    jax.tree.leaves((state_b.params, state_b.opt_state))):
        np.testing.assert_array_equal(x, y)
    assert hist_a.epoch == hist_b.epoch and hist_a.history == hist_b.history


def counter():
    """Counts the training steps a run dispatches."""
    steps = []
    return LambdaCallback(on_train_batch_end=lambda b, logs: steps.append(b)), steps


# (save_freq, crash at (epoch, batch), the global step of the last backup before the crash)
@pytest.mark.parametrize("save_freq, crash, backed_up", [
    (2, (1, 3), 8), ("epoch", (2, 1), 12), (2, (0, 0), 0)])
def test_resume_after_a_crash_equals_the_uninterrupted_run(tmp_path, save_freq, crash,
                                                           backed_up):
    reference = tiny_fit(watchers(tmp_path / "ref"), epochs=3)
    backup = tmp_path / "backup"
    with pytest.raises(Crash):
        tiny_fit([BackupAndRestore(backup, save_freq), *watchers(tmp_path), crash_at(*crash)],
                 epochs=3)
    count, trained = counter()
    resumed = tiny_fit([BackupAndRestore(backup, save_freq), *watchers(tmp_path), count],
                       epochs=3)
    assert len(trained) == 3 * 6 - backed_up  # only the steps after the backup, not a rerun
    assert_same_run(resumed, reference)
    assert not backup.exists()  # delete_checkpoint=True after a normal end
    rows = lambda p: list(csv.reader(open(p)))  # noqa: E731
    assert rows(tmp_path / "log.csv") == rows(tmp_path / "ref" / "log.csv")


def test_the_restored_wait_counter_decides_when_training_stops(tmp_path):
    # No epoch improves by 10 after the first: patience 2 stops after epoch 2. A resumed run
    # that forgot the wait counter of epoch 1 would train on to epoch 4.
    def stopper():
        return EarlyStopping(monitor="loss", min_delta=10.0, patience=2)

    _, reference = tiny_fit([stopper()], epochs=6)
    assert reference.epoch == [0, 1, 2]
    with pytest.raises(Crash):
        tiny_fit([BackupAndRestore(tmp_path / "b"), stopper(), crash_at(2, 1)], epochs=6)
    count, trained = counter()
    _, resumed = tiny_fit([BackupAndRestore(tmp_path / "b"), stopper(), count], epochs=6)
    assert resumed.epoch == [0, 1, 2] and len(trained) == 6


def test_kept_backup_of_a_stopped_run_does_not_train_again(tmp_path):
    def make():
        return [BackupAndRestore(tmp_path / "b", delete_checkpoint=False),
                EarlyStopping(monitor="loss", min_delta=10.0, patience=1)]

    state, history = tiny_fit(make(), epochs=5)
    assert history.epoch == [0, 1] and (tmp_path / "b").exists()
    again, history2 = tiny_fit(make(), epochs=5)
    assert history2.epoch == [0, 1] and int(again.step) == int(state.step) == 12


def test_save_freq_false_never_saves(tmp_path):
    backup_dir = tmp_path / "b"
    seen = []

    def look(epoch, logs):
        seen.append(backup_dir.exists() and any(backup_dir.iterdir()))

    tiny_fit([BackupAndRestore(backup_dir, save_freq=False, delete_checkpoint=False),
              LambdaCallback(on_epoch_end=look)], epochs=2)
    assert seen == [False, False]  # (Keras's False meant: every batch)


@pytest.mark.parametrize("bad", [True, 0, "batch", -2])
def test_invalid_arguments(tmp_path, bad):
    with pytest.raises(ValueError, match="save_freq"):
        BackupAndRestore(tmp_path, save_freq=bad)
    with pytest.raises(ValueError, match="Empty"):
        BackupAndRestore("")
