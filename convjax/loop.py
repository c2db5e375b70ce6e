"""`fit`, `evaluate` and `predict`: the only place that dispatches steps, reads metrics, runs
callbacks and saves or restores backups.

Effects live here. The loop owns its run state (`_Run`: the train state, the epoch's metric
sums, the position, the stop flag); callbacks see it through a read-only `LoopView` and ask
for actions, which `_apply` carries out in one place. Metrics stay on the device as running
sums; per-batch logs are read one step late (after the next step is dispatched), so the
device never waits for logging; epoch logs are read once per epoch.

With several processes every process runs the same loop on the same global metrics, so every
decision is the same everywhere; only process 0 shows progress (`dist.is_writer`). Two rules
keep the processes in step: on CPU each step is waited for (`dist.sync_every_step`), and an
interrupt stops all processes at the same step (`dist.stop_agreed`).
"""

from __future__ import annotations

import dataclasses
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from convjax import dist
from convjax.backups import Backups, backup_options
from convjax.callbacks.backup import BackupOptions
from convjax.callbacks.base import (
    Callback,
    CallbackList,
    EvalWithEma,
    LoopView,
    Request,
    SetLearningRate,
    SetParams,
    Stop,
    SwapEma,
)
from convjax.callbacks.recorders import History, ProgbarLogger
from convjax.data.batches import BatchSource
from convjax.metrics import Logs, Sums, host_logs, zero_sums
from convjax.optim import learning_rate, lr_scale, with_lr_scale
from convjax.sharding import batch_sharded, make_mesh, place_replicated
from convjax.steps import Steps
from convjax.train_state import TrainState, eval_params


class TrainingInterrupted(Exception):
    """`fit` stopped early because its `interrupt` event was set (SIGINT/SIGTERM in the
    runner); the backup, when there is one, holds the run up to the last finished step."""

    def __init__(self, epoch: int, step_in_epoch: int, backed_up: bool):
        super().__init__(f"interrupted at epoch {epoch + 1}, step {step_in_epoch}")
        self.epoch, self.step_in_epoch, self.backed_up = epoch, step_in_epoch, backed_up


@dataclasses.dataclass
class _Run:
    """The loop's run state: everything that changes while `fit` runs."""

    state: TrainState
    epochs: int
    steps_per_epoch: int
    epoch: int = 0
    step_in_epoch: int = 0  # batches of `epoch` trained so far
    sums: Sums | None = None  # the epoch's running metric sums, on device
    stop_training: bool = False
    eval_with_ema: bool = False
    resumed: bool = False  # continues from a backup
    nonfinite_steps: int = 0  # skipped non-finite updates this epoch, as of the latest read
    # The latest validation's (C, C) confusion matrix on the host (rows: true class, columns:
    # predicted), read-only; None before the first validation or when steps do not count it.
    validation_confusion: np.ndarray | None = None


# --- Requests: the one place where callbacks' wishes change the run ------------------------


def _apply(run: _Run, request: Request) -> None:
    match request:
        case Stop():
            run.stop_training = True
        case SetLearningRate(value):
            run.state = _with_learning_rate(run.state, value)
        case SetParams(params, batch_stats):
            run.state = _with_params(run.state, params, batch_stats)
        case EvalWithEma(flag):
            run.eval_with_ema = flag
        case SwapEma():
            if run.state.ema_params is None:
                raise ValueError("no EMA weights to swap: create the state with ema=True")
            run.state = run.state.replace(params=run.state.ema_params,
                                          ema_params=run.state.params)


def _with_learning_rate(state: TrainState, value: float) -> TrainState:
    """Sets `lr_scale` so that the current rate becomes `value` (the schedule keeps its shape)."""
    current, scale = jax.device_get((learning_rate(state.opt_state), lr_scale(state.opt_state)))
    base = float(current) / float(scale) if float(scale) else 0.0
    if base == 0.0:
        raise ValueError(
            f"cannot set the learning rate to {value}: the schedule is at 0 here (e.g. the "
            "start of a warm-up), so no scale of it reaches that rate")
    return state.replace(opt_state=with_lr_scale(state.opt_state, value / base))


def _with_params(state: TrainState, params: Any, batch_stats: Any) -> TrainState:
    like = lambda new, old: jax.device_put(jnp.asarray(new, old.dtype), old.sharding)  # noqa: E731
    state = state.replace(params=jax.tree.map(like, params, state.params))
    if batch_stats is not None:
        state = state.replace(batch_stats=jax.tree.map(like, batch_stats, state.batch_stats))
    return state


# --- Evaluation and prediction ----------------------------------------------------------


