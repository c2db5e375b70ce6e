"""Progress of long data preparation (extracting an archive, decoding a folder): a line on
stderr every few seconds, once the work has taken longer than `SHOW_AFTER_S`.

I/O (reads the clock, prints). Work that ends sooner prints nothing, so tests and warm caches
stay silent; `enabled=False` (the runner passes `train.verbose > 0`) silences it always.
Plain lines rather than a redrawn bar, because a run's stderr is usually a log file:

    extracting cifar10-jpg.tar.gz: 31,000 files (52% done), 6 s
    decoding train: 12,800/45,000 images, 4 s
    decoding train: 45,000/45,000 images in 14 s

Callers count with `update(n)`; the clock is read once every `check_every` units, so a caller
that counts every file pays for a counter, not a clock read.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

SHOW_AFTER_S = 2.0  # work shorter than this prints nothing
EVERY_S = 5.0  # then a line at most this often, and one when it ends
clock = time.monotonic  # seconds; tests replace it


class Progress:
    """A counter that reports on stderr when the work is slow; use it as a context manager
    (the closing line is printed only when the work ended normally and a line was shown)."""

    def __init__(self, what: str, total: int | None = None, unit: str = "files", *,
                 enabled: bool = True, check_every: int = 1,
                 fraction: Callable[[], float] | None = None):
        self.what, self.total, self.unit, self.enabled = what, total, unit, enabled
        self.fraction = fraction  # of the work done, where `total` is unknown (an archive's bytes)
        self.check_every = max(1, check_every)
        self.done, self.shown = 0, False
        self._start = clock()
        self._next_check, self._next_line = self.check_every, self._start + SHOW_AFTER_S

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.enabled and self.done >= self._next_check:
            self._next_check = self.done + self.check_every
            now = clock()
            if now >= self._next_line:
                self._next_line = now + EVERY_S
                self._line(f", {now - self._start:.0f} s")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if self.shown and kind is None:
            self._line(f" in {clock() - self._start:.0f} s")

    def _line(self, when: str) -> None:
        self.shown = True
        if self.total is not None:
            count = f"{self.done:,}/{self.total:,} {self.unit}"
        else:
            count = f"{self.done:,} {self.unit}"
            if self.fraction is not None:
                count += f" ({self.fraction():.0%} done)"
        print(f"{self.what}: {count}{when}", file=sys.stderr, flush=True)
