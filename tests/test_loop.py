import jax
import numpy as np
import pytest
from fake_loop import attach, make_control, rate, tiny_data, tiny_fit, tiny_parts

from convjax.callbacks import Callback, LambdaCallback
from convjax.config import OptimConfig
from convjax.loop import evaluate, evaluate_sums, fit, predict
from convjax.metrics import host_logs, zero_sums
from convjax.sharding import make_mesh, place_replicated
from helpers import array_batches, tiny_arrays, tiny_setup

ONE = jax.devices()[:1]


def test_fit_learns_and_fills_history():
    state, history = tiny_fit(epochs=6)
    h = history.history
    assert set(h) == {"loss", "accuracy", "learning_rate", "val_loss", "val_accuracy"}
    assert history.epoch == list(range(6)) and len(h["loss"]) == 6
    assert h["loss"][-1] < h["loss"][0]
    assert int(state.step) == 6 * 6  # 48 examples / batch 8


def test_same_seed_same_params_bit_for_bit_and_fit_twice_compiles_once():
    _, steps = tiny_parts()
    a, _ = tiny_fit()
    compiled = steps.train._cache_size()
    b, _ = tiny_fit()
    assert steps.train._cache_size() == compiled == 1  # the second fit reuses the program
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(x, y)
    c, _ = tiny_fit(state=tiny_setup(seed=1)[0], seed=1)
    assert not np.array_equal(jax.tree.leaves(a.params)[0], jax.tree.leaves(c.params)[0])


def test_sharded_over_4_devices_equals_one_device():
    assert len(jax.devices()) == 4, "conftest fakes 4 CPU devices"
    _, steps = tiny_parts()
    train, val = tiny_data()
    runs = []
    for devices in (ONE, jax.devices()):
        mesh = make_mesh(devices)
        runs.append(fit(tiny_setup()[0], array_batches(train, 8, mesh=mesh), steps=steps,
                        epochs=2, validation=array_batches(val, 8, mesh=mesh), verbose=0,
                        mesh=mesh))
    (one, h1), (four, h4) = runs
    assert jax.tree.leaves(four.params)[0].sharding.num_devices == 4
    for x, y in zip(jax.tree.leaves(one.params), jax.tree.leaves(four.params)):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(h1.history["val_loss"], h4.history["val_loss"], rtol=1e-4)


def test_each_of_4_devices_holds_a_quarter_of_every_batch():
    batch = next(array_batches(tiny_data()[0], 8, mesh=make_mesh()).train_batches(0))
    for key in ("image", "label"):
        shards = batch[key].addressable_shards
        assert len(shards) == 4 and all(s.data.shape[0] == 2 for s in shards)


class Recorder(Callback):
    def __init__(self, batch_logs_every=0):
        self.batch_logs_every = batch_logs_every
        self.batch_logs = []

    def on_train_batch_end(self, batch, logs=None):
        self.batch_logs.append(dict(logs))


def test_batch_logs_only_when_asked_and_one_step_late():
    rec = Recorder(batch_logs_every=1)
    tiny_fit([rec], epochs=1)
    # The reference: the same program in a bare loop, read after every step.
    state, steps = tiny_parts()
    mesh = make_mesh(ONE)
    state, sums = place_replicated(state, mesh), place_replicated(zero_sums(), mesh)
    expected = []
    for batch in array_batches(tiny_data()[0], 8, mesh=mesh).train_batches(0):
        state, sums = steps.train(state, sums, batch)
        expected.append(host_logs(jax.device_get(sums)))
    assert rec.batch_logs == [{}, *expected[:-1]]  # batch k sees the sums through k-1

    sparse = Recorder(batch_logs_every=3)
    tiny_fit([sparse], epochs=1)
    assert [i for i, logs in enumerate(sparse.batch_logs) if logs] == [2, 5]


def test_fit_makes_no_implicit_transfer():
    # Every host-to-device copy in the loop is an explicit device_put; an implicit one (numpy
    # sums or a Python number handed to the jitted step) raises. (On the CPU backend JAX
    # does not guard device-to-host reads, so those are checked by reading the code.)
    tiny_parts(), tiny_data()  # setup (initialising the model) is not the loop
    with jax.transfer_guard("disallow"):
        _, history = tiny_fit([Recorder(batch_logs_every=2)], epochs=2)
    assert len(history.epoch) == 2


class StopAfter(Callback):
    def __init__(self, epoch):
        self.stop_epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.stop_epoch:
            self.loop.request_stop()


