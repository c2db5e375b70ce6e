"""Backups inside `fit`: everything needed to continue a run exactly, saved and restored.

I/O (Orbax, through `checkpoint.py`). A backup is one numbered Orbax step holding the train
state, the position `(epoch, step_in_epoch)`, the epoch's running metric sums and every
callback's `state_dict`. `fit` saves one once every callback has handled an event (at epoch
ends and every `BackupOptions.every_steps` steps) and restores the newest readable one before
`on_train_begin`. The batch order is a pure function of `(seed, epoch)`, so the position is
the whole data state.

With several processes every process saves and restores (Orbax is collective; its primary
host, process 0, writes the shared files); only process 0 deletes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp

from convjax import checkpoint, dist
from convjax.callbacks.backup import BackupAndRestore, BackupOptions
from convjax.callbacks.base import Callback, CallbackList
from convjax.metrics import zero_sums
from convjax.sharding import place_replicated


class Backups:
    """Saving and restoring `checkpoint.Backup`s for `fit` (Orbax, one numbered step each)."""

    def __init__(self, options: BackupOptions, mesh):
        self.options, self.mesh = options, mesh
        if dist.is_writer():
            checkpoint.discard_deleted_backups(options.directory)
        self.manager = checkpoint.make_manager(options.directory, max_to_keep=options.keep)
        latest = self.manager.latest_step()
        self.next_index = 0 if latest is None else latest + 1

    def restore(self, run: Any) -> dict | None:  # run: the loop's `_Run` record
        """Restores the newest readable backup into `run`; returns the callbacks' states."""
        found = checkpoint.restore_latest_backup(self.manager, like=run.state)
        if found is None:
            return None
        _, backup = found
        run.state = backup.state
        run.sums = place_replicated(
            {k: jnp.asarray(v, jnp.float32) for k, v in backup.sums.items()}, self.mesh)
        run.epoch, run.step_in_epoch = backup.epoch, backup.step_in_epoch
        run.stop_training, run.resumed = backup.stop_training, True
        return backup.callback_states

    def due(self, run: Any) -> bool:
        every = self.options.every_steps
        global_step = run.epoch * run.steps_per_epoch + run.step_in_epoch
        return bool(self.options.save and every and global_step % every == 0)

    def save(self, run: Any, cbs: CallbackList, epoch_done: bool) -> None:
        if not self.options.save:
            return
        if epoch_done:
            position = (run.epoch + 1, 0, place_replicated(zero_sums(), self.mesh))
        else:
            sums = run.sums if run.sums is not None else zero_sums()
            position = (run.epoch, run.step_in_epoch, sums)
        backup = checkpoint.Backup(run.state, *position, run.stop_training, cbs.state_dicts())
        checkpoint.save_backup(self.manager, self.next_index, backup)
        self.next_index += 1

    def finish(self) -> None:
        self.manager.close()
        if self.options.delete_on_finish and dist.is_writer():
            checkpoint.delete_backups(self.options.directory)


def backup_options(callbacks: Sequence[Callback],
                    backup: BackupOptions | None) -> BackupOptions | None:
    """`fit(backup=...)`, or Keras's way of asking: a BackupAndRestore callback."""
    asked = [cb for cb in callbacks if isinstance(cb, BackupAndRestore)]
    if len(asked) > 1 or (asked and backup is not None):
        raise ValueError("ask for one backup: fit(backup=...) or one BackupAndRestore")
    return asked[0].options if asked else backup
