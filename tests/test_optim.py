import re

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from convjax.config import OptimConfig
from convjax.optim import learning_rate, lr_scale, make_optimizer, make_schedule, with_lr_scale
from helpers import require_module


@pytest.mark.parametrize("schedule, at_0, at_end", [
    ("constant", 0.1, 0.1),
    ("cosine", 0.1, 0.0),
    ("warmup_cosine", 0.0, 0.0),
    ("exponential", 0.1, 0.1 * 0.5**10),
])
def test_schedules(schedule, at_0, at_end):
    cfg = OptimConfig(learning_rate=0.1, schedule=schedule, decay_rate=0.5, warmup_epochs=2)
    fn = make_schedule(cfg, steps_per_epoch=10, total_steps=100)
    np.testing.assert_allclose(float(fn(0)), at_0, atol=1e-7)
    np.testing.assert_allclose(float(fn(100)), at_end, atol=1e-7)
    if schedule == "warmup_cosine":
        np.testing.assert_allclose(float(fn(20)), 0.1, rtol=1e-6)  # peak after warmup


def test_piecewise_in_epochs():
    cfg = OptimConfig(learning_rate=1.0, schedule="piecewise", boundaries=(2, 5), scales=(0.1, 0.1))
    fn = make_schedule(cfg, steps_per_epoch=10, total_steps=100)
    assert [round(float(fn(s)), 6) for s in (19, 20, 49, 50)] == [1.0, 0.1, 0.1, 0.01]
    with pytest.raises(ValueError, match="same length"):
        make_schedule(OptimConfig(schedule="piecewise", boundaries=(1,)), 10, 100)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_the_rate_and_its_scale_live_in_the_optimizer_state(name):
    cfg = OptimConfig(name=name, learning_rate=0.5)
    tx = make_optimizer(cfg, make_schedule(cfg, 10, 100))
    state = tx.init({"w": jnp.ones(3)})
    assert float(learning_rate(state)) == 0.5 and float(lr_scale(state)) == 1.0
    state = with_lr_scale(state, 0.25)
    assert float(learning_rate(state)) == 0.125


def test_the_rate_is_the_one_the_last_update_used():
    cfg = OptimConfig(learning_rate=1.0, schedule="piecewise", boundaries=(0.2,), scales=(0.1,))
    tx = make_optimizer(cfg, make_schedule(cfg, 10, 100))  # 1.0 for steps 0-1, then 0.1
    params = {"w": jnp.ones(3)}
    state, used = tx.init(params), []
    for _ in range(3):
        _, state = tx.update(params, state, params)
        used.append(round(float(learning_rate(state)), 6))
    assert used == [1.0, 1.0, 0.1]


def test_rate_and_scale_reach_inside_multi_transform():
    cfg = OptimConfig(learning_rate=0.5)
    inner = make_optimizer(cfg, make_schedule(cfg, 10, 100))
    tx = optax.multi_transform({"train": inner, "freeze": optax.set_to_zero()},
                               {"a": "train", "b": "freeze"})
    state = with_lr_scale(tx.init({"a": jnp.ones(2), "b": jnp.ones(2)}), 0.25)
    assert float(learning_rate(state)) == 0.125


def test_unknown_names_are_errors():
    with pytest.raises(ValueError, match="optim.name"):
        make_optimizer(OptimConfig(name="lion"), optax.constant_schedule(1.0))
    with pytest.raises(ValueError, match="optim.schedule"):
        make_schedule(OptimConfig(schedule="linear"), 10, 100)


def _sgd(**kw):
    cfg = OptimConfig(name="sgd", momentum=0.0, learning_rate=1.0, **kw)
    return make_optimizer(cfg, make_schedule(cfg, 10, 100))


GRADS = {"a": jnp.array([3.0, 4.0]), "b": jnp.array([0.3, 0.4])}  # norms 5 and 0.5


def test_clipnorm_clips_each_weight_on_its_own_by_hand():
    # Keras clipnorm=1: a (norm 5) -> a / 5; b (norm 0.5 < 1) unchanged. SGD at rate 1:
    # the update is minus the clipped gradient.
    tx = _sgd(clipnorm=1.0)
    updates, _ = tx.update(GRADS, tx.init(GRADS), GRADS)
    np.testing.assert_allclose(updates["a"], [-0.6, -0.8], rtol=1e-6)
    np.testing.assert_allclose(updates["b"], [-0.3, -0.4], rtol=1e-6)


