"""Saving and restoring the train state with Orbax, plus a JSON record beside it.

I/O. Three kinds of checkpoint:

- `save` / `restore` with a `CheckpointManager` (numbered steps): the whole `TrainState`
  (params, batch stats, optimizer state with its learning rate, EMA, RNG key, step, lr scale)
  and a JSON `meta` dict. `save_state` is a one-off final save.
- `save_backup` / `restore_backup`: a `Backup`, i.e. everything `fit` needs to continue a run
  exactly (the state, the position inside the epoch, the epoch's running metric sums, every
  callback's state). BackupAndRestore writes these.
- `write_tree` / `read_tree`: one checkpoint at a path the user names (ModelCheckpoint).

Orbax writes into a temporary directory and renames it when complete, so an interrupted save
never damages an earlier step. Its `force=True` overwrite deletes the old directory *before*
writing the new one, so `write_tree` stages the new checkpoint beside the old one and swaps.

Several processes (`convjax.dist`) share the checkpoint directories: every process calls
these functions (Orbax's save and restore are collective), Orbax writes the shared files from
process 0, and `write_tree`'s own renames and deletions happen in process 0 only, between
barriers; two processes renaming the same directories would race.
"""

from __future__ import annotations

import dataclasses
import shutil
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from convjax import dist
from convjax.train_state import TrainState

ARRAYS_KEY = "arrays"  # the part of a callback's state_dict saved with Orbax, not JSON


def make_manager(directory: str | Path, max_to_keep: int | None = 1) -> ocp.CheckpointManager:
    # Synchronous: the loop donates the state's buffers to the next step right after a save.
    # cleanup_tmp_directories removes what a save killed half-way left behind.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False,
        cleanup_tmp_directories=True,
    )
    return ocp.CheckpointManager(Path(directory).absolute(), options=options)


def save(
    manager: ocp.CheckpointManager, step: int, state: TrainState, meta: dict[str, Any]
) -> None:
    """Saves and waits for the write to finish (the loop may donate `state` right after)."""
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    manager.save(step, args=args, force=True)
    manager.wait_until_finished()


def restore(
    manager: ocp.CheckpointManager, like: TrainState, step: int | None = None
) -> tuple[TrainState, dict[str, Any]]:
    """Restores into the structure (and shardings) of `like`; latest step by default."""
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {manager.directory}")
    args = ocp.args.Composite(
        state=ocp.args.StandardRestore(_abstract(like)), meta=ocp.args.JsonRestore()
    )
    restored = manager.restore(step, args=args)
    return restored.state, restored.meta


def save_state(directory: str | Path, state: TrainState, meta: dict[str, Any]) -> Path:
    """One-off save of a final state into `directory/<step>` (keeps only that one)."""
    with make_manager(directory) as manager:
        save(manager, int(jax.device_get(state.step)), state, meta)
        return Path(manager.directory) / str(manager.latest_step())


def remove_temporaries(directory: str | Path) -> None:
    """Removes what a failed save left in `directory` (Orbax's `*.orbax-checkpoint-tmp*`
    folders), so a full disk leaves no half-written checkpoint behind."""
    directory = Path(directory)
    if directory.exists():
        for leftover in directory.glob("*" + ocp.path.atomicity.TMP_DIR_SUFFIX + "*"):
            shutil.rmtree(leftover, ignore_errors=True)


def _abstract(like: Any) -> Any:
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, like)


# --- Backups: exact resume -------------------------------------------------------------------


@dataclasses.dataclass
class Backup:
    """Where a run was: restoring it and continuing gives the uninterrupted run's results."""

    state: TrainState
    epoch: int  # the epoch to continue in
    step_in_epoch: int  # batches of that epoch already trained
    sums: dict[str, Any]  # that epoch's running metric sums (float32 scalars)
    stop_training: bool  # a callback had already asked to stop
    callback_states: dict[str, dict[str, Any]]  # by `callback_names`


def save_backup(manager: ocp.CheckpointManager, index: int, backup: Backup) -> None:
    """Saves `backup` as step `index` (a counter of backups, not the optimizer step)."""
    json_states, array_states = _split_arrays(backup.callback_states)
    meta = {
        "epoch": backup.epoch, "step_in_epoch": backup.step_in_epoch,
        "stop_training": backup.stop_training, "callbacks": json_states,
        "has_callback_arrays": bool(array_states),  # Orbax refuses to save an empty tree
    }
    items = {
        "state": ocp.args.StandardSave(backup.state),
        "sums": ocp.args.StandardSave(jax.device_get(backup.sums)),
        "meta": ocp.args.JsonSave(meta),
    }
    if array_states:
        items["callback_arrays"] = ocp.args.StandardSave(array_states)
    manager.save(index, args=ocp.args.Composite(**items), force=True)
    manager.wait_until_finished()


