"""`train_and_evaluate(cfg, workdir)`: a whole experiment, from config to test accuracy.

Glue (I/O): the runner. In order, and before any data is read, it decides what the workdir
holds (`rundir.open_run`: start, continue, report a finished run, or refuse another config);
then it opens the data (random-access sources: an image folder is only listed) and makes the
batch sources, which put a split on the devices when it fits `data.device_memory_budget_mb`
(decoding a folder once, through its cache) and stream it batch by batch when it does not
(a budget that cannot hold one batch is refused); it builds the model and the steps, wires
the callbacks the config enables, and runs `fit` with backups (every
`train.backup_every_steps` steps and at each epoch end) and SIGINT/SIGTERM turned into "finish
the step, back up, stop". At the end it
evaluates on the test split, prints and writes results.json (with provenance and timings
without compilation or validation), and only then saves the final state, so a full disk at
the end loses no result.

With several processes (`dist` section, `convjax.launch`) it joins them first; every process
trains and saves checkpoints together, and only process 0 (`dist.is_writer`) prints, writes
config.json, results.json and the CSV and TensorBoard logs.

Besides the test metrics (loss, accuracy, top-k accuracy, the confusion matrix with per-class
accuracy and macro precision, recall and F1; the same `val_*` from the last validation's
matrix; the test matrix is also drawn in TensorBoard's `test` run), the class weights used and
the layer formulations "auto" resolved to on this backend, the results hold the training
accuracy measured like the validation accuracy (inference mode: no dropout, no augmentation,
final weights) on up to `TRAIN_EVAL_LIMIT` training images. The epoch's running `accuracy` is not
that: it averages over weights that changed during the epoch, with dropout and augmentation
on, so it understates how well the model fits its training data and hides overfitting.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from convjax import checkpoint, dist
from convjax.cache import cache_root
from convjax.callbacks import BackupOptions, Callback
from convjax.callbacks.from_config import TENSORBOARD_DIR, make_callbacks
from convjax.callbacks.recorders import History, ValidationConfusion
from convjax.callbacks.tensorboard import write_test_confusion
from convjax.callbacks.timing import RunTimer
from convjax.class_weights import class_weight_vector
from convjax.config import Config, config_to_dict
from convjax.config_fields import ConfigError
from convjax.data.batch_sources import (
    batch_bytes_per_device,
    default_device_budget,
    make_batch_source,
)
from convjax.data.batches import BatchSource
from convjax.data.datasets import load_splits
from convjax.data.source import Source
from convjax.data.splits import sample
from convjax.data.streaming_batches import StreamingBatches
from convjax.loop import TrainingInterrupted, evaluate_sums, fit
from convjax.metrics import confusion_report, host_logs
from convjax.models.cnn import CNN, resolve_model_impls, resolved_impls
from convjax.models.summary import summary
from convjax.optim import make_optimizer, make_schedule
from convjax.provenance import provenance
from convjax.rundir import FINAL, RESULTS, STATUSES, Run, open_run, write_json_atomic
from convjax.sharding import make_mesh
from convjax.steps import Steps, make_steps
from convjax.stopping import Interrupted, stop_on_signals
from convjax.train_state import TrainState, eval_params, init_train_state

TRAIN_EVAL_LIMIT = 10_000  # training images re-evaluated in inference mode at the end


def check_num_classes(configured: int, data_classes: int) -> int:
    """The model's output count: the data's class count, unless the config says otherwise
    (then both must agree: a 12-class folder on a 10-way head trains on NaN losses)."""
    if configured and configured != data_classes:
        raise ValueError(f"model.num_classes={configured} but the data has {data_classes} "
                         "classes; remove the setting (it defaults to the data's) or fix it")
    return data_classes


def build(cfg: Config, image_shape: tuple[int, ...], steps_per_epoch: int,
          num_classes: int, class_weights: tuple[float, ...] | None = None
          ) -> tuple[CNN, TrainState, Steps]:
    """Model (its "auto" layer formulations resolved for this backend), initial state and the
    jitted steps; the optimizer owns the schedule."""
    model = CNN(resolve_model_impls(dataclasses.replace(cfg.model, num_classes=num_classes)))
    schedule = make_schedule(cfg.optim, steps_per_epoch, steps_per_epoch * cfg.train.epochs)
    tx = make_optimizer(cfg.optim, schedule)
    key = jax.random.key(cfg.train.seed)
    state = init_train_state(model, tx, key, image_shape, ema=cfg.train.ema_momentum > 0)
    steps = make_steps(model=model, tx=tx, augment=cfg.augment, l2=cfg.model.l2,
                       l2_layers=cfg.model.l2_layers,
                       ema_momentum=cfg.train.ema_momentum, class_weights=class_weights,
                       num_classes=num_classes, top_k=cfg.train.top_k)
    return model, state, steps


def enable_compilation_cache() -> None:
    """JAX's persistent compilation cache under $CONVJAX_CACHE/jax: a second process skips
    compiling what an earlier one compiled. Measured on the 2-core CPU (load 0.3): the course
    CNN's first train step took 3.63 s cold and 0.63 s with the cache warm (`compile_seconds`
    of `python -m experiments.cifar10_cnn --smoke` run twice into fresh workdirs)."""
    jax.config.update("jax_compilation_cache_dir", str(cache_root() / "jax"))


def device_budget_bytes(cfg: Config, train: Source, mesh) -> int | None:
    """`data.device_memory_budget_mb` in bytes (None: automatic), refused with a
    `ConfigError` if even one training or evaluation batch would not fit in it."""
    mb = cfg.data.device_memory_budget_mb
    budget = int(mb * 2**20) if mb > 0 else None
    limit = default_device_budget(mesh) if budget is None else budget
    for key in ("batch_size", "eval_batch_size"):
        size = getattr(cfg.train, key)
        need = batch_bytes_per_device(train, size, mesh.devices.size)
        if need > limit:
            raise ConfigError("data.device_memory_budget_mb", (
                f"data.device_memory_budget_mb={mb:g}{'' if budget else ' (automatic)'} is "
                f"{limit:,} bytes per device, less than one batch (train.{key}={size} images "
                f"of shape {train.image_shape}: {need:,} bytes per device); raise it or lower "
                f"train.{key}"), named=True)
    return budget


def _batch_sources(cfg: Config, train: Source, val: Source | None, mesh, budget: int | None
                   ) -> tuple[BatchSource, BatchSource | None]:
    common = {"mesh": mesh, "device_budget_bytes": budget, "progress": _progress(cfg)}
    train_batches = make_batch_source(train, batch_size=cfg.train.batch_size,
                                      seed=cfg.train.seed, name="train", **common)
    val_batches = None if val is None else make_batch_source(
        val, batch_size=cfg.train.eval_batch_size, seed=0, shuffle=False, name="validation",
        **common)
    return train_batches, val_batches


def _progress(cfg: Config) -> bool:
    """Whether slow data preparation shows its progress (process 0 writes the logs)."""
    return cfg.train.verbose > 0 and jax.process_index() == 0


def _placement(batches: BatchSource | None) -> str:
    if batches is None:
        return "none"
    if isinstance(batches, StreamingBatches):
        return "streamed"
    return "sharded on device" if getattr(batches, "shard_data", False) else "on device"


def train_and_evaluate(cfg: Config, workdir: str | Path, restart: bool = False,
                       extra_callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Runs (or continues, or reports) the experiment described by `cfg` in `workdir`."""
    dist.initialize(cfg.dist)  # first: before anything touches devices
    if not dist.is_writer():  # the same run, silent: decisions come from the same metrics
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, verbose=0))
    run = _open_run(cfg, workdir, restart)
    if run.status == "finished":
        results = run.results()
        _report(cfg, results, f"finished run in {run.workdir}; nothing to train")
        return results
    if cfg.train.compilation_cache:
        enable_compilation_cache()
    t0 = time.perf_counter()
    train, val, test = load_splits(cfg.data, cfg.train.seed, progress=_progress(cfg))
    mesh = make_mesh()
    budget = device_budget_bytes(cfg, train, mesh)  # refused here, before any decoding
    train_batches, val_batches = _batch_sources(cfg, train, val, mesh, budget)
    load_s = time.perf_counter() - t0  # listing, and reading what sits on the devices
    num_classes = check_num_classes(cfg.model.num_classes, len(train.class_names))
    class_weights = class_weight_vector(cfg.train.class_weight, train.labels, num_classes)
    model, state, steps = build(cfg, train.image_shape, train_batches.steps_per_epoch,
                                num_classes, class_weights)
    model_text = summary(model, train.image_shape)
    if cfg.train.verbose:
        print(model_text, flush=True)
        print(f"train {len(train)} ({_placement(train_batches)}), validation "
              f"{len(val) if val else 0} ({_placement(val_batches)}), test {len(test)} "
              f"images of shape {train.image_shape}, {num_classes} classes, on "
              f"{jax.device_count()} device(s)", flush=True)
    timer, confusion = RunTimer(), ValidationConfusion()
    callbacks = [*make_callbacks(cfg.callbacks, run.workdir, model_summary=model_text,
                                hparams=config_to_dict(cfg), writers=dist.is_writer(),
                                class_names=train.class_names),
                 *extra_callbacks, timer, confusion]
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

    def score(source: Source, name: str) -> dict[str, Any]:
        batches = make_batch_source(source, batch_size=cfg.train.eval_batch_size, seed=0,
                                    mesh=mesh, shuffle=False, device_budget_bytes=budget,
                                    progress=_progress(cfg), name=name)
        try:
            return evaluate_sums(params, state.batch_stats, batches, steps, mesh)
        finally:
            batches.close()

    test_sums = score(test, "test")
    _draw_test_confusion(cfg, run, test_sums["confusion"], history, train.class_names)
    train_logs = host_logs(score(sample(train, TRAIN_EVAL_LIMIT, seed=0),
                                 "train (evaluation sample)"))
    results = {
        "config": dataclasses.asdict(cfg),
        **{f"test_{k}": v for k, v in host_logs(test_sums).items()},
        "train_eval_loss": train_logs["loss"], "train_eval_accuracy": train_logs["accuracy"],
        "class_names": list(train.class_names),  # the confusion matrix's row and column order
        **confusion_report(test_sums["confusion"], prefix="test_"),
        **({} if confusion.matrix is None else confusion_report(confusion.matrix, prefix="val_")),
        "class_weights": steps.config.class_weights,  # what the train step weighted by
        "resolved_impls": {"backend": jax.default_backend(), **resolved_impls(model.cfg)},
        "history": history.history, "epochs_run": len(history.epoch),
        "resumed": run.status == "unfinished", "load_seconds": round(load_s, 1),
        **timer.summary(cfg.train.batch_size), "provenance": provenance(),
    }
    _report(cfg, results, "")
    if dist.is_writer():
        write_json_atomic(run.workdir / RESULTS, results)  # first: survives a full disk
    save_final(run, state, results)
    return results


