"""What a source is: random access to examples (the `Source` protocol).

Protocol only (no I/O). `ArraySource` (arrays.py) and `FolderSource` (folder_source.py)
implement it; tfds sources are read into an `ArraySource`. The batch sources
(device_batches.py, streaming_batches.py) only ever ask a source for `get_batch(indices)`,
so the order of examples is theirs to choose and a resumed run can start anywhere.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Source(Protocol):
    class_names: tuple[str, ...]  # label k is class_names[k]; num_classes is its length

    @property
    def image_shape(self) -> tuple[int, ...]:  # one example, e.g. (32, 32, 3)
        ...

    def __len__(self) -> int:  # fixed for the source's lifetime, never shrinks mid-epoch
        ...

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:  # (uint8 HWC image, label)
        ...

    def get_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(images (B, H, W, C), int32 labels (B,)) of `indices`, in that order."""
        ...


def report_skipped(source: Source) -> None:
    """Lets a source that skips unreadable files warn about the ones found since it last did
    (called once a pass ends, so one warning lists them all); other sources have none."""
    report = getattr(source, "report_skipped", None)
    if report is not None:
        report()
