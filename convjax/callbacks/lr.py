"""Learning-rate callbacks: ReduceLROnPlateau and LearningRateScheduler (Keras 3 semantics).

Pure bookkeeping; the rate changes through `self.loop.request_learning_rate`, which the loop
turns into the `lr_scale` in the optimizer state (optim.py), a multiplier on the Optax
schedule. So both callbacks work on top
of any schedule (Keras's ReduceLROnPlateau refuses one): after a reduction by `factor`, the
schedule keeps its shape at `factor` times the height.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from convjax.callbacks.base import Callback, Logs
from convjax.callbacks.monitor import make_monitor


class ReduceLROnPlateau(Callback):
    """Keras's `ReduceLROnPlateau`: multiply the rate by `factor` after `patience` epochs
    without improvement, then wait `cooldown` epochs; never below `min_lr`.

    Improvement is Keras's strict test with `min_delta`, so negative metrics work, and
    `patience=0` reduces at every epoch that does not improve (optax.contrib.reduce_on_plateau
    gets both of these wrong).
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        verbose: int = 0,
        mode: str = "auto",
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
        **kwargs: Any,
    ):
        if kwargs:  # Keras ignores them silently, which hides typos such as `patiense=`
            warnings.warn(f"ReduceLROnPlateau ignores unknown arguments {sorted(kwargs)}",
                          stacklevel=2)
        if factor >= 1.0:
            raise ValueError(
                f"ReduceLROnPlateau does not support a factor >= 1.0. Received factor={factor}"
            )
        self.monitor = make_monitor(monitor, mode, min_delta, "ReduceLROnPlateau")
        self.factor = factor
        self.patience = patience
        self.verbose = verbose
        self.cooldown = cooldown
        self.min_lr = min_lr
        self._reset()

    def _reset(self) -> None:
        self.best: float | None = None
        self.wait = 0
        self.cooldown_counter = 0

    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def on_train_begin(self, logs: Logs | None = None) -> None:
        self._reset()

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        current = (logs or {}).get(self.monitor.name)
        if current is None:
            warnings.warn(
                f"Learning rate reduction is conditioned on metric `{self.monitor.name}` which "
                f"is not available. Available metrics are: {','.join(logs or {})}.",
                stacklevel=2,
            )
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self.monitor.is_improvement(current, self.best):
            self.best, self.wait = current, 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience and self._reduce(epoch):
                self.cooldown_counter, self.wait = self.cooldown, 0

    def _reduce(self, epoch: int) -> bool:
        old_lr = self.loop.learning_rate
        if old_lr <= np.float32(self.min_lr):  # Keras compares in float32
            return False
        new_lr = max(old_lr * self.factor, self.min_lr)
        self.loop.request_learning_rate(new_lr)
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new_lr}.")
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait, "cooldown_counter": self.cooldown_counter}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.wait = state["best"], state["wait"]
        self.cooldown_counter = state["cooldown_counter"]


class LearningRateScheduler(Callback):
    """Keras's `LearningRateScheduler`: at each epoch's start, the rate becomes
    `schedule(epoch, lr)` (or `schedule(epoch)` for a one-argument function).

    The new rate is absolute, applied as a scale on the Optax schedule at that step, so use it
    with a constant Optax schedule unless you mean to scale one. A run resumed inside an epoch
    does not apply that epoch's schedule twice (it would compound `lr * 0.9` rules).
    """

    def __init__(self, schedule: Callable[..., float], verbose: int = 0):
        self.schedule = schedule
        self.verbose = verbose
        self._applied_epoch: int | None = None

    def on_train_begin(self, logs: Logs | None = None) -> None:
        self._applied_epoch = None

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        if epoch == self._applied_epoch:
            return
        lr = self.loop.learning_rate
        # Keras tries (epoch, lr) and falls back on TypeError, which also swallows TypeErrors
        # raised inside the schedule; counting the parameters does not.
        new_lr = self.schedule(epoch, lr) if _takes_two(self.schedule) else self.schedule(epoch)
        if not isinstance(new_lr, (float, np.float32, np.float64)):
            raise ValueError(f"The output of the `schedule` function should be a float. Got: "
                             f"{new_lr}")
        self.loop.request_learning_rate(float(new_lr))
        self._applied_epoch = epoch
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to "
                  f"{new_lr}.")

    def state_dict(self) -> dict[str, Any]:
        return {"applied_epoch": self._applied_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._applied_epoch = state["applied_epoch"]


def _takes_two(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # some builtins have no signature: assume Keras's new API
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)
