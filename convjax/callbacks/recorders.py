"""Callbacks that record: History, ValidationConfusion, the progress bar, CSVLogger
(TensorBoard: tensorboard.py).

I/O (printing and files). Each writes plain numbers it receives in `logs`; History and
ValidationConfusion only keep them in memory (and in backups).
"""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
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


class ValidationConfusion(Callback):
    """Keeps the latest validation's confusion matrix (`self.loop.validation_confusion`) for
    after `fit`: `matrix` is (C, C) counts, or None when no validation counted one.

    In backups, so a run resumed after its last validation still has the matrix (the loop's
    own copy is not: a resumed loop has none until it validates again)."""

    def __init__(self) -> None:
        self.matrix: np.ndarray | None = None

    def on_train_begin(self, logs: Logs | None = None) -> None:
        self.matrix = None

    def on_test_end(self, logs: Logs | None = None) -> None:
        self.matrix = self.loop.validation_confusion

    def state_dict(self) -> dict[str, Any]:
        return {"matrix": None if self.matrix is None else self.matrix.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        matrix = state["matrix"]
        self.matrix = None if matrix is None else np.asarray(matrix, np.float32)


SEPARATOR = " - "


def log_items(logs: Logs) -> list[str]:
    """`["loss: 0.6931", ...]`: Keras's names, numbers to 4 significant digits."""
    return [f"{key}: {value:.4g}" for key, value in logs.items()]


def format_logs(logs: Logs) -> str:
    return SEPARATOR.join(log_items(logs))


def fit_lines(items: list[str], width: int) -> list[str]:
    """`items` joined by " - " in lines of at most `width` characters, broken only between
    items. When one line is not enough, the validation items (`val_*`) start a line of their
    own, so that the last line shows val_loss and val_accuracy side by side."""
    if len(SEPARATOR.join(items)) <= width:
        return [SEPARATOR.join(items)] if items else []
    first_val = next((i for i, item in enumerate(items) if item.startswith("val_")), len(items))
    lines: list[str] = []
    for group in (items[:first_val], items[first_val:]):
        line = ""
        for item in group:
            if line and len(line) + len(SEPARATOR) + len(item) > width:
                lines.append(line)
                line = item
            else:
                line = f"{line}{SEPARATOR}{item}" if line else item
        if line:
            lines.append(line)
    return lines


class ProgbarLogger(Callback):
    """Keras `verbose=1` (a bar per epoch with running loss/accuracy) or `verbose=2` (a line
    per epoch). The bar advances every batch; its numbers refresh every `update_every`
    batches, because each refresh reads the metrics back from the device.

    An epoch's final numbers are printed to stdout (after its bar, with verbose=1) in lines
    that fit the terminal (`COLUMNS`, else 80 when it is not a terminal); where one line is too
    narrow, the validation numbers get the last line to themselves."""

    def __init__(self, verbose: int = 1, update_every: int = 10):
        self.verbose = verbose
        self.batch_logs_every = update_every if verbose == 1 else 0
        self._bar = None

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        if self.verbose == 1:
            total = self.loop.steps_per_epoch
            desc = f"Epoch {epoch + 1}/{self.loop.epochs}"
            width = _columns()
            self._bar = tqdm(total=total, desc=desc, unit="step", leave=True, ncols=width,
                             dynamic_ncols=width is None)
            self._bar.update(self.loop.step_in_epoch)

    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        if self._bar is not None:
            self._bar.update(1)
            if logs:
                self._bar.set_postfix_str(format_logs(logs), refresh=False)

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        items = log_items(logs or {})
        if self._bar is not None:
            self._bar.set_postfix_str("", refresh=False)  # the bar keeps count and time
            self._bar.close()
            self._bar = None
        elif self.verbose == 2:
            items = [f"Epoch {epoch + 1}/{self.loop.epochs}", *items]
        else:
            return
        for line in fit_lines(items, shutil.get_terminal_size().columns):
            print(line, flush=True)


def _columns() -> int | None:
    """`COLUMNS` when set (this tqdm reads only the terminal's size); else None: the bar
    follows the terminal, or in a notebook keeps its widget's width (an int there is pixels)."""
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else None


class CSVLogger(Callback):
    """Keras's CSVLogger: `epoch` then the sorted log keys, "NA" for missing, one row per
    epoch, flushed at once; with `append=True` the header is written only to an empty file.

    Unlike Keras, appending keeps the existing header's columns (Keras re-sorts the new run's
    keys under the old header), it does not add `val_*` columns to runs without validation,
    and a run resumed by BackupAndRestore cuts the file back to the rows of the backup and
    continues it (Keras would duplicate rows, or with `append=False` erase them).
    """

    def __init__(self, filename: str | os.PathLike, separator: str = ",", append: bool = False):
        self.filename = Path(filename)
        self.sep = separator
        self.append = append
        self.keys: list[str] | None = None
        self._file = None
        self._writer = None

    def on_train_begin(self, logs: Logs | None = None) -> None:
        self.on_train_end()  # a reused logger closes the previous run's file
        self.filename.parent.mkdir(parents=True, exist_ok=True)
        keep = self.append or self.loop.resumed
        self.keys = self._header_keys() if keep else None
        self._file = open(self.filename, "a" if keep else "w", newline="")
        self._writer = None

    def _header_keys(self) -> list[str] | None:
        if not self.filename.exists() or self.filename.stat().st_size == 0:
            return None
        with open(self.filename, newline="") as f:
            return next(csv.reader(f, delimiter=self.sep))[1:]

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

    def state_dict(self) -> dict:
        if self._file is None:
            return {"size": None, "keys": self.keys}
        self._file.flush()
        return {"size": self.filename.stat().st_size, "keys": self.keys}

    def load_state_dict(self, state: dict) -> None:
        """Cuts off the rows written after the backup (the resumed run writes them again)."""
        if state.get("size") is None or self._file is None:
            return
        self._file.close()  # reopened after the cut, so that tell() sees the new length
        os.truncate(self.filename, state["size"])
        self._file = open(self.filename, "a", newline="")
        self.keys = state["keys"]
        self._writer = None


def _csv_value(value) -> str | float:
    if value is None:
        return "NA"
    if isinstance(value, Iterable) and not isinstance(value, str):  # Keras: "[1, 2]"
        return f"[{', '.join(map(str, value))}]"
    return value
