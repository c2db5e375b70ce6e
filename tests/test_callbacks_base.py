"""The callback protocol: event order, requests applied between callbacks, saved states."""

import csv

import pytest
from fake_loop import attach, make_control, rate, tiny_fit

from convjax.callbacks import Callback, CSVLogger, ReduceLROnPlateau
from convjax.callbacks.base import callback_names


class SeesRate(Callback):
    def __init__(self):
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append((logs["learning_rate"], self.loop.learning_rate))


def test_a_request_reaches_the_callbacks_after_it_in_the_same_event(tmp_path):
    before, after = SeesRate(), SeesRate()
    reduce = ReduceLROnPlateau(patience=0, factor=0.5, min_delta=10.0)
    csv_logger = CSVLogger(tmp_path / "log.csv")
    control = make_control(lr=0.1)
    cbs = attach([before, reduce, after, csv_logger], control)
    cbs.call("on_train_begin", {})
    for epoch in range(3):  # as fit does: the logs carry the rate the epoch trained with
        cbs.call("on_epoch_end", epoch, {"val_loss": 1.0, "learning_rate": rate(control)})
    cbs.call("on_train_end", {})
    assert before.seen[1] == pytest.approx((0.1, 0.1))
    assert after.seen[1] == pytest.approx((0.1, 0.05))  # logs: old rate; loop: the new one
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [float(r["learning_rate"]) for r in rows] == pytest.approx([0.1, 0.1, 0.05])


def test_state_names_count_per_class_and_unknown_states_are_reported():
    class A(Callback):
        def state_dict(self):
            return {"x": id(self)}

        def load_state_dict(self, state):
            self.loaded = state

    a0, a1, b = A(), A(), Callback()
    assert callback_names([a0, b, a1]) == ["A#0", "Callback#0", "A#1"]
    cbs = attach([a0, b, a1])
    states = cbs.state_dicts()
    missing = cbs.load_state_dicts({**states, "Gone#0": {"x": 1}, "Empty#0": {"arrays": None}})
    assert missing == ["Gone#0"] and a1.loaded == {"x": id(a1)}


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def __getattribute__(self, name):
        if name.startswith("on_"):
            return lambda *args: self.events.append(name)
        return super().__getattribute__(name)


def test_fit_sends_the_documented_event_order():
    rec = Recorder()
    tiny_fit([rec], epochs=1)
    batches = ["on_train_batch_begin", "on_train_batch_end"] * 6
    assert rec.events == ["on_train_begin", "on_epoch_begin", *batches,
                          "on_test_begin", "on_test_end", "on_epoch_end", "on_train_end"]
