"""Data: sources (random access: tfds, image folders, arrays) and batch sources (what `fit`
and `evaluate` iterate: device-resident or streaming, see batches.py)."""

from convjax.data.arrays import ArraySource, from_arrays
from convjax.data.batch_sources import make_batch_source, to_arrays
from convjax.data.batches import Batch, BatchSource, epoch_order
from convjax.data.datasets import load_splits
from convjax.data.decode import BadImageError, DecodeSpec, decode_image
from convjax.data.device_batches import DeviceArrays
from convjax.data.directory import flow_from_directory, image_dataset_from_directory
from convjax.data.folder import (
    list_image_files,
    load_image_folder,
    open_image_folder,
    resolve_folder,
)
from convjax.data.folder_cache import CacheWriteWarning
from convjax.data.folder_source import FolderSource, SkippedImagesWarning
from convjax.data.indices import eval_indices, steps_per_epoch, train_indices
from convjax.data.source import Source
from convjax.data.splits import split_validation
from convjax.data.streaming import FolderDataset
from convjax.data.streaming_batches import StreamingBatches
from convjax.data.tfds_source import load_tfds, load_tfds_resized

__all__ = [
    "ArraySource", "BadImageError", "Batch", "BatchSource", "CacheWriteWarning", "DecodeSpec",
    "DeviceArrays", "FolderDataset", "FolderSource", "SkippedImagesWarning", "Source",
    "StreamingBatches", "decode_image", "epoch_order", "eval_indices", "flow_from_directory",
    "from_arrays", "image_dataset_from_directory", "list_image_files", "load_image_folder",
    "load_splits", "load_tfds", "load_tfds_resized", "make_batch_source", "open_image_folder",
    "resolve_folder", "split_validation", "steps_per_epoch", "to_arrays", "train_indices",
]
