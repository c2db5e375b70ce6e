"""Callbacks that record: History, progress bar, CSVLogger, TensorBoard scalars.

I/O (printing and files). Each writes plain numbers it receives in `logs`.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from tqdm.auto import tqdm

from convjax.callbacks.base import Callback, Logs


class History(Callback):
    """Keras's `History`: `history.history["val_loss"]` etc., one entry per epoch."""

    def __init__(self):
        self.epoch: list[int] = []
        self.history: dict[str, list[float]] = {}

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)

    def state_dict(self):
        return {"epoch": list(self.epoch), "history": {k: list(v) for k, v in self.history.items()}}

    def load_state_dict(self, state):
        self.epoch = list(state["epoch"])
        self.history = {k: list(v) for k, v in state["history"].items()}


def format_logs(logs: Logs) -> str:
    return " - ".join(f"{k}: {v:.4g}" for k, v in logs.items())


class ProgbarLogger(Callback):
    """Keras `verbose=1` (a bar per epoch with running loss/accuracy) or `verbose=2` (a line
    per epoch). The bar advances every batch; its numbers refresh every `update_every`
    batches, because each refresh reads the metrics back from the device."""

    def __init__(self, verbose: int = 1, update_every: int = 10):
        self.verbose = verbose
        self.batch_logs_every = update_every if verbose == 1 else 0
        self._bar = None

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        if self.verbose == 1:
            total = self.loop.steps_per_epoch
            desc = f"Epoch {epoch + 1}/{self.loop.epochs}"
            self._bar = tqdm(total=total, desc=desc, unit="step", leave=True, dynamic_ncols=True)
            self._bar.update(self.loop.step_in_epoch)

    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        if self._bar is not None:
            self._bar.update(1)
            if logs:
                self._bar.set_postfix_str(format_logs(logs), refresh=False)

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(format_logs(logs or {}))
            self._bar.close()
            self._bar = None
        elif self.verbose == 2:
            print(f"Epoch {epoch + 1}/{self.loop.epochs} - {format_logs(logs or {})}", flush=True)


class CSVLogger(Callback):
    """Keras's CSVLogger: `epoch` then the sorted log keys, "NA" for missing, one row per
    epoch, flushed at once; with `append=True` the header is written only to an empty file."""

    def __init__(self, filename: str | os.PathLike, separator: str = ",", append: bool = False):
        self.filename = Path(filename)
        self.sep = separator
        self.append = append
        self.keys: list[str] | None = None
        self._file = None
        self._writer = None

    def on_train_begin(self, logs: Logs | None = None) -> None:
        self.filename.parent.mkdir(parents=True, exist_ok=True)
        has_rows = self.append and self.filename.exists() and self.filename.stat().st_size > 0
        if has_rows:
            with open(self.filename) as f:
                self.keys = next(csv.reader(f, delimiter=self.sep))[1:]
        self._file = open(self.filename, "a" if self.append else "w", newline="")
        self._writer = None

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
        if self._writer is None:
            self._writer = csv.DictWriter(
                self._file, fieldnames=["epoch", *self.keys], delimiter=self.sep
            )
            if self._file.tell() == 0:
                self._writer.writeheader()
        row = {"epoch": epoch, **{k: _csv_value(logs.get(k)) for k in self.keys}}
        self._writer.writerow(row)
        self._file.flush()

    def on_train_end(self, logs: Logs | None = None) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _csv_value(value) -> str | float:
    return "NA" if value is None else value


class TensorBoard(Callback):
    """Epoch scalars in Keras's layout: `<log_dir>/train` and `<log_dir>/validation` runs with
    `epoch_loss`, `epoch_accuracy`, `epoch_learning_rate` tags, written with tensorboardX."""

    def __init__(self, log_dir: str | os.PathLike = "logs"):
        self.log_dir = Path(log_dir)
        self._writers = {}

    def _writer(self, run: str):
        if run not in self._writers:
            from tensorboardX import SummaryWriter

            self._writers[run] = SummaryWriter(str(self.log_dir / run))
        return self._writers[run]

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        for key, value in (logs or {}).items():
            if value is None or not math.isfinite(value):
                continue
            run, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            self._writer(run).add_scalar(f"epoch_{name}", value, global_step=epoch)
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs: Logs | None = None) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers = {}
