"""ModelCheckpoint: save the train state (or just the weights) as Orbax checkpoints.

I/O. Each save is an Orbax checkpoint *directory* at `filepath` formatted with `{epoch}`
(1-based), `{batch}` and the log keys (`"ckpt/{epoch:02d}-{val_loss:.2f}"`); read one back
with `convjax.checkpoint.read_tree(path, like)`. A small JSON record beside the checkpoints
(`<name>.checkpoints.json`) keeps the best value, the best path and the paths written, so the
best survives a restart and `max_to_keep` never deletes the latest or the best checkpoint.

With several processes every process runs this callback and makes the same decisions (the
same global metrics); every process takes part in each save (`checkpoint.write_tree` is
collective), and process 0 alone deletes old checkpoints and writes the record.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

from convjax import checkpoint, dist
from convjax.callbacks.base import Callback, Logs
from convjax.callbacks.monitor import Monitor, make_monitor


def check_save_freq(save_freq: Any, owner: str) -> None:
    """`"epoch"` or a positive number of batches (a bool is not a number of batches)."""
    if save_freq == "epoch":
        return
    if isinstance(save_freq, bool) or not isinstance(save_freq, int) or save_freq <= 0:
        raise ValueError(f"Unrecognized save_freq for {owner}: {save_freq!r}. "
                         "Expected 'epoch' or a positive integer number of batches")


class ModelCheckpoint(Callback):
    """Keras's `ModelCheckpoint`, saving with Orbax.

    `save_weights_only=True` saves `{"params", "batch_stats"}`; otherwise the whole train
    state (optimizer, EMA, RNG, step). `max_to_keep` (convjax only; None keeps every
    checkpoint, as Keras) deletes older checkpoints written by this callback, but never the
    latest nor the best one (Orbax's own best-only policy can evict the latest).
    """

    def __init__(
        self,
        filepath: str | os.PathLike,
        monitor: str = "val_loss",
        verbose: int = 0,
        save_best_only: bool = False,
        save_weights_only: bool = False,
        mode: str = "auto",
        save_freq: str | int = "epoch",
        initial_value_threshold: float | None = None,
        max_to_keep: int | None = None,
    ):
        check_save_freq(save_freq, "ModelCheckpoint")
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(f"max_to_keep must be None or >= 1, got {max_to_keep}")
        self.filepath = os.fspath(filepath)
        self.monitor = _monitor_or_none(monitor, mode, required=save_best_only)
        self.monitor_name = monitor
        self.verbose = verbose
        self.save_best_only = save_best_only
        self.save_weights_only = save_weights_only
        self.save_freq = save_freq
        self.max_to_keep = max_to_keep
        self.best: float | None = initial_value_threshold
        self.best_path: str | None = None
        self.saved: list[str] = []  # paths this callback wrote and has not deleted, oldest first
        self._batches_since_save = 0
        self._epoch = 0

    @property
    def record_path(self) -> Path:
        name = re.sub(r"\{[^}]*\}", "X", Path(self.filepath).name)
        return Path(self.filepath).parent / f"{name}.checkpoints.json"

    def on_train_begin(self, logs: Logs | None = None) -> None:
        if self.record_path.exists():  # a restarted run: keep the best it already has
            record = json.loads(self.record_path.read_text())
            if record.get("monitor") == self.monitor_name:
                self.load_state_dict(record)

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        self._epoch = epoch

    def wants_batch_logs(self, batch: int) -> bool:
        # Batch saves need logs to format the path and compare the monitored value.
        return self.save_freq != "epoch" and self._batches_since_save + 1 >= self.save_freq

    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        if self.save_freq == "epoch":
            return
        self._batches_since_save += 1
        if self._batches_since_save >= self.save_freq:
            self._batches_since_save = 0
            self._save(self._epoch, batch, logs or {})

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        if self.save_freq == "epoch":
            self._save(epoch, None, logs or {})

    def format_path(self, epoch: int, batch: int | None, logs: Logs) -> str:
        fields = dict(logs, epoch=epoch + 1)
        if batch is not None and "batch" not in logs:
            fields["batch"] = batch + 1
        try:
            return self.filepath.format(**fields)
        except KeyError as e:
            raise KeyError(
                f'Failed to format this callback filepath: "{self.filepath}". Reason: {e}'
            ) from e

    def _save(self, epoch: int, batch: int | None, logs: Logs) -> None:
        path = self.format_path(epoch, batch, logs)
        current = logs.get(self.monitor_name)
        improved = (current is not None and self.monitor is not None
                    and self.monitor.is_improvement(current, self.best))
        if self.save_best_only and not self._best_only_allows(epoch, current, improved):
            return
        if improved:
            self.best, self.best_path = current, path
        state = self.loop.state
        tree = ({"params": state.params, "batch_stats": state.batch_stats}
                if self.save_weights_only else state)
        meta = {"epoch": epoch + 1, "batch": None if batch is None else batch + 1,
                "logs": logs, "monitor": self.monitor_name, "value": current}
        checkpoint.write_tree(path, tree, meta)
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: saved model to {path}")
        self.saved = [p for p in self.saved if p != path] + [path]
        self._prune()
        if dist.is_writer():
            self._write_record()

    def _best_only_allows(self, epoch: int, current: float | None, improved: bool) -> bool:
        if current is None:
            warnings.warn(f"Can save best model only with {self.monitor_name} available.",
                          stacklevel=3)
            return True
        if not improved and self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: {self.monitor_name} did not improve from {self.best}")
        return improved

    def _prune(self) -> None:
        """Forgets (and in process 0 deletes) the checkpoints beyond `max_to_keep`. No
        barrier: no process reads them again, and should a later save reuse a deleted path,
        `write_tree` starts with a barrier that process 0 reaches only after deleting."""
        if self.max_to_keep is None:
            return
        keep = set(self.saved[-self.max_to_keep:]) | {self.best_path}
        if dist.is_writer():
            for path in [p for p in self.saved if p not in keep]:
                checkpoint.delete_tree(path)
        self.saved = [p for p in self.saved if p in keep]

    def _write_record(self) -> None:
        """Process 0's record of the checkpoints (the others keep the same one in memory and
        read the file only in `on_train_begin`, of a later run: no barrier needed)."""
        record = {"monitor": self.monitor_name, **self.state_dict()}
        staged = self.record_path.with_name(self.record_path.name + ".tmp")
        staged.write_text(json.dumps(record, indent=1))
        os.replace(staged, self.record_path)  # atomic: a crash leaves the old or the new one

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_path": self.best_path, "saved": list(self.saved),
                "batches_since_save": self._batches_since_save}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_path = state["best"], state["best_path"]
        self.saved = list(state["saved"])
        self._batches_since_save = state["batches_since_save"]


def _monitor_or_none(name: str, mode: str, required: bool) -> Monitor | None:
    """The monitor; without save_best_only an unplaceable metric name only disables tracking
    of the best checkpoint (Keras fails at the first epoch end either way)."""
    try:
        return make_monitor(name, mode, 0.0, "ModelCheckpoint")
    except ValueError:
        if required:
            raise
        return None
