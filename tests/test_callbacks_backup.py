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
    for x, y in zip(jax.tree.leaves((state_a.params, state_a.opt_state, state_a.lr_scale)),
                    jax.tree.leaves((state_b.params, state_b.opt_state, state_b.lr_scale))):
        np.testing.assert_array_equal(x, y)
    assert hist_a.epoch == hist_b.epoch and hist_a.history == hist_b.history


@pytest.mark.parametrize("save_freq, crash", [(2, (1, 3)), ("epoch", (2, 1)), (2, (0, 0))])
def test_resume_after_a_crash_equals_the_uninterrupted_run(tmp_path, save_freq, crash):
    reference = tiny_fit(watchers(tmp_path / "ref"), epochs=3)
    backup = tmp_path / "backup"
    with pytest.raises(Crash):
        tiny_fit([BackupAndRestore(backup, save_freq), *watchers(tmp_path), crash_at(*crash)],
                 epochs=3)
    resumed = tiny_fit([BackupAndRestore(backup, save_freq), *watchers(tmp_path)], epochs=3)
    assert_same_run(resumed, reference)
    assert not backup.exists()  # delete_checkpoint=True after a normal end
    rows = lambda p: list(csv.reader(open(p)))  # noqa: E731
    assert rows(tmp_path / "log.csv") == rows(tmp_path / "ref" / "log.csv")


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
