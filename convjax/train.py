"""`train_and_evaluate(cfg, workdir)`: a whole experiment, from config to test accuracy.

Glue (I/O): the runner. In order, and before any data is read, it decides what the workdir
holds (`rundir.open_run`: start, continue, report a finished run, or refuse another config);
then it loads the data, builds the model and the steps, wires the callbacks the config
enables, and runs `fit` with backups (every `train.backup_every_steps` steps and at each
epoch end) and SIGINT/SIGTERM turned into "finish the step, back up, stop". At the end it
evaluates on the test split, prints and writes results.json (with provenance and timings
without compilation or validation), and only then saves the final state, so a full disk at
the end loses no result.

Besides the test metrics, the results hold the training accuracy measured like the validation
accuracy (inference mode: no dropout, no augmentation, final weights) on up to
`TRAIN_EVAL_LIMIT` training images. The epoch's running `accuracy` is not that: it averages
over weights that changed during the epoch, with dropout and augmentation on, so it understates
how well the model fits its training data and hides overfitting.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jax

from convjax import checkpoint
from convjax.cache import cache_root
from convjax.callbacks import BackupOptions, Callback
from convjax.callbacks.from_config import make_callbacks
from convjax.callbacks.timing import RunTimer
from convjax.config import Config
from convjax.data.arrays import ArraySource
from convjax.data.batch_sources import make_batch_source
from convjax.data.batches import BatchSource
from convjax.data.datasets import load_splits
from convjax.loop import TrainingInterrupted, evaluate, fit
from convjax.models.cnn import CNN
from convjax.models.summary import summary
from convjax.optim import make_optimizer, make_schedule
from convjax.provenance import provenance
from convjax.rundir import FINAL, RESULTS, Run, open_run, write_json_atomic
from convjax.sharding import make_mesh
from convjax.steps import Steps, make_steps
from convjax.train_state import TrainState, eval_params, init_train_state

TRAIN_EVAL_LIMIT = 10_000  # training images re-evaluated in inference mode at the end


class Interrupted(Exception):
    """The run stopped on SIGINT/SIGTERM after writing a backup; `exit_code` is 128 + signal."""

    def __init__(self, signum: int, stopped: TrainingInterrupted, workdir: Path):
        name = signal.Signals(signum).name
        super().__init__(f"{name}: stopped at epoch {stopped.epoch + 1}, step "
                         f"{stopped.step_in_epoch}; backup in {workdir / 'backup'}. "
                         "Run the same command again to continue.")
        self.exit_code = 128 + signum


def check_num_classes(configured: int, data_classes: int) -> int:
    """The model's output count: the data's class count, unless the config says otherwise
    (then both must agree: a 12-class folder on a 10-way head trains on NaN losses)."""
    if configured and configured != data_classes:
        raise ValueError(f"model.num_classes={configured} but the data has {data_classes} "
                         "classes; remove the setting (it defaults to the data's) or fix it")
    return data_classes


def build(cfg: Config, image_shape: tuple[int, ...], steps_per_epoch: int,
          num_classes: int) -> tuple[CNN, TrainState, Steps]:
    """Model, initial state and the jitted steps; the optimizer owns the schedule."""
    model = CNN(dataclasses.replace(cfg.model, num_classes=num_classes))
    schedule = make_schedule(cfg.optim, steps_per_epoch, steps_per_epoch * cfg.train.epochs)
    tx = make_optimizer(cfg.optim, schedule)
    key = jax.random.key(cfg.train.seed)
    state = init_train_state(model, tx, key, image_shape, ema=cfg.train.ema_momentum > 0)
    steps = make_steps(model=model, tx=tx, augment=cfg.augment, l2=cfg.model.l2,
                       ema_momentum=cfg.train.ema_momentum)
    return model, state, steps


def enable_compilation_cache() -> None:
    """JAX's persistent compilation cache under $CONVJAX_CACHE/jax: a second process skips
    compiling what an earlier one compiled (the course CNN: build + 1 epoch 16.0 s cold,
    3.8 s warm, measured on the 2-core CPU)."""
    jax.config.update("jax_compilation_cache_dir", str(cache_root() / "jax"))


@contextlib.contextmanager
def stop_on_signals() -> Iterator[tuple[threading.Event, list[int]]]:
    """SIGINT and SIGTERM set an event (fit finishes its step, backs up and stops) instead of
    raising in the middle of a step; the previous handlers come back afterwards."""
    event, received = threading.Event(), []

    def handler(signum, frame):
        del frame
        received.append(signum)
        event.set()

    if threading.current_thread() is not threading.main_thread():
        yield event, received  # signals reach only the main thread: nothing to install
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield event, received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _batch_sources(cfg: Config, train: ArraySource, val: ArraySource | None, mesh
                   ) -> tuple[BatchSource, BatchSource | None]:
    train_batches = make_batch_source(train, batch_size=cfg.train.batch_size,
                                      seed=cfg.train.seed, mesh=mesh)
    val_batches = None if val is None else make_batch_source(
        val, batch_size=cfg.train.eval_batch_size, seed=0, mesh=mesh, shuffle=False)
    return train_batches, val_batches


def train_and_evaluate(cfg: Config, workdir: str | Path, restart: bool = False,
                       extra_callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Runs (or continues, or reports) the experiment described by `cfg` in `workdir`."""
    run = open_run(cfg, workdir, restart)
    if run.status == "finished":
        results = run.results()
        _report(cfg, results, f"finished run in {run.workdir}; nothing to train")
        return results
    if cfg.train.compilation_cache:
        enable_compilation_cache()
    t0 = time.perf_counter()
    train, val, test = load_splits(cfg.data, cfg.train.seed)
    load_s = time.perf_counter() - t0
    mesh = make_mesh()
    train_batches, val_batches = _batch_sources(cfg, train, val, mesh)
    num_classes = check_num_classes(cfg.model.num_classes, len(train.class_names))
    model, state, steps = build(cfg, train.image_shape, train_batches.steps_per_epoch,
                                num_classes)
    model_text = summary(model, train.image_shape)
    if cfg.train.verbose:
        print(model_text, flush=True)
        print(f"train {len(train)}, validation {len(val) if val else 0}, test {len(test)} "
              f"images of shape {train.image_shape}, {num_classes} classes, on "
              f"{jax.device_count()} device(s)", flush=True)
    timer = RunTimer()
    callbacks = [*make_callbacks(cfg.callbacks, run.workdir, model_summary=model_text),
                 *extra_callbacks, timer]
    backup = BackupOptions(run.backup_dir, every_steps=cfg.train.backup_every_steps, keep=2)
    with stop_on_signals() as (interrupt, received):
        try:
            state, history = fit(state, train_batches, steps=steps, epochs=cfg.train.epochs,
                                 validation=val_batches, callbacks=callbacks,
                                 verbose=cfg.train.verbose, backup=backup,
                                 interrupt=interrupt, mesh=mesh)
        except TrainingInterrupted as stopped:
            raise Interrupted(received[0], stopped, run.workdir) from None
    params = eval_params(state, use_ema=cfg.train.ema_momentum > 0)

    def score(source: ArraySource) -> dict[str, float]:
        batches = make_batch_source(source, batch_size=cfg.train.eval_batch_size, seed=0,
                                    mesh=mesh, shuffle=False)
        return evaluate(params, state.batch_stats, batches, steps, mesh)

    test_logs, train_logs = score(test), score(train.sample(TRAIN_EVAL_LIMIT, seed=0))
    results = {
        "config": dataclasses.asdict(cfg),
        "test_loss": test_logs["loss"], "test_accuracy": test_logs["accuracy"],
        "train_eval_loss": train_logs["loss"], "train_eval_accuracy": train_logs["accuracy"],
        "history": history.history, "epochs_run": len(history.epoch),
        "resumed": run.status == "unfinished", "load_seconds": round(load_s, 1),
        **timer.summary(cfg.train.batch_size), "provenance": provenance(),
    }
    _report(cfg, results, "")
    write_json_atomic(run.workdir / RESULTS, results)  # first: the result survives a full disk
    save_final(run, state, results)
    return results


def save_final(run: Run, state: TrainState, results: dict[str, Any]) -> None:
    """The final state, then the backups go (the final state replaces them)."""
    try:
        checkpoint.save_state(run.workdir / FINAL, state, {"epochs_run": results["epochs_run"]})
    except OSError as err:  # e.g. a full disk: results.json is already written
        checkpoint.remove_temporaries(run.workdir / FINAL)
        warnings.warn(f"the final state could not be saved in {run.workdir / FINAL} ({err}); "
                      f"the results are in {run.workdir / RESULTS}", stacklevel=2)
        return
    checkpoint.delete_backups(run.backup_dir)


def _report(cfg: Config, results: dict[str, Any], note: str) -> None:
    if not cfg.train.verbose:
        return
    if note:
        print(note, flush=True)
    print(f"test accuracy {results['test_accuracy']:.4f} (loss {results['test_loss']:.4f}); "
          f"trained {results.get('train_seconds', 0):.0f}s at "
          f"{results.get('train_images_per_second', 0):.0f} images/s, compile "
          f"{results.get('compile_seconds', 0):.0f}s", flush=True)
