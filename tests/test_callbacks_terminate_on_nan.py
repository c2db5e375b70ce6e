import math

import jax
import numpy as np
import pytest
from fake_loop import attach, fresh_state, make_control, tiny_fit

from convjax.callbacks import LambdaCallback, TerminateOnNaN
from convjax.optim import with_lr_scale


def test_stops_on_a_nan_loss_in_batch_logs():
    control = make_control()
    cbs = attach([TerminateOnNaN()], control)
    cbs.call("on_train_batch_end", 0, {"loss": 1.0})
    assert not control.stop_training
    cbs.call("on_train_batch_end", 1, {"loss": float("nan")})
    assert control.stop_training


def test_stops_on_skipped_updates_even_when_the_loss_is_finite():
    control = make_control()
    cbs = attach([TerminateOnNaN()], control)
    control.nonfinite_steps = 1  # a non-finite gradient, counted by the train step
    cbs.call("on_epoch_end", 0, {"loss": 1.0})
    assert control.stop_training


def test_raise_error_raises_at_once():
    cbs = attach([TerminateOnNaN(raise_error=True)])
    with pytest.raises(RuntimeError, match="NaN or Inf loss"):
        cbs.call("on_train_batch_end", 4, {"loss": float("inf")})


def exploding_state():
    # A huge learning-rate scale: the first update is finite but blows the weights up, so
    # every later loss is non-finite and the step keeps the state of that first update.
    state = fresh_state()
    return state.replace(opt_state=with_lr_scale(state.opt_state, 1e30))


def test_in_fit_stops_gracefully_with_the_last_good_state_and_runs_cleanup():
    ended = []
    cleanup = LambdaCallback(on_train_end=lambda logs: ended.append(logs))
    state, history = tiny_fit([TerminateOnNaN(check_every=1), cleanup], epochs=3,
                              state=exploding_state())
    assert history.epoch == [0]  # stopped in the first epoch
    assert int(state.step) == 1  # only the first (finite) update was applied
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))
    assert len(ended) == 1 and math.isnan(ended[0]["loss"])


def test_in_fit_without_batch_checks_it_stops_at_the_epoch_end_with_no_per_step_sync():
    start = exploding_state()
    with jax.transfer_guard("disallow"):  # no implicit host<->device copy in the loop
        state, history = tiny_fit([TerminateOnNaN()], epochs=3, state=start)
    assert history.epoch == [0] and int(state.step) == 1


def test_in_fit_raise_error_skips_on_train_end():
    ended = []
    with pytest.raises(RuntimeError):
        tiny_fit([TerminateOnNaN(raise_error=True, check_every=1),
                  LambdaCallback(on_train_end=lambda logs: ended.append(1))],
                 epochs=2, state=exploding_state())
    assert ended == []
