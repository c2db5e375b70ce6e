"""RunTimer: training time without compilation and validation, for honest images/s.

Effects: reads the clock. The first step of a process includes tracing and compiling the train
program (the dispatch returns once it is compiled); validation runs between epochs. Both are
timed on their own and left out of `train_seconds`, and only the steps this process ran count,
so a resumed run reports its own speed.
"""

from __future__ import annotations

import time
from typing import Any

from convjax.callbacks.base import Callback, Logs


class RunTimer(Callback):
    def __init__(self) -> None:
        self.steps = 0  # train steps this process dispatched
        self.compile_seconds = 0.0  # the first step's dispatch: tracing + compiling
        self.validation_seconds = 0.0
        self.total_seconds = 0.0
        self._t: dict[str, float] = {}

    def on_train_begin(self, logs: Logs | None = None) -> None:
        self._t["train"] = time.perf_counter()

    def on_train_batch_begin(self, batch: int, logs: Logs | None = None) -> None:
        if self.steps == 0:
            self._t["first"] = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        if self.steps == 0:
            self.compile_seconds = time.perf_counter() - self._t["first"]
        self.steps += 1

    def on_test_begin(self, logs: Logs | None = None) -> None:
        self._t["test"] = time.perf_counter()

    def on_test_end(self, logs: Logs | None = None) -> None:
        self.validation_seconds += time.perf_counter() - self._t["test"]

    def on_train_end(self, logs: Logs | None = None) -> None:
        self.total_seconds = time.perf_counter() - self._t["train"]

    def summary(self, batch_size: int) -> dict[str, Any]:
        train_s = max(self.total_seconds - self.compile_seconds - self.validation_seconds, 1e-9)
        images = self.steps * batch_size
        return {"compile_seconds": round(self.compile_seconds, 2),
                "validation_seconds": round(self.validation_seconds, 2),
                "train_seconds": round(train_s, 2),
                "images_trained_by_this_process": images,
                "train_images_per_second": round(images / train_s, 1) if self.steps else 0.0}
