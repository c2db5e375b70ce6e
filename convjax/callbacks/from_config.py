"""Builds the callbacks that the config's `callbacks` section enables.

Construction only: no file is touched until training begins. Each callback gets its section's
fields as keyword arguments (they carry Keras's names), and its files go under the run's
workdir: `<workdir>/history.csv`, `<workdir>/tensorboard/`, `<workdir>/checkpoints/...`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from convjax.callbacks.base import Callback
from convjax.callbacks.checkpointing import ModelCheckpoint
from convjax.callbacks.early_stopping import EarlyStopping
from convjax.callbacks.ema import SwapEMAWeights
from convjax.callbacks.lr import ReduceLROnPlateau
from convjax.callbacks.recorders import CSVLogger
from convjax.callbacks.tensorboard import TensorBoard
from convjax.callbacks.terminate_on_nan import TerminateOnNaN
from convjax.callbacks_config import CallbacksConfig

__all__ = ["TENSORBOARD_DIR", "CallbacksConfig", "keras_args", "make_callbacks"]

TENSORBOARD_DIR = "tensorboard"  # TensorBoard's log dir inside the workdir


def keras_args(section: Any) -> dict[str, Any]:
    """The section's fields but `enabled`: the callback's own keyword arguments."""
    return {f.name: getattr(section, f.name) for f in dataclasses.fields(section)
            if f.name != "enabled"}


def make_callbacks(
    cfg: CallbacksConfig, workdir: str | Path, *, model_summary: str = "",
    hparams: dict[str, Any] | None = None, writers: bool = True,
    class_names: Sequence[str] | None = None,
) -> list[Callback]:
    """The enabled callbacks, writing under `workdir`. Order matters where callbacks share an
    event: TerminateOnNaN stops first; SwapEMAWeights swaps before EarlyStopping and
    ModelCheckpoint look at the weights (as Keras asks); the recorders come last.
    `hparams` (e.g. `config_to_dict(cfg)`) goes to TensorBoard's HPARAMS tab, `class_names`
    label its confusion matrix images. `writers=False`
    (processes other than 0 of a multi-process run) leaves out CSVLogger and TensorBoard:
    they only write, so the run decides the same without them."""
    workdir = Path(workdir)
    made: list[Callback] = []
    if cfg.terminate_on_nan.enabled:
        made.append(TerminateOnNaN(**keras_args(cfg.terminate_on_nan)))
    if cfg.ema.enabled:
        made.append(SwapEMAWeights(**keras_args(cfg.ema)))
    if cfg.early_stopping.enabled:
        made.append(EarlyStopping(**keras_args(cfg.early_stopping)))
    if cfg.reduce_lr.enabled:
        made.append(ReduceLROnPlateau(**keras_args(cfg.reduce_lr)))
    if cfg.checkpoint.enabled:
        args = keras_args(cfg.checkpoint)
        args["filepath"] = workdir / "checkpoints" / args["filepath"]
        made.append(ModelCheckpoint(**args))
    if cfg.csv.enabled and writers:
        made.append(CSVLogger(workdir / "history.csv", **keras_args(cfg.csv)))
    if cfg.tensorboard.enabled and writers:
        made.append(TensorBoard(workdir / TENSORBOARD_DIR, model_summary=model_summary or None,
                                hparams=hparams, class_names=class_names,
                                **keras_args(cfg.tensorboard)))
    return made
