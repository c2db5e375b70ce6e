"""`fit` and `evaluate`: the only place that dispatches steps, reads metrics and runs callbacks.

Effects live here. The steps are pure and jitted once each (state buffers donated); metrics
stay on the device as running sums and are read back once per epoch, or on the batches a
callback asks for. Callbacks request actions through `LoopControl`; the loop applies them.
The event order and how one callback's action reaches the next are in `callbacks/base.py`.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from convjax.callbacks.base import Callback, CallbackList, Logs
from convjax.callbacks.control import METRIC_KEYS, LoopControl, sums_to_logs, zero_sums
from convjax.callbacks.recorders import History, ProgbarLogger
from convjax.data.arrays import ArraySource
from convjax.data.loader import DeviceDataset, eval_indices, gather, steps_per_epoch, train_indices
from convjax.optim import Schedule
from convjax.sharding import batch_sharded, check_divisible, make_mesh, replicated
from convjax.train_state import TrainState, eval_params


def _accumulate(train_step: Callable) -> Callable:
    def step(state, sums, images, labels, indices):
        state, metrics = train_step(state, gather(images, labels, indices))
        return state, jax.tree.map(jnp.add, sums, {k: metrics[k] for k in METRIC_KEYS})

    return step


def _accumulate_eval(eval_step: Callable) -> Callable:
    def step(params, batch_stats, sums, images, labels, indices, mask):
        batch = {**gather(images, labels, indices), "mask": mask}
        metrics = eval_step(params, batch_stats, batch)
        return {k: sums[k] + metrics[k] if k in metrics else sums[k] for k in METRIC_KEYS}

    return step


def _cached(jit_fn: Callable, *step_fns: Callable):
    try:
        return jit_fn(*step_fns)
    except TypeError:  # unhashable step functions: compile for this call only
        return jit_fn.__wrapped__(*step_fns)


@functools.lru_cache(maxsize=16)
def _jitted_eval(eval_step: Callable) -> Callable:
    return jax.jit(_accumulate_eval(eval_step), donate_argnums=(2,))


@functools.lru_cache(maxsize=16)
def _jitted_steps(train_step: Callable, eval_step: Callable) -> tuple[Callable, Callable]:
    """The loop's compiled steps, built once per pair of step functions, so that calling
    `fit` again with the same steps (continuing training, a resumed run) does not recompile."""
    return (jax.jit(_accumulate(train_step), donate_argnums=(0, 1)),
            _cached(_jitted_eval, eval_step))


def evaluate(
    params: Any, batch_stats: Any, data: ArraySource | DeviceDataset, eval_step: Callable,
    batch_size: int = 500, mesh=None,
) -> Logs:
    """Loss and accuracy over every example of `data` (padded last batch masked out).
    Compiled once per `eval_step`, so repeated evaluations do not recompile."""
    return _evaluate_with(_cached(_jitted_eval, eval_step), params, batch_stats, data,
                          batch_size, mesh)


def _evaluate_with(fn: Callable, params: Any, batch_stats: Any, data, batch_size: int,
                   mesh) -> Logs:
    mesh = mesh or make_mesh()
    batch_size = -(-batch_size // mesh.devices.size) * mesh.devices.size  # round up
    if isinstance(data, ArraySource):
        data = DeviceDataset.put(data, replicated(mesh))
    # Placed like the step's output sums, so the second batch does not trigger a recompile.
    sums = jax.device_put(zero_sums(), replicated(mesh))
    for idx, mask in eval_indices(len(data), batch_size):
        idx, mask = jax.device_put((idx, mask), batch_sharded(mesh))
        sums = fn(params, batch_stats, sums, data.images, data.labels, idx, mask)
    return sums_to_logs(sums)


@dataclasses.dataclass
class _Run:
    """Everything one `fit` call dispatches with (placed data and the jitted steps)."""

    mesh: Any
    train: DeviceDataset
    val: DeviceDataset | None
    step_fn: Callable
    eval_fn: Callable
    batch_size: int
    eval_batch_size: int
    seed: int


def _train_epoch(run: _Run, control: LoopControl, cbs: CallbackList, epoch: int) -> Logs:
    if control.step_in_epoch == 0:  # else: resumed inside the epoch with its restored sums
        control.sums = jax.device_put(zero_sums(), replicated(run.mesh))
    start = control.step_in_epoch
    for batch, idx in enumerate(
        train_indices(len(run.train), run.batch_size, run.seed, epoch, start), start
    ):
        if control.stop_training:
            break
        cbs.call("on_train_batch_begin", batch, {})
        idx = jax.device_put(idx, batch_sharded(run.mesh))
        control.state, control.sums = run.step_fn(
            control.state, control.sums, run.train.images, run.train.labels, idx
        )
        control.step_in_epoch = batch + 1
        logs = control.read_logs() if cbs.wants_batch_logs(batch) else {}
        cbs.call("on_train_batch_end", batch, logs)
    logs = control.read_logs()
    logs["learning_rate"] = control.learning_rate
    return logs


def _validate(run: _Run, control: LoopControl, cbs: CallbackList) -> Logs:
    cbs.call("on_test_begin", {})
    state = control.state
    logs = _evaluate_with(
        run.eval_fn, eval_params(state, control.eval_with_ema), state.batch_stats, run.val,
        run.eval_batch_size, run.mesh,
    )
    cbs.call("on_test_end", logs)
    return {f"val_{k}": v for k, v in logs.items()}


def _load_callback_states(control: LoopControl, cbs: CallbackList) -> None:
    states = control.take_pending_states()
    if states is None:
        return
    missing = cbs.load_state_dicts(states)
    if missing:
        warnings.warn(f"the backup holds states of callbacks this run lacks: {missing}",
                      stacklevel=3)


def fit(
    state: TrainState,
    train: ArraySource,
    *,
    train_step: Callable,
    eval_step: Callable,
    schedule: Schedule,
    epochs: int,
    batch_size: int,
    seed: int = 0,
    validation: ArraySource | None = None,
    eval_batch_size: int = 500,
    callbacks: Sequence[Callback] = (),
    verbose: int = 1,
    initial_epoch: int = 0,
    mesh=None,
) -> tuple[TrainState, History]:
    """Keras's `model.fit`, functionally: returns the final state and the History.

    `state` itself is left intact: the loop trains (and donates the buffers of) its own copy.
    """
    mesh = mesh or make_mesh()
    check_divisible(batch_size, mesh, "batch_size")
    step_fn, eval_fn = _cached(_jitted_steps, train_step, eval_step)
    run = _Run(
        mesh=mesh,
        train=DeviceDataset.put(train, replicated(mesh)),
        val=DeviceDataset.put(validation, replicated(mesh)) if validation is not None else None,
        step_fn=step_fn, eval_fn=eval_fn,
        batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed,
    )
    # A copy (may_alias=False): the steps donate the state's buffers, and the caller's own
    # `state` must stay usable after fit (Keras users expect their inputs to survive).
    control = LoopControl(
        state=jax.device_put(state, replicated(mesh), may_alias=False), schedule=schedule,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch(len(train), batch_size), epoch=initial_epoch,
    )
    history = History()
    progress = [ProgbarLogger(verbose)] if verbose else []  # Keras: progbar first, History last
    cbs = CallbackList([*progress, *callbacks, history], control)
    control.callbacks = cbs
    cbs.call("on_train_setup")
    cbs.call("on_train_begin", {})
    _load_callback_states(control, cbs)
    logs: Logs = {}
    for epoch in range(control.epoch, epochs):
        if control.stop_training and control.step_in_epoch == 0:
            break  # asked to stop before this epoch began (e.g. resumed after a stop)
        control.epoch = epoch
        cbs.call("on_epoch_begin", epoch, {})
        logs = _train_epoch(run, control, cbs, epoch)
        if run.val is not None:
            logs.update(_validate(run, control, cbs))
        cbs.call("on_epoch_end", epoch, logs)
        control.epoch, control.step_in_epoch = epoch + 1, 0
        if control.stop_training:
            break
    cbs.call("on_train_end", logs)
    return control.state, history


def predict(params: Any, batch_stats: Any, images: np.ndarray, predict_step: Callable,
            batch_size: int = 500) -> np.ndarray:
    """Keras `model.predict`: class probabilities for uint8 images, batched.

    Pure in its inputs: it runs with the weights it is given (pass `state.ema_params` for the
    EMA), so no callback can leave weights swapped, unlike Keras's SwapEMAWeights."""
    fn = jax.jit(predict_step)
    outputs = [
        np.asarray(fn(params, batch_stats, images[i : i + batch_size]))
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(outputs)
