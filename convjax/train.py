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
from convjax.data.datasets import load_splits
from convjax.data.loader import steps_per_epoch
from convjax.loop import evaluate, fit
from convjax.models.cnn import CNN
from convjax.models.summary import summary
from convjax.optim import make_optimizer, make_schedule
from convjax.steps import make_eval_step, make_train_step
from convjax.train_state import eval_params, init_train_state

TRAIN_EVAL_LIMIT = 10_000  # training images re-evaluated in inference mode at the end


def build(cfg: Config, image_shape: tuple[int, int, int], n_train: int) -> dict[str, Any]:
    """Model, optimizer, schedule, initial state and the two (unjitted) steps."""
    model = CNN(cfg.model)
    tx = make_optimizer(cfg.optim)
    per_epoch = steps_per_epoch(n_train, cfg.train.batch_size)
    schedule = make_schedule(cfg.optim, per_epoch, per_epoch * cfg.train.epochs)
    key = jax.random.key(cfg.train.seed)
    state = init_train_state(model, tx, key, image_shape, ema=cfg.train.ema_momentum > 0)
    train_step = make_train_step(
        model=model, tx=tx, schedule=schedule, augment=cfg.augment, l2=cfg.model.l2,
        ema_momentum=cfg.train.ema_momentum,
    )
    eval_step = make_eval_step(model=model)
    return dict(model=model, schedule=schedule, state=state,
                train_step=train_step, eval_step=eval_step)


def train_and_evaluate(
    cfg: Config, workdir: str | Path, extra_callbacks: Sequence[Callback] = ()
) -> dict[str, Any]:
    """Runs the experiment described by `cfg`; returns (and saves) its results."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train, val, test = load_splits(cfg.data, cfg.train.seed)
    load_s = time.perf_counter() - t0
    parts = build(cfg, train.image_shape, len(train))
    model_text = summary(parts["model"], train.image_shape)
    if cfg.train.verbose:
        print(model_text, flush=True)
        print(f"train {len(train)}, validation {len(val) if val else 0}, test {len(test)} "
              f"images of shape {train.image_shape} on {jax.device_count()} device(s)")
    callbacks = [
        CSVLogger(workdir / "history.csv"),
        TensorBoard(workdir / "tensorboard", model_summary=model_text),
        *extra_callbacks,
    ]
    t1 = time.perf_counter()
    state, history = fit(
        parts["state"], train, train_step=parts["train_step"], eval_step=parts["eval_step"],
        schedule=parts["schedule"], epochs=cfg.train.epochs, batch_size=cfg.train.batch_size,
        seed=cfg.train.seed, validation=val, eval_batch_size=cfg.train.eval_batch_size,
        callbacks=callbacks, verbose=cfg.train.verbose,
    )
    train_s = time.perf_counter() - t1
    params = eval_params(state, use_ema=cfg.train.ema_momentum > 0)
    test_logs = evaluate(params, state.batch_stats, test, parts["eval_step"],
                         cfg.train.eval_batch_size)
    train_logs = evaluate(params, state.batch_stats, train.sample(TRAIN_EVAL_LIMIT, seed=0),
                          parts["eval_step"], cfg.train.eval_batch_size)
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
