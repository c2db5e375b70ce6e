"""`fit` and `evaluate`: the only place that dispatches steps, reads metrics and runs callbacks.

Effects live here. The steps are pure and jitted once each (state buffers donated); metrics
stay on the device as running sums and are read back once per epoch, or on the batches a
callback asks for. Callbacks request actions through `LoopControl`; the loop applies them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from convjax.callbacks.base import Callback, CallbackList, Logs
from convjax.callbacks.recorders import History, ProgbarLogger
from convjax.data.arrays import ArraySource
from convjax.data.loader import DeviceDataset, eval_indices, gather, steps_per_epoch, train_indices
from convjax.optim import Schedule
from convjax.sharding import batch_sharded, check_divisible, make_mesh, replicated
from convjax.train_state import TrainState, eval_params

METRIC_KEYS = ("loss_sum", "correct", "count", "nonfinite")


def zero_sums() -> dict[str, jax.Array]:
    return {k: jnp.zeros((), jnp.float32) for k in METRIC_KEYS}


def sums_to_logs(sums: dict[str, Any], prefix: str = "") -> Logs:
    """Device sums -> Keras logs (one host sync)."""
    host = jax.device_get(sums)
    count = max(float(host["count"]), 1.0)
    return {f"{prefix}loss": float(host["loss_sum"]) / count,
            f"{prefix}accuracy": float(host["correct"]) / count}


@dataclasses.dataclass
class LoopControl:
    """What a callback sees of the running loop (`self.loop`), and how it asks for actions.

    The loop donates the state's buffers to the next step, so a callback that wants to keep
    weights (EarlyStopping's best) must take a copy with `snapshot()`, not hold `state.params`.
    """

    state: TrainState
    schedule: Schedule
    epochs: int
    steps_per_epoch: int
    epoch: int = 0
    step_in_epoch: int = 0
    stop_training: bool = False
    eval_with_ema: bool = False
    _requested_lr: float | None = None
    _requested_params: tuple | None = None

    @property
    def learning_rate(self) -> float:
        """The rate the next update will use."""
        return float(self.schedule(self.state.step) * self.state.lr_scale)

    def snapshot(self) -> tuple[Any, Any]:
        """A host copy of (params, batch_stats) that survives buffer donation."""
        return jax.device_get((self.state.params, self.state.batch_stats))

    def request_stop(self) -> None:
        self.stop_training = True

    def request_learning_rate(self, value: float) -> None:
        self._requested_lr = float(value)

    def request_params(self, params: Any, batch_stats: Any = None) -> None:
        self._requested_params = (params, batch_stats)

    def request_eval_with_ema(self, flag: bool) -> None:
        self.eval_with_ema = bool(flag)

    def apply_requests(self) -> None:
        state = self.state
        if self._requested_lr is not None:
            base = float(self.schedule(state.step))
            if base == 0.0:
                raise ValueError("cannot set the learning rate while the schedule is at 0")
            state = state.replace(lr_scale=jnp.asarray(self._requested_lr / base, jnp.float32))
            self._requested_lr = None
        if self._requested_params is not None:
            params, stats = self._requested_params
            like = lambda new, old: jax.device_put(jnp.asarray(new, old.dtype), old.sharding)  # noqa: E731
            state = state.replace(params=jax.tree.map(like, params, state.params))
            if stats is not None:
                state = state.replace(batch_stats=jax.tree.map(like, stats, state.batch_stats))
            self._requested_params = None
        self.state = state


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


def evaluate(
    params: Any, batch_stats: Any, data: ArraySource | DeviceDataset, eval_step: Callable,
    batch_size: int = 500, mesh=None, _jitted: Callable | None = None,
) -> Logs:
    """Loss and accuracy over every example of `data` (padded last batch masked out)."""
    mesh = mesh or make_mesh()
    batch_size = -(-batch_size // mesh.devices.size) * mesh.devices.size  # round up
    if isinstance(data, ArraySource):
        data = DeviceDataset.put(data, replicated(mesh))
    fn = _jitted or jax.jit(_accumulate_eval(eval_step), donate_argnums=(2,))
    sums = zero_sums()
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
    sums = jax.device_put(zero_sums(), replicated(run.mesh))
    start = control.step_in_epoch
    for batch, idx in enumerate(
        train_indices(len(run.train), run.batch_size, run.seed, epoch, start), start
    ):
        cbs.call("on_train_batch_begin", batch, {})
        idx = jax.device_put(idx, batch_sharded(run.mesh))
        control.state, sums = run.step_fn(
            control.state, sums, run.train.images, run.train.labels, idx
        )
        control.step_in_epoch = batch + 1
        logs = sums_to_logs(sums) if cbs.wants_batch_logs(batch) else {}
        cbs.call("on_train_batch_end", batch, logs)
        if control.stop_training:
            break
    logs = sums_to_logs(sums)
    logs["learning_rate"] = control.learning_rate
    return logs


def _validate(run: _Run, control: LoopControl, cbs: CallbackList) -> Logs:
    cbs.call("on_test_begin", {})
    state = control.state
    logs = evaluate(
        eval_params(state, control.eval_with_ema), state.batch_stats, run.val, None,
        run.eval_batch_size, run.mesh, _jitted=run.eval_fn,
    )
    cbs.call("on_test_end", logs)
    return {f"val_{k}": v for k, v in logs.items()}


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
    """Keras's `model.fit`, functionally: returns the final state and the History."""
    mesh = mesh or make_mesh()
    check_divisible(batch_size, mesh, "batch_size")
    run = _Run(
        mesh=mesh,
        train=DeviceDataset.put(train, replicated(mesh)),
        val=DeviceDataset.put(validation, replicated(mesh)) if validation is not None else None,
        step_fn=jax.jit(_accumulate(train_step), donate_argnums=(0, 1)),
        eval_fn=jax.jit(_accumulate_eval(eval_step), donate_argnums=(2,)),
        batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed,
    )
    control = LoopControl(
        state=jax.device_put(state, replicated(mesh)), schedule=schedule, epochs=epochs,
        steps_per_epoch=steps_per_epoch(len(train), batch_size),
    )
    history = History()
    progress = [ProgbarLogger(verbose)] if verbose else []  # Keras: progbar first, History last
    cbs = CallbackList([*progress, *callbacks, history], control)
    cbs.call("on_train_begin", {})
    logs: Logs = {}
    for epoch in range(initial_epoch, epochs):
        control.epoch = epoch
        cbs.call("on_epoch_begin", epoch, {})
        logs = _train_epoch(run, control, cbs, epoch)
        if run.val is not None:
            logs.update(_validate(run, control, cbs))
        control.step_in_epoch = 0
        cbs.call("on_epoch_end", epoch, logs)
        if control.stop_training:
            break
    cbs.call("on_train_end", logs)
    return control.state, history


def predict(params: Any, batch_stats: Any, images: np.ndarray, predict_step: Callable,
            batch_size: int = 500) -> np.ndarray:
    """Keras `model.predict`: class probabilities for uint8 images, batched."""
    fn = jax.jit(predict_step)
    outputs = [
        np.asarray(fn(params, batch_stats, images[i : i + batch_size]))
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(outputs)
