import csv
import json
import re

import numpy as np
import pytest
from fake_loop import attach, make_control, tiny_fit

from convjax.callbacks import CSVLogger, History, ProgbarLogger
from convjax.callbacks.recorders import ValidationConfusion, fit_lines


def log_epochs(logger, rows, control=None):
    control = control or make_control()
    cbs = attach([logger], control)
    cbs.call("on_train_begin", {})
    for epoch, logs in enumerate(rows):
        cbs.call("on_epoch_end", epoch, logs)
    cbs.call("on_train_end", {})


def read_rows(path, sep=","):
    return list(csv.reader(open(path, newline=""), delimiter=sep))


def test_csv_sorted_keys_na_for_missing_and_separator(tmp_path):
    path = tmp_path / "log.tsv"
    log_epochs(CSVLogger(path, separator="\t"),
               [{"loss": 1.0, "accuracy": 0.5}, {"loss": 0.5}, {"loss": 0.25, "accuracy": [1, 2]}])
    assert read_rows(path, "\t") == [["epoch", "accuracy", "loss"], ["0", "0.5", "1.0"],
                                     ["1", "NA", "0.5"], ["2", "[1, 2]", "0.25"]]


def test_csv_rows_are_flushed_at_once(tmp_path):
    path = tmp_path / "log.csv"
    cbs = attach([CSVLogger(path)])
    cbs.call("on_train_begin", {})
    cbs.call("on_epoch_end", 0, {"loss": 1.0})
    assert read_rows(path) == [["epoch", "loss"], ["0", "1.0"]]  # before on_train_end


def test_csv_append_writes_the_header_only_to_an_empty_file(tmp_path):
    path = tmp_path / "log.csv"
    log_epochs(CSVLogger(path, append=True), [{"loss": 1.0, "accuracy": 0.1}])
    log_epochs(CSVLogger(path, append=True), [{"accuracy": 0.2, "loss": 0.5, "extra": 3.0}])
    assert read_rows(path) == [["epoch", "accuracy", "loss"], ["0", "0.1", "1.0"],
                               ["0", "0.2", "0.5"]]  # keeps the existing header's columns
    log_epochs(CSVLogger(path), [{"loss": 9.0}])  # append=False starts over
    assert read_rows(path) == [["epoch", "loss"], ["0", "9.0"]]


@pytest.mark.parametrize("backup_after_epochs", [0, 1])
def test_csv_resume_cuts_back_to_the_backup_and_continues(tmp_path, backup_after_epochs):
    path = tmp_path / "log.csv"
    first = CSVLogger(path)
    cbs = attach([first])
    cbs.call("on_train_begin", {})
    for epoch in range(backup_after_epochs):
        cbs.call("on_epoch_end", epoch, {"loss": 1.0})
    saved = first.state_dict()
    for epoch in range(backup_after_epochs, 2):  # written after the backup, then a crash
        cbs.call("on_epoch_end", epoch, {"loss": 0.5})
    control = make_control()
    control.resumed = True
    resumed = CSVLogger(path)  # append=False: a resumed run still keeps its own rows
    cbs = attach([resumed], control)
    cbs.call("on_train_begin", {})
    resumed.load_state_dict(saved)
    for epoch in range(backup_after_epochs, 2):
        cbs.call("on_epoch_end", epoch, {"loss": 0.25})
    cbs.call("on_train_end", {})
    expected = [["0", "1.0"], ["1", "0.25"]] if backup_after_epochs else [["0", "0.25"],
                                                                         ["1", "0.25"]]
    assert read_rows(path) == [["epoch", "loss"], *expected]


def test_history_records_and_round_trips():
    history = History()
    log_epochs(history, [{"loss": 1.0}, {"loss": 0.5, "val_loss": 0.7}])
    assert history.epoch == [0, 1]
    assert history.history == {"loss": [1.0, 0.5], "val_loss": [0.7]}
    other = History()
    other.load_state_dict(history.state_dict())
    assert other.history == history.history and other.epoch == history.epoch


def test_validation_confusion_keeps_the_latest_and_survives_a_backup():
    control = make_control()
    recorder = ValidationConfusion()
    cbs = attach([recorder], control)
    cbs.call("on_train_begin", {})
    cbs.call("on_test_end", {})
    assert recorder.matrix is None  # nothing validated with a counted matrix
    for matrix in (np.eye(2), np.array([[3.0, 1.0], [0.0, 4.0]])):
        control.validation_confusion = matrix
        cbs.call("on_test_end", {})
    saved = json.loads(json.dumps(recorder.state_dict()))  # as a backup holds it: JSON
    resumed = ValidationConfusion()
    attach([resumed], make_control()).call("on_train_begin", {})
    resumed.load_state_dict(saved)
    np.testing.assert_array_equal(resumed.matrix, [[3, 1], [0, 4]])


