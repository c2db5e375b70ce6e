"""tensorflow-datasets splits read with `tfds.data_source` (random access, no TensorFlow).

I/O. The first use downloads and prepares the dataset (that step may need TensorFlow, see the
README); later reads only touch the prepared ArrayRecord files. Small image datasets
(CIFAR-10/100) are read whole into an `ArraySource`; datasets of photos of varying size
(`cats_vs_dogs`) are resized on the way in with the same code as image folders.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from convjax.data.arrays import ArraySource
from convjax.data.decode import DecodeSpec, image_to_array

OFFLINE_HINT = (
    "Without network access, point the job at an image folder instead: "
    "CONVJAX_DATA=<folder or .tar.gz with train/ and test/> or "
    "--set data.source=folder --set data.folder=<path>"
)


def _open(name: str, split: str, data_dir: str | None):
    """(random-access source, dataset info); a RuntimeError with a way out when it fails."""
    import tensorflow_datasets as tfds  # heavy import, only when this source is used

    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir or None)
        info = tfds.builder(name, data_dir=data_dir or None).info
    except ImportError as err:  # a module tfds needs is not installed: not a network problem
        raise RuntimeError(
            f"could not load tfds dataset {name!r}: tensorflow-datasets needs the missing module "
            f"{err.name!r} (pip install {err.name}); reinstall convjax to get its dependencies"
        ) from err
    except Exception as err:  # tfds raises many types (download, preparation, missing TF)
        raise RuntimeError(
            f"could not load tfds dataset {name!r} split {split!r}: {err}\n{OFFLINE_HINT}"
        ) from err
    if len(source) == 0:
        raise RuntimeError(f"tfds dataset {name!r} split {split!r} is empty")
    return source, info


def load_tfds(name: str, split: str, data_dir: str | None = None) -> ArraySource:
    """Reads `name[split]` (images all of one size) fully."""
    source, info = _open(name, split, data_dir)
    n = len(source)
    images = np.empty((n, *np.shape(source[0]["image"])), np.uint8)
    labels = np.empty((n,), np.int32)
    for i in range(n):
        example = source[i]
        images[i] = example["image"]
        labels[i] = example["label"]
    return ArraySource(images, labels, tuple(info.features["label"].names))


def load_tfds_resized(
    name: str, split: str, image_size: tuple[int, int], data_dir: str | None = None,
    color_mode: str = "rgb", interpolation: str = "bilinear",
) -> ArraySource:
    """Reads `name[split]` with every image resized to `image_size`, e.g. the course's
    `load_tfds_resized("cats_vs_dogs", "train[:80%]", (150, 150))` (tfds has one split of
    23,262 photos; about 70 KB each in memory at 150x150)."""
    spec = DecodeSpec(tuple(image_size), color_mode, interpolation)
    source, info = _open(name, split, data_dir)
    n = len(source)
    images = np.empty((n, *spec.shape), np.uint8)
    labels = np.empty((n,), np.int32)
    for i in range(n):
        example = source[i]
        pixels = np.asarray(example["image"], np.uint8)
        if pixels.ndim == 3 and pixels.shape[-1] == 1:  # (H, W, 1) grayscale datasets
            pixels = pixels[..., 0]
        images[i] = image_to_array(Image.fromarray(pixels), spec)
        labels[i] = example["label"]
    return ArraySource(images, labels, tuple(info.features["label"].names))
