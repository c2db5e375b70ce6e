"""Driving callbacks in tests: the loop's real run record, view and request handling over a
hand-made state (no training), and a tiny `fit` whose compiled steps are shared by every
test of the session (one `Steps` object = one compilation)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax

from convjax.callbacks.base import Callback, CallbackList, LoopView
from convjax.loop import _apply, _Run, fit
from convjax.optim import learning_rate, scale_by_lr_scale
from convjax.sharding import make_mesh
from convjax.train_state import TrainState
from helpers import array_batches, tiny_arrays, tiny_setup


def make_state(ema: bool = False, lr: float = 0.1) -> TrainState:
    params = {"dense": {"kernel": jnp.arange(6.0).reshape(2, 3), "bias": jnp.zeros(3)}}
    tx = optax.chain(optax.inject_hyperparams(optax.sgd)(learning_rate=lr), scale_by_lr_scale())
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, batch_stats={}, opt_state=tx.init(params),
        rng=jax.random.key(0),
        ema_params=jax.tree.map(lambda x: x + 100.0, params) if ema else None,
    )


def make_control(lr: float = 0.1, epochs: int = 10, steps_per_epoch: int = 4,
                 ema: bool = False) -> _Run:
    """The loop's run record as `fit` makes it, over an SGD optimizer at rate `lr`."""
    return _Run(make_state(ema, lr), epochs, steps_per_epoch)


def attach(callbacks: Sequence[Callback], control: _Run | None = None) -> CallbackList:
    """Connects callbacks to `control` as `fit` does; drive them with `cbs.call(...)`."""
    control = control or make_control()
    view = LoopView(control)
    return CallbackList(list(callbacks), view,
                        lambda: [_apply(control, r) for r in view.take_requests()])


def rate(control: _Run) -> float:
    return float(learning_rate(control.state.opt_state))


def set_weight(control: _Run, value: float) -> None:
    """Marks the weights with `value` (the bias), like Keras's tests' DummyModel."""
    params = {"dense": {"kernel": control.state.params["dense"]["kernel"],
                        "bias": jnp.full(3, value, jnp.float32)}}
    control.state = control.state.replace(params=params)


def weight(control: _Run) -> float:
    return float(control.state.params["dense"]["bias"][0])


def tiny_parts(ema: float = 0.0, num_classes: int = 0):
    """(state, steps), built once per (`ema`, `num_classes`) and shared, so the tiny CNN
    compiles once; `num_classes=3` makes evaluation count the confusion matrix."""
    return _tiny_parts(float(ema), int(num_classes))


@functools.lru_cache(maxsize=4)
def _tiny_parts(ema: float, num_classes: int):
    return tiny_setup(ema=ema, num_classes=num_classes)


@functools.lru_cache(maxsize=1)
def tiny_data():
    return tiny_arrays(48), tiny_arrays(20, seed=1)


def fresh_state(ema: float = 0.0) -> TrainState:
    """A copy of the shared initial state (fit donates the buffers it is given)."""
    return jax.tree.map(lambda x: x.copy(), tiny_parts(ema)[0])


def tiny_fit(callbacks: Sequence[Callback] = (), epochs: int = 2, ema: float = 0.0,
             state: TrainState | None = None, seed: int = 0, num_classes: int = 0, **kwargs):
    """48 training examples in batches of 8 (6 steps per epoch), 20 validation examples;
    `num_classes=3` counts the validation confusion matrix."""
    _, steps = tiny_parts(ema, num_classes)
    train, val = tiny_data()
    mesh = make_mesh(jax.devices()[:1])
    return fit(
        fresh_state(ema) if state is None else state,
        array_batches(train, 8, seed=seed, mesh=mesh), steps=steps, epochs=epochs,
        validation=array_batches(val, 8, mesh=mesh), callbacks=callbacks, verbose=0,
        mesh=mesh, **kwargs,
    )