def test_progbar_one_line_per_epoch_with_verbose_2(capsys):
    control = make_control(epochs=3)
    log_epochs(ProgbarLogger(verbose=2), [{"loss": 0.5, "accuracy": 0.25}], control)
    assert capsys.readouterr().out == "Epoch 1/3 - loss: 0.5 - accuracy: 0.25\n"


def test_progbar_bar_counts_batches_and_starts_where_a_resume_starts(capsys):
    control = make_control(epochs=1, steps_per_epoch=4)
    bar = ProgbarLogger(verbose=1, update_every=2)
    cbs = attach([bar], control)
    control.step_in_epoch = 1  # resumed after one batch
    cbs.call("on_epoch_begin", 0, {})
    assert bar._bar.n == 1
    for batch in range(1, 4):
        cbs.call("on_train_batch_end", batch, {"loss": 0.5} if bar.wants_batch_logs(batch) else {})
    assert bar._bar.n == 4
    cbs.call("on_epoch_end", 0, {"loss": 0.5})
    assert "4/4" in capsys.readouterr().err


# The widest numbers 4 significant digits give ("0.0001234", "1.235e+04"): the epoch's
# numbers take more than 80 columns, so they must wrap with the validation ones kept together.
WIDE_LOGS = {"loss": 1.2345e4, "accuracy": 0.33333, "learning_rate": 1.2345e-4,
             "val_loss": 1.2345e-4, "val_accuracy": 0.66666}
WIDE_VAL_LINE = "val_loss: 0.0001234 - val_accuracy: 0.6667"


def printed_lines(captured) -> list[str]:
    """Every line of both streams as a terminal shows it (tqdm redraws after a \\r)."""
    return [line for text in (captured.out, captured.err) for line in re.split(r"[\r\n]", text)]


def test_fit_lines_keeps_the_validation_numbers_on_the_last_line():
    items = ["loss: 1", "accuracy: 0.5", "val_loss: 2", "val_accuracy: 0.25"]
    assert fit_lines(items, 80) == [" - ".join(items)]
    assert fit_lines(items, 40) == ["loss: 1 - accuracy: 0.5", "val_loss: 2 - val_accuracy: 0.25"]
    assert fit_lines(items, 20) == ["loss: 1", "accuracy: 0.5", "val_loss: 2",
                                    "val_accuracy: 0.25"]
    assert fit_lines([], 80) == []


@pytest.mark.parametrize("verbose", [1, 2])
def test_progbar_epoch_numbers_fit_80_columns_with_validation_last(capsys, monkeypatch, verbose):
    monkeypatch.setenv("COLUMNS", "80")
    control = make_control(epochs=10, steps_per_epoch=4)
    bar = ProgbarLogger(verbose=verbose, update_every=1)
    cbs = attach([bar], control)
    control.epoch = 9
    cbs.call("on_epoch_begin", 9, {})
    for batch in range(4):
        control.step_in_epoch = batch + 1
        cbs.call("on_train_batch_end", batch, {"loss": 1.2345e4, "accuracy": 0.33333})
        if bar._bar is not None:
            bar._bar.refresh()  # as a slower step would: the running numbers are shown
    cbs.call("on_epoch_end", 9, dict(WIDE_LOGS))
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    assert out[-1] == WIDE_VAL_LINE
    assert "loss: 1.234e+04 - accuracy: 0.3333 - learning_rate: 0.0001234" in out[-2]
    assert out[0].startswith("Epoch 10/10" if verbose == 2 else "loss: ")
    assert max(len(line) for line in printed_lines(captured)) <= 80


def test_progbar_in_fit_ends_each_epoch_with_the_validation_numbers(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    _, history = tiny_fit([ProgbarLogger(verbose=1, update_every=2)], epochs=2)
    captured = capsys.readouterr()
    h, out = history.history, captured.out.splitlines()
    expected = [f"val_loss: {loss:.4g} - val_accuracy: {accuracy:.4g}"
                for loss, accuracy in zip(h["val_loss"], h["val_accuracy"])]
    assert [line for line in out if "val_" in line] == expected and out[-1] == expected[-1]
    assert max(len(line) for line in printed_lines(captured)) <= 80


def test_in_fit_csv_matches_history(tmp_path):
    _, history = tiny_fit([CSVLogger(tmp_path / "log.csv")], epochs=2)
    rows = read_rows(tmp_path / "log.csv")
    assert rows[0] == ["epoch", *sorted(history.history)]
    column = rows[0].index("val_loss")
    assert [float(row[column]) for row in rows[1:]] == pytest.approx(history.history["val_loss"])