def test_global_clipnorm_scales_all_weights_by_one_factor_by_hand():
    tx = _sgd(global_clipnorm=1.0)
    updates, _ = tx.update(GRADS, tx.init(GRADS), GRADS)
    norm = np.sqrt(25 + 0.25)
    np.testing.assert_allclose(updates["a"], -np.array([3.0, 4.0]) / norm, rtol=1e-6)
    np.testing.assert_allclose(updates["b"], -np.array([0.3, 0.4]) / norm, rtol=1e-6)


def test_accumulation_updates_every_k_with_the_rate_of_the_windows_last_batch():
    # 1.0 for batches 0-2, then 0.1. Two batches per update: update 0 covers batches 0-1
    # (rate 1.0), update 1 batches 2-3, whose last batch, 3, Keras's schedule reads: 0.1.
    tx = _sgd(schedule="piecewise", boundaries=(0.3,), scales=(0.1,),
              gradient_accumulation_steps=2)
    params = {"w": jnp.zeros(2)}
    state, rates, moved = tx.init(params), [], []
    for g in (1.0, 3.0, 1.0, 1.0):
        updates, state = tx.update({"w": jnp.full(2, g)}, state, params)
        rates.append(round(float(learning_rate(state)), 6))
        moved.append(float(updates["w"][0]))
    assert moved == pytest.approx([0.0, -2.0, 0.0, -0.1])  # mean gradient 2, then 1
    assert rates == [1.0, 1.0, 1.0, 0.1]  # the rate of the latest update (first: the next)
    state = with_lr_scale(state, 0.5)  # lr_scale reaches inside MultiSteps
    assert float(lr_scale(state)) == 0.5 and float(learning_rate(state)) == pytest.approx(0.05)


def test_clipping_and_accumulation_match_keras_sgd():
    keras = require_module("keras")  # conftest sets KERAS_BACKEND=jax
    rng = np.random.default_rng(0)
    grads = [[rng.normal(0, s, 3).astype(np.float32), rng.normal(0, 0.1, 2).astype(np.float32)]
             for s in (2.0, 0.1, 3.0, 0.2, 1.0, 0.5)]  # mean norms above and below 1
    for clip in ({"clipnorm": 1.0}, {"global_clipnorm": 1.0}):
        schedule = keras.optimizers.schedules.PiecewiseConstantDecay([2], [1.0, 0.1])
        ref = keras.optimizers.SGD(learning_rate=schedule, gradient_accumulation_steps=2, **clip)
        weights = [keras.Variable(np.zeros(3, np.float32)), keras.Variable(np.zeros(2, np.float32))]
        ref.build(weights)
        tx = _sgd(schedule="piecewise", boundaries=(0.3,), scales=(0.1,),
                  gradient_accumulation_steps=2, **clip)
        params = {"a": jnp.zeros(3), "b": jnp.zeros(2)}
        state = tx.init(params)
        for g in grads:
            ref.apply([keras.ops.convert_to_tensor(x) for x in g], weights)
            updates, state = tx.update({"a": jnp.asarray(g[0]), "b": jnp.asarray(g[1])}, state)
            params = optax.apply_updates(params, updates)
            np.testing.assert_allclose(params["a"], np.asarray(weights[0].value), atol=1e-6)
            np.testing.assert_allclose(params["b"], np.asarray(weights[1].value), atol=1e-6)


@pytest.mark.parametrize("overrides, message", [
    ({"clipnorm": 1.0, "global_clipnorm": 1.0}, "optim.clipnorm: must be 0 when optim.global"),
    ({"clipnorm": -1.0}, "optim.clipnorm: must be >= 0"),
    ({"global_clipnorm": -1.0}, "optim.global_clipnorm: must be >= 0"),
    ({"gradient_accumulation_steps": 0}, "optim.gradient_accumulation_steps: must be >= 1"),
])
def test_gradient_knobs_are_checked_naming_the_key(overrides, message):
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        OptimConfig(**overrides)


def test_default_optimizer_state_keeps_its_structure():
    # No clipping, no accumulation: the state saved by earlier runs still restores.
    cfg = OptimConfig()
    state = make_optimizer(cfg, make_schedule(cfg, 10, 100)).init({"w": jnp.ones(2)})
    assert len(state) == 2 and float(lr_scale(state)) == 1.0
