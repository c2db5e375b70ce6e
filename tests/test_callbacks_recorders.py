import csv

import pytest
from fake_loop import attach, make_control, tiny_fit

from convjax.callbacks import CSVLogger, History, ProgbarLogger


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


def test_in_fit_csv_matches_history(tmp_path):
    _, history = tiny_fit([CSVLogger(tmp_path / "log.csv")], epochs=2)
    rows = read_rows(tmp_path / "log.csv")
    assert rows[0] == ["epoch", *sorted(history.history)]
    column = rows[0].index("val_loss")
    assert [float(row[column]) for row in rows[1:]] == pytest.approx(history.history["val_loss"])