def restore_backup(manager: ocp.CheckpointManager, like: TrainState, index: int) -> Backup:
    meta = manager.restore(index, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    items = {"state": ocp.args.StandardRestore(_abstract(like)),
             "sums": ocp.args.StandardRestore()}
    if meta["has_callback_arrays"]:
        items["callback_arrays"] = ocp.args.StandardRestore()
    restored = manager.restore(index, args=ocp.args.Composite(**items))
    return Backup(
        state=restored.state, epoch=meta["epoch"], step_in_epoch=meta["step_in_epoch"],
        sums={k: np.asarray(v) for k, v in restored.sums.items()},
        stop_training=meta["stop_training"],
        callback_states=_join_arrays(meta["callbacks"], restored.get("callback_arrays")),
    )


def restore_latest_backup(
    manager: ocp.CheckpointManager, like: TrainState
) -> tuple[int, Backup] | None:
    """The newest backup that can be read, trying older ones when it cannot (None: none)."""
    steps = sorted(manager.all_steps(), reverse=True)
    for i, index in enumerate(steps):
        try:
            return index, restore_backup(manager, like, index)
        except Exception as error:  # noqa: BLE001 -- any unreadable backup: try the older one
            if i == len(steps) - 1:
                raise
            warnings.warn(f"backup {index} unreadable ({error!r}); trying the previous one",
                          stacklevel=2)
    return None


def _trash(directory: Path) -> Path:
    directory = Path(directory)
    return directory.with_name(directory.name + ".deleting")


def discard_deleted_backups(directory: str | Path) -> None:
    """Finishes a `delete_backups` that a crash interrupted."""
    shutil.rmtree(_trash(Path(directory)), ignore_errors=True)


def delete_backups(directory: str | Path) -> None:
    """Removes a backup directory. Renamed first, so that a crash during the deletion leaves
    no half-deleted backup to resume from."""
    directory = Path(directory)
    if not directory.exists():
        return
    discard_deleted_backups(directory)
    directory.rename(_trash(directory))
    discard_deleted_backups(directory)


def _split_arrays(states: dict[str, dict]) -> tuple[dict[str, dict], dict[str, Any]]:
    json_part, arrays = {}, {}
    for name, state in states.items():
        json_part[name] = {k: v for k, v in state.items() if k != ARRAYS_KEY}
        if state.get(ARRAYS_KEY) is not None:
            arrays[name] = jax.device_get(state[ARRAYS_KEY])
    return json_part, arrays


def _join_arrays(json_part: dict[str, dict], arrays: dict[str, Any]) -> dict[str, dict]:
    arrays = arrays or {}
    return {name: {**state, ARRAYS_KEY: arrays.get(name)} for name, state in json_part.items()}


# --- Single checkpoints at a named path (ModelCheckpoint) ------------------------------------


def write_tree(path: str | Path, tree: Any, meta: dict[str, Any]) -> Path:
    """Writes `tree` (+ JSON `meta`) as an Orbax checkpoint directory at `path`.

    An existing checkpoint at `path` is replaced only once the new one is complete: the new
    one is staged at `<path>.incoming`, the old one moved to `<path>.replaced`, then the
    staged one renamed into place. `recover` finishes a swap that a crash interrupted.

    With several processes every process calls it; process 0 alone cleans up and swaps. The
    barriers keep any process from starting the save before the cleanup (Orbax refuses to
    save onto an existing `<path>.incoming`) and from going on before the swap (a later
    write or read of `path` must find the new checkpoint in place).
    """
    path = Path(path).absolute()
    staged = _staged(path)
    if dist.is_writer():
        _finish_swap(path)
        shutil.rmtree(staged, ignore_errors=True)
        for leftover in path.parent.glob(staged.name + ocp.path.atomicity.TMP_DIR_SUFFIX + "*"):
            shutil.rmtree(leftover, ignore_errors=True)  # a staging write killed half-way
    dist.barrier("convjax.checkpoint.write_tree: cleaned up")
    args = ocp.args.Composite(tree=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta))
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        checkpointer.save(staged, args=args)  # Orbax: tmp dir, renamed to `staged` when done
    if dist.is_writer():
        _swap(path)
    dist.barrier("convjax.checkpoint.write_tree: swapped")
    return path


def read_tree(path: str | Path, like: Any = None) -> tuple[Any, dict[str, Any]]:
    """(tree, meta) from `write_tree`; `like` gives structure and shardings (None: numpy).
    With several processes every process calls it (see `recover`)."""
    path = Path(path).absolute()
    recover(path)
    target = ocp.args.StandardRestore(None if like is None else _abstract(like))
    args = ocp.args.Composite(tree=target, meta=ocp.args.JsonRestore())
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        restored = checkpointer.restore(path, args=args)
    return restored.tree, restored.meta


def recover(path: str | Path) -> None:
    """Completes a `write_tree` swap interrupted between its two renames. With several
    processes every process calls it: process 0 renames, the others wait for it."""
    if dist.is_writer():
        _finish_swap(Path(path).absolute())
    dist.barrier("convjax.checkpoint.recover")


def _swap(path: Path) -> None:
    """The staged checkpoint into `path`; the old one, if any, moved aside and deleted."""
    staged, replaced = _staged(path), _replaced(path)
    if path.exists():
        shutil.rmtree(replaced, ignore_errors=True)
        path.rename(replaced)
    staged.rename(path)
    shutil.rmtree(replaced, ignore_errors=True)


def _finish_swap(path: Path) -> None:
    """Puts the newest complete checkpoint back at `path` when a crash left none there."""
    if path.exists():
        return
    for candidate in (_staged(path), _replaced(path)):  # newest complete one first
        if candidate.exists():
            candidate.rename(path)
            return


def delete_tree(path: str | Path) -> None:
    shutil.rmtree(Path(path).absolute(), ignore_errors=True)


def _staged(path: Path) -> Path:
    return path.with_name(path.name + ".incoming")


def _replaced(path: Path) -> Path:
    return path.with_name(path.name + ".replaced")
