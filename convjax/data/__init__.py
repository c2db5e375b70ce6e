"""Data sources (tfds, image folders, arrays) and the batch loader."""

from convjax.data.arrays import ArraySource, from_arrays, split_validation
from convjax.data.datasets import load_splits
from convjax.data.folder import load_image_folder, resolve_folder
from convjax.data.loader import DeviceDataset, epoch_order, eval_indices, train_indices
from convjax.data.tfds_source import load_tfds

__all__ = [
    "ArraySource", "DeviceDataset", "epoch_order", "eval_indices", "from_arrays",
    "load_image_folder", "load_splits", "load_tfds", "resolve_folder", "split_validation",
    "train_indices",
]
