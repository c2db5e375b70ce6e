"""`LoopControl`: what a callback sees of the running loop, and how it asks for actions.

Part of the loop's effectful edge (it reads metrics back from the device), kept apart from
`loop.py` so that the callback interface reads in one place. Callbacks call the `request_*`
methods; the loop applies the requests with `apply_requests` right after each callback's
hook, and runs `request_after_event` functions once the whole event is done.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp

from convjax.checkpoint import Backup
from convjax.optim import Schedule
from convjax.train_state import TrainState

if TYPE_CHECKING:
    from convjax.callbacks.base import CallbackList, Logs

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
    step_in_epoch: int = 0  # batches of `epoch` trained so far
    sums: dict[str, jax.Array] | None = None  # the epoch's running metric sums, on device
    stop_training: bool = False
    eval_with_ema: bool = False
    resumed: bool = False  # this run continues from a backup (set before on_train_begin)
    nonfinite_steps: int = 0  # skipped non-finite updates this epoch, as of the last logs
    callbacks: CallbackList | None = None
    _requested_lr: float | None = None
    _requested_params: tuple | None = None
    _swap_ema: bool = False
    _resume: Backup | None = None
    _pending_states: dict | None = None
    _after_event: list[Callable[[], None]] = dataclasses.field(default_factory=list)

    @property
    def learning_rate(self) -> float:
        """The rate the next update will use."""
        return float(self.schedule(self.state.step) * self.state.lr_scale)

    @property
    def global_batch(self) -> int:
        """Batches trained since the start of training (Keras TensorBoard's batch step)."""
        return self.epoch * self.steps_per_epoch + self.step_in_epoch

    def snapshot(self) -> tuple[Any, Any]:
        """A host copy of (params, batch_stats) that survives buffer donation."""
        return jax.device_get((self.state.params, self.state.batch_stats))

    def read_logs(self) -> Logs:
        """The epoch's running loss/accuracy (one host sync); also updates nonfinite_steps."""
        host = jax.device_get(self.sums)
        self.nonfinite_steps = int(host["nonfinite"])
        return sums_to_logs(host)

    def callback_states(self) -> dict[str, dict[str, Any]]:
        return self.callbacks.state_dicts() if self.callbacks is not None else {}

    def backup(self, epoch_done: bool) -> Backup:
        """Everything needed to continue exactly from here (after this event's callbacks)."""
        if epoch_done:
            epoch, step_in_epoch, sums = self.epoch + 1, 0, zero_sums()
        else:  # (no sums yet before the first step)
            epoch, step_in_epoch = self.epoch, self.step_in_epoch
            sums = zero_sums() if self.sums is None else self.sums
        return Backup(self.state, epoch, step_in_epoch, sums, self.stop_training,
                      self.callback_states())

    def request_stop(self) -> None:
        self.stop_training = True

    def request_learning_rate(self, value: float) -> None:
        self._requested_lr = float(value)

    def request_params(self, params: Any, batch_stats: Any = None) -> None:
        self._requested_params = (params, batch_stats)

    def request_eval_with_ema(self, flag: bool) -> None:
        self.eval_with_ema = bool(flag)

    def request_swap_ema(self) -> None:
        """Exchange `state.params` and `state.ema_params` (SwapEMAWeights)."""
        self._swap_ema = not self._swap_ema

    def request_resume(self, backup: Backup) -> None:
        self._resume = backup

    def request_after_event(self, fn: Callable[[], None]) -> None:
        """Call `fn` once every callback has handled the current event."""
        self._after_event.append(fn)

    def apply_requests(self) -> None:
        if self._resume is not None:
            self._apply_resume(self._resume)
            self._resume = None
        if self._requested_lr is not None:
            self._apply_learning_rate(self._requested_lr)
            self._requested_lr = None
        if self._requested_params is not None:
            self._apply_params(*self._requested_params)
            self._requested_params = None
        if self._swap_ema:
            if self.state.ema_params is None:
                raise ValueError("no EMA weights to swap: create the state with ema=True")
            self.state = self.state.replace(
                params=self.state.ema_params, ema_params=self.state.params
            )
            self._swap_ema = False

    def run_after_event(self) -> None:
        while self._after_event:
            self._after_event.pop(0)()

    def take_pending_states(self) -> dict | None:
        states, self._pending_states = self._pending_states, None
        return states

    def _apply_learning_rate(self, value: float) -> None:
        base = float(self.schedule(self.state.step))
        if base == 0.0:
            raise ValueError("cannot set the learning rate while the schedule is at 0")
        scale = jax.device_put(jnp.asarray(value / base, jnp.float32), self.state.lr_scale.sharding)
        self.state = self.state.replace(lr_scale=scale)

    def _apply_params(self, params: Any, stats: Any) -> None:
        like = lambda new, old: jax.device_put(jnp.asarray(new, old.dtype), old.sharding)  # noqa: E731
        state = self.state.replace(params=jax.tree.map(like, params, self.state.params))
        if stats is not None:
            state = state.replace(batch_stats=jax.tree.map(like, stats, state.batch_stats))
        self.state = state

    def _apply_resume(self, backup: Backup) -> None:
        # Orbax already placed the state like the current one; the sums go beside it.
        self.state = backup.state
        self.sums = jax.device_put(
            {k: jnp.asarray(v, jnp.float32) for k, v in backup.sums.items()},
            self.state.step.sharding,
        )
        self.epoch, self.step_in_epoch = backup.epoch, backup.step_in_epoch
        self.stop_training = backup.stop_training
        self.resumed = True
        self._pending_states = backup.callback_states
