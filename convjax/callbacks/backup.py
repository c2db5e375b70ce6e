"""BackupAndRestore: Keras's way to ask `fit` to back up the run and resume it after a crash.

Configuration only: the backups themselves are part of `fit` (`fit(backup=BackupOptions(...))`
is the same request), which saves them once every callback has handled an event and restores
them before `on_train_begin`. Better than Keras's, which restores only weights and the epoch:
a backup holds the train state (params, optimizer state with its learning rate, batch stats,
EMA, RNG key, step), the position inside the epoch, the epoch's running metric sums and every
callback's state, so a run killed at any moment and restarted gives the uninterrupted run's
final params and History, bit for bit on CPU.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from convjax.callbacks.base import Callback
from convjax.callbacks.checkpointing import check_save_freq


@dataclasses.dataclass(frozen=True)
class BackupOptions:
    directory: Path  # one Orbax step per backup (a counter, not the optimizer step)
    every_steps: int = 0  # also back up every N training steps (0: only at epoch ends)
    keep: int = 1  # backups kept; 2 keeps the previous one in case the latest is unreadable
    save: bool = True  # False: restore an existing backup but never write one
    delete_on_finish: bool = False  # remove the directory once training ends normally


class BackupAndRestore(Callback):
    """Keras's `BackupAndRestore(backup_dir, save_freq, double_checkpoint, delete_checkpoint)`.

    - `save_freq="epoch"` backs up after every epoch, an int also every that many batches
      (counted from the start of training, so the same after a resume), and `False` never
      (an existing backup is still restored; in Keras `False` silently meant every batch).
      Unless `False`, a first backup is taken before the first step.
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
        self.options = BackupOptions(
            directory=Path(backup_dir),
            every_steps=0 if isinstance(save_freq, (bool, str)) else save_freq,
            keep=2 if double_checkpoint else 1,
            save=save_freq is not False,
            delete_on_finish=delete_checkpoint,
        )
