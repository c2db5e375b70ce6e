"""Saving and restoring the train state with Orbax, plus a JSON record beside it.

I/O. One checkpoint = the whole `TrainState` (params, batch stats, optimizer state with its
learning rate, EMA, RNG key, step, lr scale) and a JSON `meta` dict (epoch, position in the
epoch, callback states, config). Orbax writes into a temporary directory and renames it when
complete, so an interrupted save never damages the previous checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from convjax.train_state import TrainState


def make_manager(directory: str | Path, max_to_keep: int | None = 1) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
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
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
    restored = manager.restore(step, args=args)
    return restored.state, restored.meta


def save_state(directory: str | Path, state: TrainState, meta: dict[str, Any]) -> Path:
    """One-off save of a final state into `directory/<step>` (keeps only that one)."""
    with make_manager(directory) as manager:
        save(manager, int(jax.device_get(state.step)), state, meta)
        return Path(manager.directory) / str(manager.latest_step())
