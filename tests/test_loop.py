import jax
import numpy as np
import pytest
from fake_loop import make_control, tiny_data, tiny_fit, tiny_parts

from convjax.callbacks import Callback, LambdaCallback
from convjax.loop import _jitted_steps, evaluate, fit
from convjax.sharding import make_mesh
from helpers import tiny_arrays, tiny_setup


def test_fit_learns_and_fills_history():
    state, history = tiny_fit(epochs=6)
    h = history.history
    assert set(h) == {"loss", "accuracy", "learning_rate", "val_loss", "val_accuracy"}
    assert history.epoch == list(range(6)) and len(h["loss"]) == 6
    assert h["loss"][-1] < h["loss"][0]
    assert int(state.step) == 6 * 6  # 48 examples / batch 8


def test_same_seed_same_params_bit_for_bit_and_steps_compile_once():
    misses = _jitted_steps.cache_info().misses
    a, _ = tiny_fit()
    b, _ = tiny_fit()
    assert _jitted_steps.cache_info().misses <= misses + 1  # the second fit reuses the steps
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(x, y)
    c, _ = tiny_fit(state=tiny_setup(seed=1)[0], seed=1)
    assert not np.array_equal(jax.tree.leaves(a.params)[0], jax.tree.leaves(c.params)[0])


def test_sharded_over_4_devices_equals_one_device():
    assert len(jax.devices()) == 4, "conftest fakes 4 CPU devices"
    _, train_step, eval_step, schedule = tiny_parts()
    train, val = tiny_data()
    runs = []
    for devices in (jax.devices()[:1], jax.devices()):
        state = tiny_setup()[0]
        runs.append(fit(state, train, train_step=train_step, eval_step=eval_step,
                        schedule=schedule, epochs=2, batch_size=8, validation=val,
                        eval_batch_size=8, verbose=0, mesh=make_mesh(devices)))
    (one, h1), (four, h4) = runs
    assert jax.tree.leaves(four.params)[0].sharding.num_devices == 4
    for x, y in zip(jax.tree.leaves(one.params), jax.tree.leaves(four.params)):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(h1.history["val_loss"], h4.history["val_loss"], rtol=1e-4)


class Recorder(Callback):
    def __init__(self, batch_logs_every=0):
        self.batch_logs_every = batch_logs_every
        self.batch_logs = []

    def on_train_batch_end(self, batch, logs=None):
        self.batch_logs.append(dict(logs))


def test_batch_logs_only_when_asked():
    rec = Recorder(batch_logs_every=3)
    tiny_fit([rec], epochs=1)
    with_logs = [i for i, logs in enumerate(rec.batch_logs) if logs]
    assert with_logs == [2, 5]  # batches 3 and 6 of 6
    assert set(rec.batch_logs[2]) == {"loss", "accuracy"}


class StopAfter(Callback):
    def __init__(self, epoch):
        self.stop_epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.stop_epoch:
            self.loop.request_stop()


class SetLearningRate(Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.loop.request_learning_rate(1e-4)


class SeesLearningRate(Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.seen = self.loop.learning_rate


def test_requests_are_applied_in_order():
    seer = SeesLearningRate()
    state, history = tiny_fit([StopAfter(1), SetLearningRate(), seer], epochs=5)
    assert history.epoch == [0, 1]
    assert history.history["learning_rate"][0] == pytest.approx(1e-3)
    assert seer.seen == pytest.approx(1e-4)  # the next callback already sees the new rate
    np.testing.assert_allclose(float(state.lr_scale), 0.1, rtol=1e-6)


class RestoreInitial(Callback):
    def on_train_begin(self, logs=None):
        self.initial = self.loop.snapshot()

    def on_train_end(self, logs=None):
        self.loop.request_params(*self.initial)


def test_snapshot_survives_donation_and_params_can_be_replaced():
    cb = RestoreInitial()
    state, _ = tiny_fit([cb], epochs=2)
    for x, y in zip(jax.tree.leaves(state.params), jax.tree.leaves(cb.initial[0])):
        np.testing.assert_array_equal(x, y)


def test_stop_during_an_epoch_still_validates_and_ends_it():
    stop = LambdaCallback(on_train_batch_end=lambda b, logs: b == 2 and stop.loop.request_stop())
    state, history = tiny_fit([stop], epochs=3)
    assert history.epoch == [0] and "val_loss" in history.history
    assert int(state.step) == 3


def test_stop_before_the_first_epoch_and_initial_epoch():
    stop = LambdaCallback(on_train_begin=lambda logs: stop.loop.request_stop())
    state, history = tiny_fit([stop], epochs=3)
    assert history.epoch == [] and int(state.step) == 0
    _, history = tiny_fit(epochs=3, initial_epoch=2)
    assert history.epoch == [2]


def test_swap_request_without_ema_is_an_error():
    control = make_control(ema=False)
    control.request_swap_ema()
    with pytest.raises(ValueError, match="ema=True"):
        control.apply_requests()


def test_evaluate_counts_every_example():
    state, _, eval_step, _ = tiny_parts()
    logs = evaluate(state.params, state.batch_stats, tiny_arrays(21), eval_step, batch_size=8,
                    mesh=make_mesh(jax.devices()[:1]))
    assert 0.0 <= logs["accuracy"] <= 1.0
    assert round(logs["accuracy"] * 21) == pytest.approx(logs["accuracy"] * 21, abs=1e-4)


def test_batch_size_must_divide_devices():
    with pytest.raises(ValueError, match="multiple of the 4 devices"):
        state, train_step, eval_step, schedule = tiny_setup()
        fit(state, tiny_arrays(48), train_step=train_step, eval_step=eval_step,
            schedule=schedule, epochs=1, batch_size=6, verbose=0, mesh=make_mesh())


def test_callers_state_survives_fit():
    # fit donates buffers to its steps; it must work on a copy, not the caller's arrays.
    state, train_step, eval_step, schedule = tiny_setup()
    before = jax.device_get(state.params)
    fit(state, tiny_arrays(48), train_step=train_step, eval_step=eval_step, schedule=schedule,
        epochs=1, batch_size=8, verbose=0, mesh=make_mesh(jax.devices()[:1]))
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.params)):
        np.testing.assert_array_equal(a, b)  # raises "Array has been deleted" without the copy


def test_evaluate_compiles_once_per_eval_step():
    state, _, eval_step, _ = tiny_setup()
    traces = []

    def counting_eval_step(params, batch_stats, batch):
        traces.append(1)  # runs only while jax traces (compiles) the step
        return eval_step(params, batch_stats, batch)

    mesh = make_mesh(jax.devices()[:1])
    first = evaluate(state.params, state.batch_stats, tiny_arrays(21), counting_eval_step,
                     batch_size=8, mesh=mesh)
    second = evaluate(state.params, state.batch_stats, tiny_arrays(21), counting_eval_step,
                      batch_size=8, mesh=mesh)
    assert first == second
    assert len(traces) == 1
