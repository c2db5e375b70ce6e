import jax
import numpy as np
import pytest
from fake_loop import attach, make_control, tiny_fit, weight

from convjax.callbacks import LambdaCallback, SwapEMAWeights


def test_validation_uses_the_ema_and_nothing_stays_swapped():
    control = make_control(ema=True)
    cbs = attach([SwapEMAWeights()], control)
    cbs.call("on_train_begin", {})
    cbs.call("on_test_begin", {})
    assert control.eval_with_ema
    cbs.call("on_test_end", {})
    assert not control.eval_with_ema and weight(control) == 0.0  # params never touched


def test_swap_on_epoch_puts_the_ema_in_params_between_epochs():
    control = make_control(ema=True)
    seen = []
    after = LambdaCallback(on_epoch_end=lambda e, logs: seen.append(weight(control)))
    swap = SwapEMAWeights(swap_on_epoch=True)
    cbs = attach([swap, after], control)
    cbs.call("on_train_begin", {})
    cbs.call("on_epoch_end", 0, {})
    assert seen == [100.0]  # the EMA (bias + 100 in make_state) during on_epoch_end
    cbs.call("on_epoch_begin", 1, {})
    assert weight(control) == 0.0 and float(control.state.ema_params["dense"]["bias"][0]) == 100
    cbs.call("on_epoch_end", 1, {})
    cbs.call("on_train_end", {})
    assert weight(control) == 0.0 and not swap.swapped  # swapped back at the end


def test_needs_ema_weights():
    cbs = attach([SwapEMAWeights()], make_control(ema=False))
    with pytest.raises(ValueError, match="ema=True"):
        cbs.call("on_train_begin", {})


def test_in_fit_validates_with_the_ema_and_returns_unswapped_params():
    plain_state, plain = tiny_fit([], epochs=2, ema=0.9)
    state, history = tiny_fit([SwapEMAWeights(swap_on_epoch=True)], epochs=2, ema=0.9)
    for x, y in zip(jax.tree.leaves(state.params), jax.tree.leaves(plain_state.params)):
        np.testing.assert_array_equal(x, y)  # swapping never changed training
    assert history.history["loss"] == plain.history["loss"]
    assert history.history["val_loss"] != plain.history["val_loss"]  # validated with the EMA
    assert not np.array_equal(jax.tree.leaves(state.ema_params)[0],
                              jax.tree.leaves(state.params)[0])
