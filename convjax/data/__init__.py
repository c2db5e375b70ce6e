"""Data sources (tfds, image folders, arrays) and the batch loader."""

from convjax.data.arrays import ArraySource, from_arrays, split_validation
from convjax.data.datasets import load_splits
from convjax.data.decode import BadImageError, DecodeSpec, decode_image
from convjax.data.directory import flow_from_directory, image_dataset_from_directory
from convjax.data.folder import list_image_files, load_image_folder, resolve_folder
from convjax.data.loader import DeviceDataset, epoch_order, eval_indices, train_indices
from convjax.data.streaming import CacheWriteWarning, FolderDataset, SkippedImagesWarning
from convjax.data.tfds_source import load_tfds, load_tfds_resized

__all__ = [
    "ArraySource", "BadImageError", "DecodeSpec", "DeviceDataset", "FolderDataset",
    "CacheWriteWarning", "SkippedImagesWarning", "decode_image", "epoch_order", "eval_indices",
    "flow_from_directory", "from_arrays", "image_dataset_from_directory", "list_image_files",
    "load_image_folder", "load_splits", "load_tfds", "load_tfds_resized", "resolve_folder",
    "split_validation", "train_indices",
]