class SetRate(Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.loop.request_learning_rate(1e-4)


class SeesLearningRate(Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.seen = self.loop.learning_rate


def test_requests_are_applied_in_order():
    seer = SeesLearningRate()
    state, history = tiny_fit([StopAfter(1), SetRate(), seer], epochs=5)
    assert history.epoch == [0, 1]
    assert history.history["learning_rate"] == pytest.approx([1e-3, 1e-4])
    assert seer.seen == pytest.approx(1e-4)  # the next callback already sees the new rate


def test_a_callback_cannot_assign_the_state():
    class Assigns(Callback):
        def on_train_begin(self, logs=None):
            self.loop.state = None

    with pytest.raises(AttributeError):
        tiny_fit([Assigns()], epochs=1)


def _fit_with_schedule(optim: OptimConfig, epochs: int):
    # 48 examples, batch 8: 6 steps per epoch; tiny_setup's schedules assume 10 per epoch.
    from convjax.models import CNN
    from convjax.optim import make_optimizer, make_schedule
    from convjax.steps import make_steps
    from convjax.train_state import init_train_state
    from helpers import TINY_MODEL

    schedule = make_schedule(optim, 6, 6 * epochs)
    tx = make_optimizer(optim, schedule)
    model = CNN(TINY_MODEL)
    state = init_train_state(model, tx, jax.random.key(0), (8, 8, 3))
    mesh = make_mesh(ONE)
    _, history = fit(state, array_batches(tiny_data()[0], 8, mesh=mesh),
                     steps=make_steps(model=model, tx=tx), epochs=epochs, verbose=0, mesh=mesh)
    return schedule, history.history["learning_rate"]


def test_logged_rate_is_the_rate_the_epochs_updates_used_piecewise():
    optim = OptimConfig(learning_rate=1e-2, schedule="piecewise", boundaries=(1.0,),
                        scales=(0.1,))
    _, logged = _fit_with_schedule(optim, 2)
    assert logged == pytest.approx([1e-2, 1e-3])  # epoch 0 trained at 1e-2 throughout


def test_logged_rate_warmup_cosine_last_epoch_is_not_zero():
    optim = OptimConfig(learning_rate=1e-2, schedule="warmup_cosine", warmup_epochs=1.0)
    schedule, logged = _fit_with_schedule(optim, 2)
    assert logged == pytest.approx([float(schedule(5)), float(schedule(11))])
    assert logged[1] > 0


def test_setting_a_rate_while_the_schedule_is_at_zero_is_a_clear_error():
    control = make_control(lr=0.0)
    cbs = attach([LambdaCallback(on_epoch_begin=lambda e, logs: cbs.view.request_learning_rate(
        1e-3))], control)
    with pytest.raises(ValueError, match="schedule is at 0"):
        cbs.call("on_epoch_begin", 0, {})


def test_set_rate_scales_the_optimizer_rate():
    control = make_control(lr=0.1)
    cbs = attach([LambdaCallback(on_epoch_begin=lambda e, logs: cbs.view.request_learning_rate(
        0.025))], control)
    cbs.call("on_epoch_begin", 0, {})
    assert rate(control) == pytest.approx(0.025)


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


def test_an_epoch_that_trained_nothing_logs_no_training_metric():
    stop = LambdaCallback(on_epoch_begin=lambda e, logs: e == 1 and stop.loop.request_stop())
    state, history = tiny_fit([stop], epochs=3)
    assert history.epoch == [0, 1] and int(state.step) == 6
    assert len(history.history["loss"]) == 1  # epoch 1 logged val_* only, no loss: 0.0
    assert len(history.history["val_loss"]) == 2


def test_stop_before_the_first_epoch_and_initial_epoch():
    stop = LambdaCallback(on_train_begin=lambda logs: stop.loop.request_stop())
    state, history = tiny_fit([stop], epochs=3)
    assert history.epoch == [] and int(state.step) == 0
    _, history = tiny_fit(epochs=3, initial_epoch=2)
    assert history.epoch == [2]


def test_swap_request_without_ema_is_an_error():
    control = make_control(ema=False)
    cbs = attach([LambdaCallback(on_epoch_end=lambda e, logs: cbs.view.request_swap_ema())],
                 control)
    with pytest.raises(ValueError, match="ema=True"):
        cbs.call("on_epoch_end", 0, {})


def test_two_swap_requests_swap_twice():
    control = make_control(ema=True)
    before = jax.device_get(control.state.params)
    swap = lambda e, logs: (cbs.view.request_swap_ema(), cbs.view.request_swap_ema())  # noqa: E731
    cbs = attach([LambdaCallback(on_epoch_end=swap)], control)
    cbs.call("on_epoch_end", 0, {})
    np.testing.assert_array_equal(control.state.params["dense"]["bias"], before["dense"]["bias"])


def test_evaluate_counts_every_example_once_and_compiles_once():
    state, steps = tiny_setup()
    mesh = make_mesh(ONE)
    data = tiny_arrays(21)
    first = evaluate(state.params, state.batch_stats, array_batches(data, 8, mesh=mesh), steps,
                     mesh)
    second = evaluate(state.params, state.batch_stats, array_batches(data, 8, mesh=mesh), steps,
                      mesh)
    assert first == second and steps.eval._cache_size() == 1
    probs = predict(state.params, state.batch_stats, data.images, steps, batch_size=8, mesh=mesh)
    correct = int(np.sum(probs.argmax(-1) == data.labels))
    assert first["accuracy"] == pytest.approx(correct / 21)  # 21, not 24: padding excluded


def test_predict_compiles_once_for_a_ragged_last_batch():
    state, steps = tiny_setup()
    mesh = make_mesh(ONE)
    images = tiny_arrays(21).images
    probs = predict(state.params, state.batch_stats, images, steps, batch_size=8, mesh=mesh)
    again = predict(state.params, state.batch_stats, images[:13], steps, batch_size=8, mesh=mesh)
    assert probs.shape == (21, 3) and again.shape == (13, 3)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(again, probs[:13])
    assert steps.predict._cache_size() == 1


def test_callers_state_survives_fit_on_4_devices():
    _, steps = tiny_parts()
    state = tiny_setup()[0]
    before = jax.device_get(state.params)
    mesh = make_mesh()
    fit(state, array_batches(tiny_data()[0], 8, mesh=mesh), steps=steps, epochs=1, verbose=0,
        mesh=mesh)
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.params)):
        np.testing.assert_array_equal(a, b)  # "Array has been deleted" when fit aliased it


