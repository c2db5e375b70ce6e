"""How a run stops safely: SIGINT and SIGTERM become a request that `fit` honours after the
current step (it backs up and raises `TrainingInterrupted`), and the runner turns that into
`Interrupted`, whose message says how to continue and whose exit code is 128 + the signal.

I/O at the edge: installs signal handlers in the main thread, for the length of a `with`.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from convjax.loop import TrainingInterrupted


class Interrupted(Exception):
    """The run stopped on SIGINT/SIGTERM after writing a backup; `exit_code` is 128 + signal."""

    def __init__(self, signum: int, stopped: TrainingInterrupted, workdir: Path):
        name = signal.Signals(signum).name
        super().__init__(f"{name}: stopped at epoch {stopped.epoch + 1}, step "
                         f"{stopped.step_in_epoch}; backup in {workdir / 'backup'}. "
                         "Run the same command again to continue.")
        self.exit_code = 128 + signum


@contextlib.contextmanager
def stop_on_signals() -> Iterator[tuple[threading.Event, list[int]]]:
    """SIGINT and SIGTERM set an event (fit finishes its step, backs up and stops) instead of
    raising in the middle of a step; the previous handlers come back afterwards."""
    event, received = threading.Event(), []

    def handler(signum, frame):
        del frame
        received.append(signum)
        event.set()

    if threading.current_thread() is not threading.main_thread():
        yield event, received  # signals reach only the main thread: nothing to install
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield event, received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
