"""tensorflow-datasets splits read with `tfds.data_source` (random access, no TensorFlow).

I/O. The first use downloads and prepares the dataset (that step may need TensorFlow, see the
README); later reads only touch the prepared ArrayRecord files. Small image datasets
(CIFAR-10/100) are read whole into an `ArraySource`.
"""

from __future__ import annotations

import numpy as np

from convjax.data.arrays import ArraySource

OFFLINE_HINT = (
    "Without network access, point the job at an image folder instead: "
    "CONVJAX_DATA=<folder or .tar.gz with train/ and test/> or "
    "--set data.source=folder --set data.folder=<path>"
)


def load_tfds(name: str, split: str, data_dir: str | None = None) -> ArraySource:
    """Reads `name[split]` fully; raises a RuntimeError with a way out when it cannot."""
    import tensorflow_datasets as tfds  # heavy import, only when this source is used

    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir or None)
        info = tfds.builder(name, data_dir=data_dir or None).info
    except Exception as err:  # tfds raises many types (download, preparation, missing TF)
        raise RuntimeError(
            f"could not load tfds dataset {name!r} split {split!r}: {err}\n{OFFLINE_HINT}"
        ) from err
    n = len(source)
    if n == 0:
        raise RuntimeError(f"tfds dataset {name!r} split {split!r} is empty")
    first = source[0]
    images = np.empty((n, *np.shape(first["image"])), np.uint8)
    labels = np.empty((n,), np.int32)
    for i in range(n):
        example = source[i]
        images[i] = example["image"]
        labels[i] = example["label"]
    names = tuple(info.features["label"].names)
    return ArraySource(images, labels, names)