def test_callers_state_survives_fit():
    # fit donates buffers to its steps; it must work on a copy, not the caller's arrays.
    state, _ = tiny_parts()
    before = jax.device_get(state.params)
    tiny_fit(state=state, epochs=1)
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.params)):
        np.testing.assert_array_equal(a, b)  # raises "Array has been deleted" without the copy


def test_evaluation_sums_the_confusion_matrix_and_logs_top_k_as_scalars():
    # 21 examples in batches of 8 over 4 devices: 3 padding examples that must not count.
    state, steps = tiny_setup(num_classes=3, top_k=2)
    mesh = make_mesh()
    data = tiny_arrays(21)
    sums = evaluate_sums(state.params, state.batch_stats, array_batches(data, 8, mesh=mesh),
                         steps, mesh)
    assert sums["confusion"].sum() == sums["count"] == 21
    logs = host_logs(sums)
    assert np.trace(sums["confusion"]) / 21 == pytest.approx(logs["accuracy"])
    probs = predict(state.params, state.batch_stats, data.images, steps, batch_size=8, mesh=mesh)
    top2 = np.argsort(-probs, axis=-1)[:, :2]
    assert logs["top_k_accuracy"] == pytest.approx(np.mean(np.any(top2 == data.labels[:, None],
                                                                  axis=-1)))
    train, val = tiny_data()
    _, history = fit(state, array_batches(train, 8, mesh=mesh), steps=steps, epochs=1,
                     validation=array_batches(val, 8, mesh=mesh), verbose=0, mesh=mesh)
    assert set(history.history) == {"loss", "accuracy", "learning_rate", "val_loss",
                                    "val_accuracy", "val_top_k_accuracy"}
    assert all(isinstance(v[0], float) for v in history.history.values())


class ConfusionSeen(Callback):
    """What `self.loop.validation_confusion` holds at each event that can read it."""

    def __init__(self):
        self.at_begin, self.at_test_end, self.at_epoch_end = [], [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.at_begin.append(self.loop.validation_confusion)

    def on_test_end(self, logs=None):
        self.at_test_end.append(self.loop.validation_confusion)

    def on_epoch_end(self, epoch, logs=None):
        self.at_epoch_end.append(self.loop.validation_confusion)


def test_each_validation_puts_its_confusion_matrix_on_the_view():
    seen = ConfusionSeen()
    _, history = tiny_fit([seen], epochs=2, num_classes=3)
    assert seen.at_begin[0] is None  # no validation yet
    val_count = len(tiny_data()[1])  # 20: the padding of the last batch (of 8) not counted
    for epoch, matrix in enumerate(seen.at_epoch_end):
        assert matrix.shape == (3, 3) and matrix.sum() == val_count
        # Rows: true class; so each row holds that class's examples.
        np.testing.assert_array_equal(matrix.sum(axis=1),
                                      np.bincount(tiny_data()[1].labels, minlength=3))
        assert np.trace(matrix) / val_count == pytest.approx(
            history.history["val_accuracy"][epoch])
        assert seen.at_test_end[epoch] is matrix  # set before on_test_end, kept to epoch end
        assert seen.at_begin[epoch + 1:epoch + 2] in ([], [matrix])  # kept until the next one
        with pytest.raises(ValueError, match="read-only"):
            matrix[0, 0] = 1.0  # one copy shared by every callback: none may change it
    assert all(isinstance(v, float) for values in history.history.values() for v in values)


def test_no_confusion_matrix_when_the_steps_do_not_count_one():
    seen = ConfusionSeen()
    tiny_fit([seen], epochs=1)  # make_steps(num_classes=0)
    assert seen.at_epoch_end == [None]
