"""`train_and_evaluate(cfg, workdir)`: a whole experiment, from config to test accuracy.

Glue (I/O): loads the data, builds the model, optimizer and steps from the config, runs `fit`
with the standard callbacks, saves the final checkpoint, evaluates on the test split and
writes `results.json`. Experiments call this; tests call it with the `smoke` configs.

Work directory layout:
    <workdir>/tensorboard/{train,validation}/   TensorBoard event files (Keras's layout)
    <workdir>/history.csv                         CSVLogger
    <workdir>/checkpoints/<step>/                 final Orbax checkpoint
    <workdir>/results.json                        config, test metrics, timings

Besides the test metrics, the results hold the training accuracy measured like the validation
accuracy (inference mode: no dropout, no augmentation, final weights) on up to
`TRAIN_EVAL_LIMIT` training images. The epoch's running `accuracy` is not that: it averages
over weights that changed during the epoch, with dropout and augmentation on, so it understates
how well the model fits its training data and hides overfitting.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax

from convjax import checkpoint
from convjax.callbacks import Callback, CSVLogger, TensorBoard
from convjax.config import Config
from convjax.data.arrays import ArraySource
from convjax.data.batch_sources import make_batch_source
from convjax.data.batches import BatchSource
from convjax.data.datasets import load_splits
from convjax.loop import evaluate, fit
from convjax.models.cnn import CNN
from convjax.models.summary import summary
from convjax.optim import make_optimizer, make_schedule
from convjax.sharding import make_mesh
from convjax.steps import Steps, make_steps
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
          num_classes: int) -> tuple[CNN, TrainState, Steps]:
    """Model, initial state and the jitted steps; the optimizer owns the schedule."""
    model_cfg = dataclasses.replace(cfg.model, num_classes=num_classes)
    model = CNN(model_cfg)
    schedule = make_schedule(cfg.optim, steps_per_epoch, steps_per_epoch * cfg.train.epochs)
    tx = make_optimizer(cfg.optim, schedule)
    key = jax.random.key(cfg.train.seed)
    state = init_train_state(model, tx, key, image_shape, ema=cfg.train.ema_momentum > 0)
    steps = make_steps(model=model, tx=tx, augment=cfg.augment, l2=cfg.model.l2,
                       ema_momentum=cfg.train.ema_momentum)
    return model, state, steps


def _sources(cfg: Config, train: ArraySource, val: ArraySource | None, mesh
             ) -> tuple[BatchSource, BatchSource | None]:
    train_batches = make_batch_source(train, batch_size=cfg.train.batch_size,
                                      seed=cfg.train.seed, mesh=mesh)
    val_batches = None if val is None else make_batch_source(
        val, batch_size=cfg.train.eval_batch_size, seed=0, mesh=mesh, shuffle=False)
    return train_batches, val_batches


def train_and_evaluate(
    cfg: Config, workdir: str | Path, extra_callbacks: Sequence[Callback] = ()
) -> dict[str, Any]:
    """Runs the experiment described by `cfg`; returns (and saves) its results."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train, val, test = load_splits(cfg.data, cfg.train.seed)
    load_s = time.perf_counter() - t0
    mesh = make_mesh()
    train_batches, val_batches = _sources(cfg, train, val, mesh)
    num_classes = check_num_classes(cfg.model.num_classes, len(train.class_names))
    model, state, steps = build(cfg, train.image_shape, train_batches.steps_per_epoch,
                                num_classes)
    model_text = summary(model, train.image_shape)
    if cfg.train.verbose:
        print(model_text, flush=True)
        print(f"train {len(train)}, validation {len(val) if val else 0}, test {len(test)} "
              f"images of shape {train.image_shape}, {num_classes} classes, on "
              f"{jax.device_count()} device(s)")
    callbacks = [
        CSVLogger(workdir / "history.csv"),
        TensorBoard(workdir / "tensorboard", model_summary=model_text),
        *extra_callbacks,
    ]
    t1 = time.perf_counter()
    state, history = fit(state, train_batches, steps=steps, epochs=cfg.train.epochs,
                         validation=val_batches, callbacks=callbacks, verbose=cfg.train.verbose,
                         mesh=mesh)
    train_s = time.perf_counter() - t1
    params = eval_params(state, use_ema=cfg.train.ema_momentum > 0)

    def score(source: ArraySource):
        batches = make_batch_source(source, batch_size=cfg.train.eval_batch_size, seed=0,
                                    mesh=mesh, shuffle=False)
        return evaluate(params, state.batch_stats, batches, steps, mesh)

    test_logs = score(test)
    train_logs = score(train.sample(TRAIN_EVAL_LIMIT, seed=0))
    results = {
        "config": dataclasses.asdict(cfg),
        "test_loss": test_logs["loss"], "test_accuracy": test_logs["accuracy"],
        "train_eval_loss": train_logs["loss"], "train_eval_accuracy": train_logs["accuracy"],
        "history": history.history, "epochs_run": len(history.epoch),
        "load_seconds": round(load_s, 1), "train_seconds": round(train_s, 1),
        "train_images_per_second": round(len(train) * len(history.epoch) / train_s, 1),
    }
    results["checkpoint"] = str(checkpoint.save_state(
        workdir / "checkpoints", state, {"epochs_run": len(history.epoch)}
    ))
    (workdir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    if cfg.train.verbose:
        print(f"test accuracy {test_logs['accuracy']:.4f} (loss {test_logs['loss']:.4f}); "
              f"trained {train_s:.0f}s")
    return results
