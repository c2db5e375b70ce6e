"""The callback protocol: Keras's event names; callbacks observe, the loop acts.

Pure protocol (no I/O here). A callback receives plain Python numbers in `logs` and a
`LoopControl` (as `self.loop`) through which it can read the state and *request* actions:

    self.loop.request_stop()                     # Keras: model.stop_training = True
    self.loop.request_learning_rate(1e-4)        # Keras: optimizer.learning_rate = 1e-4
    self.loop.request_params(params, batch_stats)  # Keras: model.set_weights(...)
    self.loop.request_eval_with_ema(True)        # evaluate with the EMA weights

The loop applies each callback's requests right after that callback's hook returns, so later
callbacks in the list see the effect (e.g. CSVLogger after ReduceLROnPlateau logs the new
rate). Per-batch logs cost a device-to-host sync, so the loop builds them only on the batches
a callback asks for through `batch_logs_every`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from convjax.loop import LoopControl

Logs = dict[str, float]


class Callback:
    """Base class with every Keras hook as a no-op."""

    # >0: this callback wants `logs` in on_train_batch_end every N batches (forces a sync).
    batch_logs_every: int = 0
    loop: LoopControl

    def set_loop(self, loop: LoopControl) -> None:
        self.loop = loop

    # Checkpointed with the train state (BackupAndRestore): best values, wait counters, ...
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state

    def on_train_begin(self, logs: Logs | None = None) -> None: ...
    def on_train_end(self, logs: Logs | None = None) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None: ...
    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None: ...
    def on_train_batch_begin(self, batch: int, logs: Logs | None = None) -> None: ...
    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None: ...
    def on_test_begin(self, logs: Logs | None = None) -> None: ...
    def on_test_end(self, logs: Logs | None = None) -> None: ...


class CallbackList:
    """Dispatches one event to every callback in order, applying requests in between."""

    def __init__(self, callbacks: list[Callback], loop: LoopControl):
        self.callbacks = list(callbacks)
        self.loop = loop
        for cb in self.callbacks:
            cb.set_loop(loop)

    def wants_batch_logs(self, batch: int) -> bool:
        return any(
            cb.batch_logs_every > 0 and (batch + 1) % cb.batch_logs_every == 0
            for cb in self.callbacks
        )

    def call(self, event: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(*args)
            self.loop.apply_requests()