def _draw_test_confusion(cfg: Config, run: Run, matrix: np.ndarray, history: History,
                         class_names: Sequence[str]) -> None:
    """The test confusion matrix in TensorBoard's `test` run, at the last epoch's step (beside
    the last validation matrix). Before results.json: a run that stops in between is continued
    and draws it again, replacing this one (`write_test_confusion`)."""
    tensorboard = cfg.callbacks.tensorboard
    if dist.is_writer() and tensorboard.enabled and tensorboard.confusion_matrix:
        step = history.epoch[-1] if history.epoch else 0
        write_test_confusion(run.workdir / TENSORBOARD_DIR, matrix, step, class_names)


def _open_run(cfg: Config, workdir: str | Path, restart: bool) -> Run:
    """`open_run` in process 0 only (it may move the workdir aside and writes config.json);
    the others take its status. If process 0 refuses the run, the others wait here until the
    launcher (or the cluster) stops them."""
    if jax.process_count() == 1:
        return open_run(cfg, workdir, restart)
    from jax.experimental import multihost_utils  # noqa: PLC0415 -- multi-process only

    run = open_run(cfg, workdir, restart) if dist.is_writer() else None
    code = STATUSES.index(run.status) if run is not None else 0
    code = int(multihost_utils.broadcast_one_to_all(np.int32(code)))
    return run or Run(Path(workdir), STATUSES[code])


def save_final(run: Run, state: TrainState, results: dict[str, Any]) -> None:
    """The final state, then the backups go (the final state replaces them)."""
    try:
        checkpoint.save_state(run.workdir / FINAL, state, {"epochs_run": results["epochs_run"]})
        if not dist.is_writer():
            return  # every process saves (Orbax is collective); process 0 deletes
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
