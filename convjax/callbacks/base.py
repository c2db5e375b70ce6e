"""The callback protocol: Keras's event names; callbacks observe, the loop acts.

Pure protocol (no I/O here). A callback receives plain Python numbers in `logs` and a
`LoopControl` (as `self.loop`) through which it reads the state and *requests* actions:

    self.loop.request_stop()                       # Keras: model.stop_training = True
    self.loop.request_learning_rate(1e-4)          # Keras: optimizer.learning_rate = 1e-4
    self.loop.request_params(params, batch_stats)  # Keras: model.set_weights(...)
    self.loop.request_eval_with_ema(True)          # validate with the EMA weights
    self.loop.request_swap_ema()                   # swap params <-> EMA in the state
    self.loop.request_resume(backup)               # continue a run from a Backup
    self.loop.request_after_event(fn)              # call fn once every callback has run

Events, in the order `fit` sends them:

    on_train_setup()                  convjax only: BackupAndRestore asks to resume here, so
                                      every on_train_begin already knows `loop.resumed`
    on_train_begin(logs)
    (callback states from the backup are loaded here, after every on_train_begin reset)
    for each epoch:
        on_epoch_begin(epoch)         also again for the epoch a resumed run continues inside
        on_train_batch_begin(batch) / on_train_batch_end(batch, logs)   for each batch
        on_test_begin() / on_test_end(logs)                             when validating
        on_epoch_end(epoch, logs)
    on_train_end(logs)                not reached when a callback raises (TerminateOnNaN with
                                      raise_error=True), as in Keras

Order and what one callback's action does to the next:

- Callbacks run in list order; `fit` puts the progress bar first and `History` last (as Keras).
- The loop applies a callback's requests right after that callback's hook returns, so the
  callbacks *after* it see the effect: after `ReduceLROnPlateau` lowers the rate,
  `self.loop.learning_rate` is the new rate for every later callback in the same event.
- `logs` is built once per event by the loop and is the same dict for every callback.
  `logs["learning_rate"]` is the rate the epoch trained with, so `CSVLogger`, `TensorBoard` and
  `History` record the *old* rate in the row of the epoch where `ReduceLROnPlateau` reduced it,
  and the new one from the next epoch on, wherever they sit in the list. (Keras differs:
  its TensorBoard reads the optimizer itself, so there the position in the list matters.)
- With `SwapEMAWeights(swap_on_epoch=True)` placed before `ModelCheckpoint` or
  `EarlyStopping`, those see the EMA weights as `state.params` at the end of each epoch.
- Requests made through `request_after_event` run after the last callback of the event:
  `BackupAndRestore` saves there, so a backup holds every callback's state for that event
  (for example History's row of the epoch and EarlyStopping's counter), whatever its position.

Per-batch logs cost a device-to-host sync, so the loop builds them only on the batches a
callback asks for through `wants_batch_logs` (by default every `batch_logs_every` batches).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from convjax.callbacks.control import LoopControl

Logs = dict[str, Any]


class Callback:
    """Base class with every Keras hook as a no-op."""

    # >0: this callback wants `logs` in on_train_batch_end every N batches (forces a sync).
    batch_logs_every: int = 0
    loop: LoopControl

    def set_loop(self, loop: LoopControl) -> None:
        self.loop = loop

    def wants_batch_logs(self, batch: int) -> bool:
        """Whether on_train_batch_end(batch) needs logs (asked after the step ran)."""
        return self.batch_logs_every > 0 and (batch + 1) % self.batch_logs_every == 0

    # Saved in backups (BackupAndRestore) and loaded on resume: best values, wait counters...
    # Values must be JSON-serialisable, except under the key "arrays": a pytree of numpy
    # arrays (EarlyStopping's best weights), which is saved with Orbax.
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state

    def on_train_setup(self) -> None: ...
    def on_train_begin(self, logs: Logs | None = None) -> None: ...
    def on_train_end(self, logs: Logs | None = None) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None: ...
    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None: ...
    def on_train_batch_begin(self, batch: int, logs: Logs | None = None) -> None: ...
    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None: ...
    def on_test_begin(self, logs: Logs | None = None) -> None: ...
    def on_test_end(self, logs: Logs | None = None) -> None: ...


def callback_names(callbacks: list[Callback]) -> list[str]:
    """Stable names for saved states: class name and its count, e.g. "EarlyStopping#0".

    Counting per class (not the list position) keeps names valid when the progress bar
    comes and goes with `verbose`.
    """
    seen: Counter[str] = Counter()
    names = []
    for cb in callbacks:
        kind = type(cb).__name__
        names.append(f"{kind}#{seen[kind]}")
        seen[kind] += 1
    return names


class CallbackList:
    """Dispatches one event to every callback in order, applying requests in between."""

    def __init__(self, callbacks: list[Callback], loop: LoopControl):
        self.callbacks = list(callbacks)
        self.loop = loop
        for cb in self.callbacks:
            cb.set_loop(loop)

    def wants_batch_logs(self, batch: int) -> bool:
        return any(cb.wants_batch_logs(batch) for cb in self.callbacks)

    def call(self, event: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(*args)
            self.loop.apply_requests()
        self.loop.run_after_event()

    def state_dicts(self) -> dict[str, dict[str, Any]]:
        names = callback_names(self.callbacks)
        return {name: cb.state_dict() for name, cb in zip(names, self.callbacks)}

    def load_state_dicts(self, states: dict[str, dict[str, Any]]) -> list[str]:
        """Loads the saved state of each callback by name; returns the names of saved
        non-empty states that no callback of this run took."""
        names = callback_names(self.callbacks)
        for name, cb in zip(names, self.callbacks):
            if name in states:
                cb.load_state_dict(states[name])
        return sorted(name for name, state in states.items()
                      if name not in names and any(v is not None for v in state.values()))
