"""A tiny training run that test_resume.py kills with SIGKILL and restarts (not a test).

    python resume_worker.py OUT_DIR [--no-backup] [--kill-after S] [--kill-at-batch K]
                                    [--kill-in-save N [--in-item ITEM]]

Trains the tiny CNN for 3 epochs of 6 batches with stateful callbacks (EarlyStopping with
best weights, ReduceLROnPlateau, CSVLogger, TensorBoard) and, unless --no-backup,
BackupAndRestore every 2 batches into OUT_DIR/backup. At the end it writes OUT_DIR/result.npz
(final params, optimizer state, lr scale, step, RNG key) and OUT_DIR/history.json.

--kill-after S   SIGKILLs itself S seconds after its first step finished (anywhere: a step,
                 a backup, a TensorBoard or CSV write...)
--kill-at-batch K  SIGKILLs itself 5 ms after global batch K starts (inside or near the step)
--kill-in-save N SIGKILLs itself inside the N-th backup write of this process: by default
                 after every file is written, just before Orbax renames the backup's
                 directory into place; with --in-item state, half-way (the `state` item
                 done, the other items not).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from orbax.checkpoint._src.path import atomicity  # noqa: E402

from convjax import checkpoint  # noqa: E402
from convjax.callbacks import (  # noqa: E402
    BackupAndRestore,
    CSVLogger,
    EarlyStopping,
    LambdaCallback,
    ReduceLROnPlateau,
    TensorBoard,
)
from convjax.loop import fit  # noqa: E402
from convjax.sharding import make_mesh  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from helpers import array_batches, tiny_arrays, tiny_setup  # noqa: E402


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def kill_inside_the_nth_save(n: int, item: str | None) -> None:
    """Orbax commits each finished item, then the backup's directory, by renaming them in
    `finalize`: die at the chosen one of the n-th backup."""
    save_backup, finalize = checkpoint.save_backup, atomicity.AtomicRenameTemporaryPath.finalize
    saves = [0]

    def counting_save_backup(*args, **kwargs):
        saves[0] += 1
        return save_backup(*args, **kwargs)

    async def dying_finalize(self, *args, **kwargs):
        name = self.get().name.split(".")[0]  # "state" for an item, "<index>" for the backup
        chosen = name == item if item else name.isdigit()
        if saves[0] == n and chosen:
            die()
        return await finalize(self, *args, **kwargs)

    checkpoint.save_backup = counting_save_backup
    atomicity.AtomicRenameTemporaryPath.finalize = dying_finalize


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--no-backup", action="store_true")
    parser.add_argument("--kill-after", type=float)
    parser.add_argument("--kill-at-batch", type=int)
    parser.add_argument("--kill-in-save", type=int)
    parser.add_argument("--in-item")
    args = parser.parse_args()
    if args.kill_in_save:
        kill_inside_the_nth_save(args.kill_in_save, args.in_item)
    started = []

    timers = []

    def die_in(seconds):
        timers.append(threading.Timer(seconds, die))
        timers[-1].start()

    trained = []  # the batches this process trained

    def on_train_end(logs):  # the run is over: a kill after this would test nothing
        for timer in timers:
            timer.cancel()
        (args.out / "trained_by_last_process.txt").write_text(str(len(trained)))

    def on_train_batch_begin(batch, logs):
        if args.kill_at_batch is not None and killer.loop.global_batch == args.kill_at_batch:
            die_in(0.005)

    def on_train_batch_end(batch, logs):
        trained.append(batch)
        if not started:  # the first step has compiled and run
            started.append(batch)
            if args.kill_after is not None:
                die_in(args.kill_after)

    killer = LambdaCallback(on_train_batch_begin=on_train_batch_begin,
                            on_train_batch_end=on_train_batch_end, on_train_end=on_train_end)

    callbacks = [
        EarlyStopping(monitor="loss", patience=5, restore_best_weights=True),
        ReduceLROnPlateau(monitor="loss", patience=0, factor=0.5, min_delta=0.05),
        CSVLogger(args.out / "log.csv"),
        TensorBoard(args.out / "tb", update_freq=2, histogram_freq=1),
        killer,
    ]
    if not args.no_backup:
        callbacks.insert(0, BackupAndRestore(args.out / "backup", save_freq=2))
    state, steps = tiny_setup()
    mesh = make_mesh(jax.devices()[:1])
    state, history = fit(
        state, array_batches(tiny_arrays(48), 8, mesh=mesh), steps=steps, epochs=3,
        validation=array_batches(tiny_arrays(20, seed=1), 8, mesh=mesh),
        callbacks=callbacks, verbose=0, mesh=mesh,
    )
    leaves = jax.tree.leaves((state.params, state.opt_state, state.step,
                              jax.random.key_data(state.rng)))
    np.savez(args.out / "result.npz", *[np.asarray(x) for x in leaves])
    record = {"epoch": history.epoch, "history": history.history}
    (args.out / "history.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
