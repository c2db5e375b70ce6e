"""TerminateOnNaN: stop (or raise) when the loss becomes NaN or infinite. Pure bookkeeping.

The train step already checks every update inside the compiled function: a non-finite loss
or gradient leaves the state unchanged and is counted in the epoch's `nonfinite` sum. So this
callback needs no per-step host sync: it looks at whatever logs the loop reads (every epoch,
plus the batches it or another callback asks for) and the state it stops with is the last
good one.
"""

from __future__ import annotations

import math

from convjax.callbacks.base import Callback, Logs


class TerminateOnNaN(Callback):
    """Keras's `TerminateOnNaN(raise_error=False)`.

    `raise_error=False` asks the loop to stop; the epoch ends and every callback's
    `on_train_end` runs. `raise_error=True` raises RuntimeError at once, so no
    `on_train_end` runs (a backup is kept for inspection), as in Keras. `check_every`
    (convjax only) also checks every that many batches, each check a host sync; Keras checks
    every batch.
    """

    def __init__(self, raise_error: bool = False, check_every: int = 0):
        self.raise_error = raise_error
        self.batch_logs_every = check_every

    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        if logs:
            self._check(f"batch {batch}", logs)

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        self._check(f"epoch {epoch}", logs or {})

    def _check(self, where: str, logs: Logs) -> None:
        loss = logs.get("loss")
        skipped = self.loop.nonfinite_steps
        if (loss is None or math.isfinite(loss)) and skipped == 0:
            return
        message = (f"NaN or Inf loss encountered at {where}: loss {loss}, {skipped} non-finite "
                   "update(s) skipped this epoch")
        if self.raise_error:
            raise RuntimeError(message + ". Terminating training immediately.")
        print(f"{message}; terminating training (keeping the last good state)")
        self.loop.request_stop()
