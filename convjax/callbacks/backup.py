"""BackupAndRestore: back up the whole run, and continue it exactly after a crash.

I/O (Orbax checkpoints in `backup_dir`). Better than Keras's, which restores only weights and
the epoch: a backup holds the train state (params, optimizer, batch stats, EMA, RNG key,
step, lr scale), the position inside the epoch, the epoch's running metric sums and every
callback's state, so a run killed at any moment and restarted gives the uninterrupted run's
final params and History, bit for bit on CPU.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from convjax import checkpoint
from convjax.callbacks.base import Callback, Logs
from convjax.callbacks.checkpointing import check_save_freq


class BackupAndRestore(Callback):
    """Keras's `BackupAndRestore(backup_dir, save_freq, double_checkpoint, delete_checkpoint)`.

    - `save_freq="epoch"` backs up after every epoch, an int every that many batches, and
      `False` never (an existing backup is still restored; in Keras `False` silently meant
      every batch). Unless `False`, a first backup is taken before the first step.
    - Backups are taken once every callback has handled the event, so they include, e.g.,
      the History row and EarlyStopping's counter of that epoch, wherever this callback sits.
    - A backup interrupted mid-write is ignored (Orbax renames a finished write into place);
      `double_checkpoint=True` keeps the previous backup too, used when the latest is
      unreadable.
    - `delete_checkpoint=True` removes `backup_dir` when training ends normally, after every
      callback's `on_train_end` (not when a callback raised, so that a run stopped by an error
      can be resumed).
    """

    def __init__(
        self,
        backup_dir: str | os.PathLike,
        save_freq: str | int | bool = "epoch",
        double_checkpoint: bool = False,
        delete_checkpoint: bool = True,
    ):
        if not backup_dir:
            raise ValueError("Empty `backup_dir` argument passed")
        if save_freq is not False:
            check_save_freq(save_freq, "BackupAndRestore")
        self.backup_dir = Path(backup_dir)
        self.save_freq = save_freq
        self.double_checkpoint = double_checkpoint
        self.delete_checkpoint = delete_checkpoint
        self._manager = None
        self._next_index = 0  # backups are numbered in order, not by optimizer step
        self._batches_since_save = 0

    @property
    def _trash(self) -> Path:
        return self.backup_dir.with_name(self.backup_dir.name + ".deleting")

    def on_train_setup(self) -> None:
        shutil.rmtree(self._trash, ignore_errors=True)  # a deletion a crash interrupted
        self._manager = checkpoint.make_manager(
            self.backup_dir, max_to_keep=2 if self.double_checkpoint else 1
        )
        self._next_index, self._batches_since_save = 0, 0
        found = checkpoint.restore_latest_backup(self._manager, like=self.loop.state)
        if found is not None:
            index, backup = found
            self._next_index = index + 1
            self.loop.request_resume(backup)

    def on_train_begin(self, logs: Logs | None = None) -> None:
        # A first backup before any step (once every callback has begun): a run killed in
        # its first steps then resumes as the same run, e.g. its TensorBoard files are cut
        # back instead of a second run being logged beside them.
        if not self.loop.resumed and self.save_freq is not False:
            self.loop.request_after_event(lambda: self._save(epoch_done=False))

    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        if isinstance(self.save_freq, bool) or self.save_freq == "epoch":
            return
        self._batches_since_save += 1
        if self._batches_since_save >= self.save_freq:
            self._batches_since_save = 0
            self.loop.request_after_event(lambda: self._save(epoch_done=False))

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        if self.save_freq == "epoch":
            self.loop.request_after_event(lambda: self._save(epoch_done=True))

    def _save(self, epoch_done: bool) -> None:
        checkpoint.save_backup(self._manager, self._next_index, self.loop.backup(epoch_done))
        self._next_index += 1

    def on_train_end(self, logs: Logs | None = None) -> None:
        # After every callback's on_train_end: a crash before then resumes from the backup.
        self.loop.request_after_event(self._finish)

    def _finish(self) -> None:
        if self._manager is not None:
            self._manager.close()
            self._manager = None
        if self.delete_checkpoint and self.backup_dir.exists():
            # Renamed first, so that a crash during the deletion leaves no half-deleted backup
            # to resume from.
            shutil.rmtree(self._trash, ignore_errors=True)
            self.backup_dir.rename(self._trash)
            shutil.rmtree(self._trash, ignore_errors=True)

    def state_dict(self) -> dict:
        return {"batches_since_save": self._batches_since_save}

    def load_state_dict(self, state: dict) -> None:
        self._batches_since_save = state["batches_since_save"]
