"""The callback protocol: Keras's event names; callbacks observe, the loop acts.

Pure protocol (no I/O here). A callback receives plain Python numbers in `logs` and a
read-only `LoopView` of the running loop as `self.loop`, through which it reads the run and
*requests* actions, which `fit` applies in one place (`loop._apply`):

    self.loop.request_stop()                       # Keras: model.stop_training = True
    self.loop.request_learning_rate(1e-4)          # Keras: optimizer.learning_rate = 1e-4
    self.loop.request_params(params, batch_stats)  # Keras: model.set_weights(...)
    self.loop.request_eval_with_ema(True)          # validate with the EMA weights
    self.loop.request_swap_ema()                   # swap params <-> EMA in the state

What it reads besides the state and the position: `self.loop.validation_confusion`, the
latest validation's (C, C) confusion matrix (rows: true class, columns: predicted; numpy,
read-only), set before `on_test_end` and kept until the next validation; None when there is
none. Epoch `logs` stay scalars: a matrix has no place in a CSV row or a History list.

Events, in the order `fit` sends them:

    (a backup, when `fit` is given one, is restored here: `loop.resumed` is then True)
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
  `logs["learning_rate"]` is the rate the epoch's updates used (its last update's), so
  `CSVLogger`, `TensorBoard` and `History` record the *old* rate in the row of the epoch where
  `ReduceLROnPlateau` reduced it, and the new one from the next epoch on.
- With `SwapEMAWeights(swap_on_epoch=True)` placed before `ModelCheckpoint` or
  `EarlyStopping`, those see the EMA weights as `state.params` at the end of each epoch.
- A backup (`fit(backup=...)`, or Keras's `BackupAndRestore`) is written once every callback
  has handled the event, so it holds every callback's state for that event.

Per-batch logs: the loop reads metrics *one step late* so that the device never waits for
logging. `on_train_batch_end(batch, logs)` is called right after that batch's step was
dispatched, and its `logs` are the epoch's running loss and accuracy through the *previous*
batch (empty for an epoch's first batch). They are built only on the batches a callback asks
for through `wants_batch_logs` (by default every `batch_logs_every` batches). Epoch logs are
exact.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import jax
import numpy as np

from convjax.optim import learning_rate as optimizer_learning_rate
from convjax.train_state import TrainState

Logs = dict[str, Any]


# --- Requests: what a callback may ask the loop to do ------------------------------------


@dataclass(frozen=True)
class Stop:
    pass


@dataclass(frozen=True)
class SetLearningRate:
    value: float


@dataclass(frozen=True)
class SetParams:
    params: Any
    batch_stats: Any = None


@dataclass(frozen=True)
class EvalWithEma:
    flag: bool


@dataclass(frozen=True)
class SwapEma:
    pass


Request = Stop | SetLearningRate | SetParams | EvalWithEma | SwapEma


class RunRecord(Protocol):
    """The fields of the loop's private run record that a `LoopView` reads."""

    state: TrainState
    epochs: int
    steps_per_epoch: int
    epoch: int
    step_in_epoch: int
    stop_training: bool
    resumed: bool
    nonfinite_steps: int
    validation_confusion: np.ndarray | None


class LoopView:
    """What a callback sees of the running loop (`self.loop`): read-only, plus requests.

    The loop donates the state's buffers to the next step, so a callback that wants to keep
    weights (EarlyStopping's best) must take a host copy with `snapshot()`, not hold
    `state.params`.
    """

    def __init__(self, run: RunRecord):
        self._run = run
        self._requests: list[Request] = []

    @property
    def state(self) -> TrainState:
        return self._run.state

    @property
    def epochs(self) -> int:
        return self._run.epochs

    @property
    def steps_per_epoch(self) -> int:
        return self._run.steps_per_epoch

    @property
    def epoch(self) -> int:
        return self._run.epoch

    @property
    def step_in_epoch(self) -> int:
        """Batches of the current epoch trained so far."""
        return self._run.step_in_epoch

    @property
    def global_batch(self) -> int:
        """Batches trained since the start of training (Keras TensorBoard's batch step)."""
        return self._run.epoch * self._run.steps_per_epoch + self._run.step_in_epoch

    @property
    def stop_training(self) -> bool:
        return self._run.stop_training

    @property
    def resumed(self) -> bool:
        """This run continues from a backup (known from on_train_begin on)."""
        return self._run.resumed

    @property
    def nonfinite_steps(self) -> int:
        """Updates skipped as non-finite this epoch, as of the latest logs."""
        return self._run.nonfinite_steps

    @property
    def validation_confusion(self) -> np.ndarray | None:
        """The latest validation's confusion matrix: (C, C) counts, rows the true class,
        columns the predicted one (read-only numpy). None before the first validation, without
        validation data, or when the steps do not count it (`make_steps(num_classes=0)`)."""
        return self._run.validation_confusion

    @property
    def learning_rate(self) -> float:
        """The current rate: the schedule's value at the latest update times the current
        `lr_scale` (so it reflects a request applied earlier in the same event)."""
        return float(jax.device_get(optimizer_learning_rate(self._run.state.opt_state)))

    def snapshot(self) -> tuple[Any, Any]:
        """A host copy of (params, batch_stats) that survives buffer donation."""
        return jax.device_get((self._run.state.params, self._run.state.batch_stats))

    def request_stop(self) -> None:
        self._requests.append(Stop())

    def request_learning_rate(self, value: float) -> None:
        self._requests.append(SetLearningRate(float(value)))

    def request_params(self, params: Any, batch_stats: Any = None) -> None:
        self._requests.append(SetParams(params, batch_stats))

    def request_eval_with_ema(self, flag: bool) -> None:
        self._requests.append(EvalWithEma(bool(flag)))

    def request_swap_ema(self) -> None:
        """Exchange `state.params` and `state.ema_params` (SwapEMAWeights); each request
        swaps once."""
        self._requests.append(SwapEma())

    def take_requests(self) -> list[Request]:
        """For the loop: the requests made since the last call, in order."""
        requests, self._requests = self._requests, []
        return requests


class Callback:
    """Base class with every Keras hook as a no-op."""

    # >0: this callback wants `logs` in on_train_batch_end every N batches.
    batch_logs_every: int = 0
    loop: LoopView

    def set_loop(self, loop: LoopView) -> None:
        self.loop = loop

    def wants_batch_logs(self, batch: int) -> bool:
        """Whether on_train_batch_end(batch) needs logs (asked after the step ran)."""
        return self.batch_logs_every > 0 and (batch + 1) % self.batch_logs_every == 0

    # Saved in backups and loaded on resume: best values, wait counters...
    # Values must be JSON-serialisable, except under the key "arrays": a pytree of numpy
    # arrays (EarlyStopping's best weights), which is saved with Orbax.
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
    """Dispatches one event to every callback in order; after each callback's hook it calls
    `apply_requests` (the loop's), so later callbacks see the effect."""

    def __init__(self, callbacks: list[Callback], view: LoopView,
                 apply_requests: Callable[[], None]):
        self.callbacks = list(callbacks)
        self.view = view
        self._apply_requests = apply_requests
        for cb in self.callbacks:
            cb.set_loop(view)

    def wants_batch_logs(self, batch: int) -> bool:
        return any(cb.wants_batch_logs(batch) for cb in self.callbacks)

    def call(self, event: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(*args)
            self._apply_requests()

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
