"""In-memory datasets: uint8 NHWC images (or float32 features) and int32 labels.

Pure (numpy only, no I/O). Sources that are read whole (tfds, user arrays, a folder decoded by
`load_image_folder`) are an `ArraySource`, a random-access `Source` (source.py) like
`FolderSource`, so the batch sources never care where the data came from. Splitting and
sampling are splits.py's rules, shared with `FolderSource`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convjax.data.splits import sample


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
        original order (splits.py: the same rule as `FolderSource.sample`)."""
        return sample(self, n, seed)


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