def evaluate_sums(params: Any, batch_stats: Any, data: BatchSource, steps: Steps,
                  mesh=None) -> dict[str, np.ndarray]:
    """The evaluation sums over every example of `data` (the padded last batch masked out),
    on the host: loss, accuracy, and top-k hits and the confusion matrix when `steps` counts
    them. Compiled once per `steps`, however often it is called."""
    sums = place_replicated(steps.zero_eval_sums(), mesh or make_mesh())
    sync = dist.sync_every_step()
    for batch in data.eval_batches():
        sums = steps.eval(params, batch_stats, sums, batch)
        if sync:  # several processes on CPU: one step in flight (see dist.sync_every_step)
            jax.block_until_ready(sums)
    return jax.device_get(sums)


def evaluate(params: Any, batch_stats: Any, data: BatchSource, steps: Steps,
             mesh=None) -> Logs:
    """Keras-style logs (loss, accuracy, top_k_accuracy if counted) over all of `data`."""
    return host_logs(evaluate_sums(params, batch_stats, data, steps, mesh))


def predict(params: Any, batch_stats: Any, images: np.ndarray, steps: Steps,
            batch_size: int = 500, mesh=None) -> np.ndarray:
    """Keras `model.predict`: class probabilities for uint8 images, batched.

    One compiled shape: the last batch is padded and the padding dropped. Pure in its inputs:
    it runs with the weights it is given (pass `state.ema_params` for the EMA)."""
    mesh = mesh or make_mesh()
    batch_size = -(-min(batch_size, len(images)) // mesh.devices.size) * mesh.devices.size
    outputs = []
    for start in range(0, len(images), batch_size):
        chunk = np.asarray(images[start : start + batch_size])
        padded = np.zeros((batch_size, *chunk.shape[1:]), chunk.dtype)
        padded[: len(chunk)] = chunk
        probs = steps.predict(params, batch_stats, jax.device_put(padded, batch_sharded(mesh)))
        outputs.append(np.asarray(probs)[: len(chunk)])
    return np.concatenate(outputs)


# --- Training ---------------------------------------------------------------------------


@dataclasses.dataclass
class _Loop:
    """What one `fit` call works with; its methods are the loop's parts."""

    run: _Run
    train: BatchSource
    validation: BatchSource | None
    steps: Steps
    mesh: Any
    callbacks: CallbackList
    backup: Backups | None
    interrupt: threading.Event | None
    sync_every_step: bool = False  # several processes on CPU: see dist.sync_every_step

    def epoch(self) -> Logs:
        run = self.run
        if run.step_in_epoch == 0:  # else: resumed inside the epoch with its restored sums
            run.sums, run.nonfinite_steps = place_replicated(zero_sums(), self.mesh), 0
        batches = self.train.train_batches(run.epoch, run.step_in_epoch)
        try:
            self._batches(batches)
        finally:
            if hasattr(batches, "close"):
                batches.close()  # stops a streaming source's workers mid-epoch too
        host = jax.device_get(run.sums)
        run.nonfinite_steps = int(host["nonfinite"])
        logs = host_logs(host)
        if host["count"] > 0:
            logs["learning_rate"] = float(host["learning_rate"])
        return logs

    def _batches(self, batches: Iterator) -> None:
        run, cbs = self.run, self.callbacks
        for index, batch in enumerate(batches, run.step_in_epoch):
            if run.stop_training:
                break
            cbs.call("on_train_batch_begin", index, {})
            previous = run.sums  # not donated: read below, one step late
            run.state, run.sums = self.steps.train(run.state, run.sums, batch)
            if self.sync_every_step:
                jax.block_until_ready(run.sums)
            run.step_in_epoch = index + 1
            logs = self._late_logs(previous) if cbs.wants_batch_logs(index) else {}
            cbs.call("on_train_batch_end", index, logs)
            if self.backup is not None and self.backup.due(run):
                self.backup.save(run, cbs, epoch_done=False)
            if self.interrupted(at_epoch_end=False):
                self._stop_interrupted()

    def interrupted(self, at_epoch_end: bool) -> bool:
        """Whether to stop for a signal; the same answer in every process."""
        run = self.run
        global_step = None if at_epoch_end else run.epoch * run.steps_per_epoch + run.step_in_epoch
        return dist.stop_agreed(self.interrupt is not None and self.interrupt.is_set(),
                                global_step)

    def _late_logs(self, previous: Sums) -> Logs:
        """The running logs through the previous step: reading them waits for that step
        only, while the one just dispatched keeps the device busy."""
        host = jax.device_get(previous)
        self.run.nonfinite_steps = int(host["nonfinite"])
        return host_logs(host)

    def _stop_interrupted(self) -> None:
        run = self.run
        if self.backup is not None:
            self.backup.save(run, self.callbacks, epoch_done=False)
        raise TrainingInterrupted(run.epoch, run.step_in_epoch, self.backup is not None)

    def validate(self) -> Logs:
        """Evaluates on the validation data: the scalar logs (prefixed `val_`) go to the
        callbacks; the confusion matrix, when counted, goes on the run record, where callbacks
        read it as `self.loop.validation_confusion` (logs stay plain numbers)."""
        cbs, run = self.callbacks, self.run
        cbs.call("on_test_begin", {})
        sums = evaluate_sums(eval_params(run.state, run.eval_with_ema), run.state.batch_stats,
                             self.validation, self.steps, self.mesh)
        run.validation_confusion = _read_only(sums.get("confusion"))
        logs = host_logs(sums)
        cbs.call("on_test_end", logs)
        return {f"val_{k}": v for k, v in logs.items()}


def _read_only(array: np.ndarray | None) -> np.ndarray | None:
    """A host copy that no callback can change in place (they all see the same one)."""
    if array is None:
        return None
    array = np.array(array)
    array.flags.writeable = False
    return array


def fit(
    state: TrainState,
    train: BatchSource,
    *,
    steps: Steps,
    epochs: int,
    validation: BatchSource | None = None,
    callbacks: Sequence[Callback] = (),
    verbose: int = 1,
    initial_epoch: int = 0,
    backup: BackupOptions | None = None,
    interrupt: threading.Event | None = None,
    mesh=None,
) -> tuple[TrainState, History]:
    """Keras's `model.fit`, functionally: returns the final state and the History.

    `state` itself is left intact: the loop trains (and donates the buffers of) its own copy.
    With `backup` (or a `BackupAndRestore` callback) the run is saved at every epoch end and
    every `backup.every_steps` steps, and a later call with the same backup directory
    continues exactly where the last backup was taken.
    """
    mesh = mesh or make_mesh()
    run = _Run(state=place_replicated(state, mesh), epochs=epochs,
               steps_per_epoch=train.steps_per_epoch, epoch=initial_epoch)
    view = LoopView(run)
    history = History()
    verbose = verbose if dist.is_writer() else 0  # one progress bar for a multi-process run
    progress = [ProgbarLogger(verbose)] if verbose else []  # Keras: progbar first, History last
    cbs = CallbackList([*progress, *callbacks, history], view,
                       lambda: [_apply(run, r) for r in view.take_requests()])
    options = backup_options(callbacks, backup)
    backups = Backups(options, mesh) if options is not None else None
    loop = _Loop(run, train, validation, steps, mesh, cbs, backups, interrupt,
                 dist.sync_every_step())
    saved_states = backups.restore(run) if backups is not None else None
    if saved_states is not None and verbose:
        print(f"resuming at epoch {run.epoch + 1}, step {run.step_in_epoch} of "
              f"{run.steps_per_epoch}", flush=True)
    cbs.call("on_train_begin", {})
    if saved_states is not None:
        missing = cbs.load_state_dicts(saved_states)
        if missing and dist.is_writer():  # the others lack process 0's writers by design
            warnings.warn(f"the backup holds states of callbacks this run lacks: {missing}",
                          stacklevel=2)
    elif backups is not None:
        # A first backup before any step: a run killed in its first steps then resumes as the
        # same run (its TensorBoard files are cut back instead of a second run logged beside).
        backups.save(run, cbs, epoch_done=False)
    logs = _epochs(loop)
    cbs.call("on_train_end", logs)
    if backups is not None:
        backups.finish()
    return run.state, history


def _epochs(loop: _Loop) -> Logs:
    run, cbs = loop.run, loop.callbacks
    logs: Logs = {}
    for epoch in range(run.epoch, run.epochs):
        if run.stop_training and run.step_in_epoch == 0:
            break  # asked to stop before this epoch began (e.g. resumed after a stop)
        run.epoch = epoch
        cbs.call("on_epoch_begin", epoch, {})
        logs = loop.epoch()
        if loop.validation is not None:
            logs.update(loop.validate())
        cbs.call("on_epoch_end", epoch, logs)
        if loop.backup is not None:
            loop.backup.save(run, cbs, epoch_done=True)
        run.epoch, run.step_in_epoch = epoch + 1, 0
        if loop.interrupted(at_epoch_end=True):
            raise TrainingInterrupted(run.epoch, 0, loop.backup is not None)
        if run.stop_training:
            break
    return logs
