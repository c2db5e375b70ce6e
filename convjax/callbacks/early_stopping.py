"""EarlyStopping: stop when a monitored metric has stopped improving (Keras 3 semantics).

Pure bookkeeping on plain numbers; the only effects are requests to the loop (stop, restore
weights) and a host copy of the best weights.
"""

from __future__ import annotations

import warnings
from typing import Any

from convjax.callbacks.base import Callback, Logs
from convjax.callbacks.monitor import make_monitor


class EarlyStopping(Callback):
    """Keras's `EarlyStopping`, argument for argument.

    Per epoch, in Keras's order: epochs before `start_from_epoch` or without the metric are
    skipped; `wait` grows by one; an improvement (strict, by more than `min_delta`) records
    the best value (and weights) and resets `wait` only when it also beats `baseline`;
    otherwise training stops once `wait >= patience` (never at epoch 0). With
    `restore_best_weights`, the best weights are put back at the end of training whenever
    they exist, also when another callback stopped training or the epochs ran out.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0,
        patience: int = 0,
        verbose: int = 0,
        mode: str = "auto",
        baseline: float | None = None,
        restore_best_weights: bool = False,
        start_from_epoch: int = 0,
    ):
        self.monitor = make_monitor(monitor, mode, min_delta, "EarlyStopping")
        self.patience = patience
        self.verbose = verbose
        self.baseline = baseline
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = start_from_epoch
        self._reset()

    def _reset(self) -> None:
        self.wait = 0
        self.stopped_epoch = 0
        self.best: float | None = None
        self.best_epoch = 0
        self.best_weights: tuple[Any, Any] | None = None  # host (params, batch_stats)

    def on_train_begin(self, logs: Logs | None = None) -> None:
        self._reset()  # Keras: an instance can be reused across fit calls

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        current = (logs or {}).get(self.monitor.name)
        if current is None:
            warnings.warn(
                f"Early stopping conditioned on metric `{self.monitor.name}` which is not "
                f"available. Available metrics are: {','.join(logs or {})}", stacklevel=2,
            )
            return
        if epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights, self.best_epoch = self.loop.snapshot(), epoch
        self.wait += 1
        if self.monitor.is_improvement(current, self.best):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights = self.loop.snapshot()
            if self.baseline is None or self.monitor.is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.loop.request_stop()

    def on_train_end(self, logs: Logs | None = None) -> None:
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                print("Restoring model weights from the end of the best epoch: "
                      f"{self.best_epoch + 1}.")
            self.loop.request_params(*self.best_weights)

    def state_dict(self) -> dict[str, Any]:
        weights = None
        if self.best_weights is not None:
            weights = {"params": self.best_weights[0], "batch_stats": self.best_weights[1]}
        return {"wait": self.wait, "stopped_epoch": self.stopped_epoch, "best": self.best,
                "best_epoch": self.best_epoch, "arrays": weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wait, self.stopped_epoch = state["wait"], state["stopped_epoch"]
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        weights = state.get("arrays")
        self.best_weights = None if weights is None else (
            weights["params"], weights.get("batch_stats", {}))
