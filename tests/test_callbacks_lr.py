import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from fake_loop import attach, make_control, rate, tiny_fit

from convjax.callbacks import LearningRateScheduler, ReduceLROnPlateau
from convjax.loop import _Run
from convjax.optim import lr_scale, scale_by_lr_scale
from convjax.train_state import TrainState


def run_epochs(callback, values, control=None, monitor="val_loss"):
    """Ends one epoch per value; returns the learning rate after each epoch."""
    control = control or make_control(lr=0.1)
    cbs = attach([callback], control)
    cbs.call("on_train_begin", {})
    rates = []
    for epoch, value in enumerate(values):
        cbs.call("on_epoch_end", epoch, {monitor: value})
        rates.append(rate(control))
    return rates


def test_keras_cooldown_vector_two_reductions_in_four_epochs():
    # Keras test_cooldown: min_delta=100 means nothing after epoch 0 improves.
    reduce = ReduceLROnPlateau(patience=1, factor=0.1, min_delta=100, cooldown=2)
    rates = run_epochs(reduce, [1.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(rates, [0.1, 0.01, 0.01, 0.001], rtol=1e-6)


def test_keras_min_lr_vector():
    reduce = ReduceLROnPlateau(patience=1, factor=0.1, min_delta=10, min_lr=0.005)
    rates = run_epochs(reduce, [1.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(rates, [0.1, 0.01, 0.005, 0.005], rtol=1e-6)


def test_patience_zero_reduces_at_every_epoch_without_improvement():
    reduce = ReduceLROnPlateau(patience=0, factor=0.5)
    rates = run_epochs(reduce, [1.0, 0.5, 0.6, 0.7, 0.4])
    np.testing.assert_allclose(rates, [0.1, 0.1, 0.05, 0.025, 0.025], rtol=1e-6)


def test_negative_metrics_are_compared_by_value_not_magnitude():
    # Losses going -1, -2, -3 improve; -2.5 after -3 does not.
    reduce = ReduceLROnPlateau(patience=1, factor=0.5, min_delta=0)
    rates = run_epochs(reduce, [-1.0, -2.0, -3.0, -2.5])
    np.testing.assert_allclose(rates, [0.1, 0.1, 0.1, 0.05], rtol=1e-6)
    up = ReduceLROnPlateau(monitor="val_reward", mode="max", patience=1, factor=0.5)
    rates = run_epochs(up, [-3.0, -2.0, -2.5], monitor="val_reward")
    np.testing.assert_allclose(rates, [0.1, 0.1, 0.05], rtol=1e-6)


def test_factor_of_one_or_more_is_an_error():
    with pytest.raises(ValueError, match="factor >= 1.0"):
        ReduceLROnPlateau(factor=1.0)


def test_scales_an_optax_schedule_instead_of_replacing_it():
    schedule = optax.linear_schedule(0.1, 0.0, 100)
    tx = optax.chain(optax.inject_hyperparams(optax.sgd)(learning_rate=schedule),
                     scale_by_lr_scale())
    params = {"w": jnp.ones(2)}
    opt_state = tx.init(params)
    for _ in range(51):  # the last update used schedule(50) = 0.05
        _, opt_state = tx.update(params, opt_state, params)
    state = TrainState(step=jnp.int32(51), params=params, batch_stats={}, opt_state=opt_state,
                       rng=jax.random.key(0), ema_params=None)
    control = _Run(state, epochs=3, steps_per_epoch=4)
    run_epochs(ReduceLROnPlateau(patience=0, factor=0.5), [1.0, 1.0], control)
    assert float(lr_scale(control.state.opt_state)) == pytest.approx(0.5)
    opt_state = control.state.opt_state
    for _ in range(25):  # later updates follow the schedule, at half its height
        _, opt_state = tx.update(params, opt_state, params)
    assert rate(_with(control, opt_state)) == \
        pytest.approx(float(schedule(75)) * 0.5)


def _with(control, opt_state):
    control.state = control.state.replace(opt_state=opt_state)
    return control


def test_state_round_trips_for_resume():
    reduce = ReduceLROnPlateau(patience=2, cooldown=1)
    run_epochs(reduce, [1.0, 1.0])
    other = ReduceLROnPlateau(patience=2, cooldown=1)
    other.load_state_dict(reduce.state_dict())
    assert (other.best, other.wait, other.cooldown_counter) == (1.0, 1, 0)


def begin_epochs(callback, epochs, control=None):
    control = control or make_control(lr=0.01)
    cbs = attach([callback], control)
    cbs.call("on_train_begin", {})
    rates = []
    for epoch in epochs:
        cbs.call("on_epoch_begin", epoch, {})
        rates.append(rate(control))
    return rates


def test_scheduler_with_epoch_and_rate_as_in_the_keras_docstring():
    def schedule(epoch, lr):
        return lr if epoch < 10 else lr * float(np.exp(-0.1))

    rates = begin_epochs(LearningRateScheduler(schedule), range(15))
    assert rates[-1] == pytest.approx(0.00607, abs=1e-5)


def test_scheduler_with_epoch_only_and_output_type_check():
    rates = begin_epochs(LearningRateScheduler(lambda epoch: 0.1 / (epoch + 1)), range(3))
    np.testing.assert_allclose(rates, [0.1, 0.05, 0.1 / 3], rtol=1e-6)
    with pytest.raises(ValueError, match="should be a float"):
        begin_epochs(LearningRateScheduler(lambda epoch: 1), [0])


def test_scheduler_applies_an_epoch_once_when_resumed_inside_it():
    scheduler = LearningRateScheduler(lambda epoch, lr: lr * 0.5)
    control = make_control(lr=0.1)
    begin_epochs(scheduler, [0, 1], control)
    saved = scheduler.state_dict()
    resumed = LearningRateScheduler(lambda epoch, lr: lr * 0.5)
    cbs = attach([resumed], control)
    cbs.call("on_train_begin", {})
    resumed.load_state_dict(saved)
    cbs.call("on_epoch_begin", 1, {})  # the resumed run begins epoch 1 again
    assert rate(control) == pytest.approx(0.025)


def test_in_fit_reduce_on_plateau_lowers_the_logged_rate_from_the_next_epoch():
    reduce = ReduceLROnPlateau(monitor="val_loss", min_delta=10.0, patience=1, factor=0.5)
    state, history = tiny_fit([reduce], epochs=3)
    np.testing.assert_allclose(history.history["learning_rate"], [1e-3, 1e-3, 5e-4], rtol=1e-5)
    assert float(lr_scale(state.opt_state)) == pytest.approx(0.25)  # reduced again after ep. 2
