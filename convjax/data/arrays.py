"""In-memory datasets: uint8 NHWC images and int32 labels, and how to split them.

Pure (numpy only, no I/O). Sources that fit in memory (tfds, decoded image folders, user
arrays) end up as an `ArraySource`, a random-access `Source` (source.py) like `FolderSource`,
so the batch sources never care where the data came from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ArraySource:
    """Examples and labels. `images` are uint8 (N, H, W, C) pixels, or float32 (N, ...)
    precomputed features (transfer learning's "extract once, train a small MLP" path)."""

    images: np.ndarray  # uint8 (N, H, W, C), or float32 features (N, ...)
    labels: np.ndarray  # int32 (N,)
    class_names: tuple[str, ...]

    def __post_init__(self):
        if self.images.dtype == np.uint8:
            if self.images.ndim != 4:
                raise ValueError(f"images must be (N, H, W, C), got shape {self.images.shape}")
        elif self.images.dtype != np.float32 or self.images.ndim < 2:
            raise ValueError(
                "images must be uint8 (N, H, W, C) pixels or float32 (N, ...) features, got "
                f"dtype {self.images.dtype} and shape {self.images.shape}"
            )
        if self.labels.shape != (len(self.images),):
            raise ValueError(
                f"labels must have shape ({len(self.images)},), got {self.labels.shape}"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.images[i], int(self.labels[i])

    def get_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(images, labels) at `indices` (a random-access `Source`, see source.py)."""
        indices = np.asarray(indices)
        return self.images[indices], self.labels[indices]

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def subset(self, indices: np.ndarray) -> ArraySource:
        return ArraySource(self.images[indices], self.labels[indices], self.class_names)

    def sample(self, n: int, seed: int) -> ArraySource:
        """`n` examples drawn without replacement (all when n <= 0 or n >= len), in their
        original order. Random, not the first n: folder sources are sorted by class."""
        if n <= 0 or n >= len(self):
            return self
        picked = np.random.default_rng(seed).choice(len(self), n, replace=False)
        return self.subset(np.sort(picked))


def from_arrays(images, labels, class_names: tuple[str, ...] | None = None) -> ArraySource:
    """Wraps user arrays (e.g. Keras-style `x_train, y_train`), checking shapes and dtypes."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        # Keras code often passes x / 255.0; here the step rescales, so it needs raw pixels.
        raise ValueError(f"images must be uint8 pixels (0..255), got dtype {images.dtype}")
    if images.ndim == 3:  # (N, H, W) grayscale, as MNIST ships
        images = images[..., None]
    labels = np.asarray(labels).reshape(-1).astype(np.int32)
    if class_names is None:
        class_names = tuple(str(i) for i in range(int(labels.max()) + 1))
    return ArraySource(images, labels, tuple(class_names))


def split_validation(
    source: ArraySource, fraction: float, seed: int
) -> tuple[ArraySource, ArraySource | None]:
    """Holds out `fraction` of the examples (shuffled with `seed`) for validation.

    Unlike Keras's `validation_split` in `fit` (which takes the *last* examples unshuffled),
    the split is random, so sorted-by-class sources still get every class in both halves.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation_split must be in [0, 1), got {fraction}")
    if fraction == 0.0:
        return source, None
    order = np.random.default_rng(seed).permutation(len(source))
    n_val = max(1, int(round(fraction * len(source))))
    return source.subset(np.sort(order[n_val:])), source.subset(np.sort(order[:n_val]))
