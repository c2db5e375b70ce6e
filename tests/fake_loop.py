"""Driving callbacks in tests: a real `LoopControl` over a hand-made state (no training), and
a tiny `fit` whose compiled steps are shared by every test of the session.

`fit` keeps its jitted steps per step function, so handing every test the same
`train_step`/`eval_step` objects means the tiny CNN compiles once per session, not per test.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax

from convjax.callbacks.base import Callback, CallbackList
from convjax.callbacks.control import LoopControl
from convjax.loop import fit
from convjax.sharding import make_mesh
from convjax.train_state import TrainState
from helpers import tiny_arrays, tiny_setup


def make_state(ema: bool = False) -> TrainState:
    params = {"dense": {"kernel": jnp.arange(6.0).reshape(2, 3), "bias": jnp.zeros(3)}}
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, batch_stats={}, opt_state=(),
        rng=jax.random.key(0), lr_scale=jnp.ones((), jnp.float32),
        ema_params=jax.tree.map(lambda x: x + 100.0, params) if ema else None,
    )


def make_control(lr: float = 0.1, epochs: int = 10, steps_per_epoch: int = 4,
                 ema: bool = False) -> LoopControl:
    """A LoopControl as `fit` makes it, over a constant schedule at `lr`."""
    return LoopControl(make_state(ema), optax.constant_schedule(lr), epochs, steps_per_epoch)


def attach(callbacks: Sequence[Callback], control: LoopControl | None = None) -> CallbackList:
    """Connects callbacks to `control` as `fit` does; drive them with `cbs.call(...)`."""
    control = control or make_control()
    cbs = CallbackList(list(callbacks), control)
    control.callbacks = cbs
    return cbs


def set_weight(control: LoopControl, value: float) -> None:
    """Marks the weights with `value` (the bias), like Keras's tests' DummyModel."""
    params = {"dense": {"kernel": control.state.params["dense"]["kernel"],
                        "bias": jnp.full(3, value, jnp.float32)}}
    control.state = control.state.replace(params=params)


def weight(control: LoopControl) -> float:
    return float(control.state.params["dense"]["bias"][0])


@functools.lru_cache(maxsize=4)
def tiny_parts(ema: float = 0.0):
    """(state, train_step, eval_step, schedule), built once per `ema` and shared."""
    return tiny_setup(ema=ema)


@functools.lru_cache(maxsize=1)
def tiny_data():
    return tiny_arrays(48), tiny_arrays(20, seed=1)


def fresh_state(ema: float = 0.0) -> TrainState:
    """A copy of the shared initial state (fit donates the buffers it is given)."""
    return jax.tree.map(lambda x: x.copy(), tiny_parts(ema)[0])


def tiny_fit(callbacks: Sequence[Callback] = (), epochs: int = 2, ema: float = 0.0,
             state: TrainState | None = None, **kwargs):
    """48 training examples in batches of 8 (6 steps per epoch), 20 validation examples."""
    _, train_step, eval_step, schedule = tiny_parts(ema)
    train, val = tiny_data()
    return fit(
        fresh_state(ema) if state is None else state, train, train_step=train_step,
        eval_step=eval_step, schedule=schedule, epochs=epochs, batch_size=8,
        validation=val, eval_batch_size=8, callbacks=callbacks, verbose=0,
        mesh=make_mesh(jax.devices()[:1]), **kwargs,
    )
