import jax.numpy as jnp
import numpy as np
import optax
import pytest

from convjax.config import OptimConfig
from convjax.optim import learning_rate, lr_scale, make_optimizer, make_schedule, with_lr_scale


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
