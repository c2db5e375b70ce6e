"""What "improved" means for a monitored metric (Keras's `MonitorCallback`).

Pure. Shared by EarlyStopping, ReduceLROnPlateau and ModelCheckpoint. Unlike Keras, the
direction for `mode="auto"` is decided when the callback is built (from the metric's name),
so a name it cannot place fails before training rather than after the first epoch.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

# Substrings of metric names (after removing "val_") that say which way is better.
LOWER_IS_BETTER = ("loss", "error", "mse", "mae", "mape", "msle", "hinge", "crossentropy")
HIGHER_IS_BETTER = ("acc", "auc", "precision", "recall", "f1", "iou")


def metric_direction(name: str) -> str:
    """"min" or "max" for a metric name such as "val_loss" or "accuracy"."""
    base = name.removeprefix("val_").lower()
    if any(word in base for word in LOWER_IS_BETTER):
        return "min"
    if any(word in base for word in HIGHER_IS_BETTER):
        return "max"
    raise ValueError(
        f"cannot tell whether {name!r} should be minimized or maximized; "
        "pass mode='min' or mode='max'"
    )


@dataclass(frozen=True)
class Monitor:
    """A metric name, its direction and the smallest change that counts as improvement."""

    name: str
    mode: str  # "min" or "max", never "auto"
    min_delta: float = 0.0  # always >= 0

    def is_improvement(self, current: float, reference: float | None) -> bool:
        """Strictly better than `reference` by more than `min_delta` (None: anything is)."""
        if reference is None:
            return True
        if self.mode == "min":
            return current + self.min_delta < reference
        return current - self.min_delta > reference


def make_monitor(name: str, mode: str = "auto", min_delta: float = 0.0, owner: str = "") -> Monitor:
    """Resolves `mode="auto"` from the name; an unknown mode falls back to auto, as in Keras."""
    if mode not in ("auto", "min", "max"):
        warnings.warn(f"{owner} mode {mode!r} is unknown, fallback to auto mode.", stacklevel=3)
        mode = "auto"
    if mode == "auto":
        mode = metric_direction(name)
    return Monitor(name, mode, abs(float(min_delta)))
