"""Keras's `image_dataset_from_directory` and `flow_from_directory`, as streaming datasets.

I/O (lists directories, prints Keras's "Found N files" lines). Argument rules, listing order,
the seeded shuffle of the file list and the training/validation split follow
`keras/src/utils/image_dataset_utils.py` and `dataset_utils.py` (Keras 3), so the same seed
puts the same files in the same split. Differences, on purpose:

- batches are uint8 NHWC numpy arrays (Keras: float32 tensors); normalise in the step;
- each epoch's order is `epoch_order(seed, epoch)`, a full permutation (Keras: a buffered
  shuffle that cannot be reproduced), so a resumed run sees exactly the batches it would have;
- a `validation_split` that leaves no validation file is an error (Keras returns every file);
- resizing is PIL's (antialiased); "lanczos5", "gaussian" and "mitchellcubic" are not offered;
- an unreadable file is skipped with a warning that lists it (Keras stops mid-epoch) and
  served as the next readable file, so an epoch's length never changes (see folder_source).

    train, val = image_dataset_from_directory(
        "cats_vs_dogs/train", image_size=(150, 150), batch_size=32, label_mode="binary",
        validation_split=0.2, subset="both", seed=1337, cache_dir=True)
    for images, labels in train: ...          # (32, 150, 150, 3) uint8, (32, 1) float32
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from convjax.data.decode import DecodeSpec
from convjax.data.folder import class_directories, list_image_files, walk_image_files
from convjax.data.folder_cache import resolve_cache_dir
from convjax.data.streaming import FolderDataset

# flow_from_directory's class_mode -> FolderDataset's label_mode ("binary" there yields
# float class indices of shape (B,), not image_dataset_from_directory's (B, 1)).
CLASS_MODES = {"categorical": "categorical", "binary": "sparse", "sparse": "sparse",
               "input": "input", None: None}


def check_label_args(labels, label_mode, class_names) -> tuple[object, str | None]:
    """Keras's rules for labels / label_mode / class_names; returns (labels, label_mode)."""
    inferred = isinstance(labels, str) and labels == "inferred"
    if not (inferred or labels is None or isinstance(labels, (list, tuple, np.ndarray))):
        raise ValueError("labels must be 'inferred', None, or a list of integer labels (one per "
                         f"file, in the sorted order of the file paths); got {labels!r}")
    if label_mode not in ("int", "categorical", "binary", None):
        raise ValueError("label_mode must be 'int', 'categorical', 'binary' or None, "
                         f"got {label_mode!r}")
    if labels is None or label_mode is None:
        labels, label_mode, inferred = None, None, False
    if class_names is not None and not inferred:
        raise ValueError("class_names can only be passed with labels='inferred' (with a label "
                         "list the class names are its sorted values; with no labels, none)")
    return labels, label_mode


def check_validation_split(validation_split, subset, shuffle: bool, seed) -> None:
    """Keras's `check_validation_split_arg`."""
    if validation_split and not 0 < validation_split < 1:
        raise ValueError(f"validation_split must be between 0 and 1, got {validation_split}")
    if bool(validation_split) != bool(subset):
        raise ValueError("if subset is set, validation_split must be set, and inversely")
    if subset not in ("training", "validation", "both", None):
        raise ValueError(f"subset must be 'training', 'validation' or 'both', got {subset!r}")
    if validation_split and shuffle and seed is None:
        raise ValueError("with validation_split and shuffle, pass a seed: the file list is "
                         "shuffled with it before the split, so without one the training "
                         "and validation subsets of two calls could overlap")


def index_directory(directory, labels, class_names, shuffle: bool, seed: int,
                    follow_links: bool) -> tuple[list[str], np.ndarray | None, tuple | None]:
    """(file paths, int labels or None, class names or None) in Keras's order: classes in
    order, files sorted within each, then, with `shuffle`, permuted by `RandomState(seed)`."""
    if isinstance(labels, str):  # "inferred"
        paths, found, names = list_image_files(directory, class_names, follow_links)
        label_array = np.asarray(found, np.int32)
    else:  # None or explicit labels: the structure below `directory` is ignored
        paths = walk_image_files(os.path.join(directory, ""), follow_links)
        if not paths:
            raise ValueError(f"no image files found under {directory}")
        label_array, names = None, None
        if labels is not None:
            if len(labels) != len(paths):
                raise ValueError(f"got {len(labels)} labels but found {len(paths)} image "
                                 f"files in {directory}")
            label_array = np.asarray(labels, np.int32)
            names = tuple(str(label) for label in sorted(set(label_array.tolist())))
    if shuffle:
        # Keras shuffles the path list with RandomState(seed).shuffle; a permutation of
        # range(n) with the same seed makes the same swaps.
        perm = np.random.RandomState(seed).permutation(len(paths))
        paths = [paths[i] for i in perm]
        label_array = None if label_array is None else label_array[perm]
    return paths, label_array, names


def check_labels_fit(label_mode: str | None, labels: np.ndarray | None, names) -> None:
    """"binary" needs exactly two classes; "categorical" needs labels below the class count."""
    if label_mode == "binary" and len(names) != 2:
        raise ValueError(f"label_mode='binary' needs exactly 2 classes, got {list(names)}")
    if label_mode == "categorical" and labels.max() >= len(names):
        raise ValueError(f"label_mode='categorical' needs labels 0..{len(names) - 1} "
                         f"(one per class), got up to {labels.max()}")


def split_files(paths: list[str], labels, validation_split, subset: str):
    """Keras's `get_training_or_validation_split`: validation is the last fraction."""
    n_val = int(validation_split * len(paths))
    if n_val == 0:
        raise ValueError(f"validation_split={validation_split} of {len(paths)} files leaves no "
                         "file for validation")
    cut = slice(None, -n_val) if subset == "training" else slice(-n_val, None)
    return paths[cut], None if labels is None else labels[cut]


def image_dataset_from_directory(
    directory: str | Path, labels="inferred", label_mode: str | None = "int",
    class_names: list[str] | None = None, color_mode: str = "rgb",
    batch_size: int | None = 32, image_size: int | tuple[int, int] = (256, 256),
    shuffle: bool = True, seed: int | None = None, validation_split: float | None = None,
    subset: str | None = None, interpolation: str = "bilinear", follow_links: bool = False,
    crop_to_aspect_ratio: bool = False, pad_to_aspect_ratio: bool = False, *,
    cache_dir: str | Path | bool = False, on_error: str = "skip", num_workers: int | None = None,
    prefetch_batches: int = 2, jpeg_draft: bool = True, drop_remainder: bool = False,
    verbose: bool = True,
) -> FolderDataset | tuple[FolderDataset, FolderDataset]:
    """Keras's arguments, then ours: `cache_dir` (False: none; True: the default folder; or a
    folder) keeps decoded arrays on disk; `on_error` is "skip" (warn) or "raise"."""
    labels, label_mode = check_label_args(labels, label_mode, class_names)
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    spec = DecodeSpec(size, color_mode, interpolation.lower(), crop_to_aspect_ratio,
                      pad_to_aspect_ratio, jpeg_draft)
    check_validation_split(validation_split, subset, shuffle, seed)
    seed = int(np.random.randint(1e6)) if seed is None else seed  # Keras draws one too
    paths, label_array, names = index_directory(str(directory), labels, class_names, shuffle,
                                                seed, follow_links)
    check_labels_fit(label_mode, label_array, names)
    if verbose:
        classes = "" if names is None else f" belonging to {len(names)} classes"
        print(f"Found {len(paths)} files{classes}.")

    def make(subset_name: str | None, shuffled: bool) -> FolderDataset:
        files, subset_labels = paths, label_array
        if validation_split:
            files, subset_labels = split_files(paths, label_array, validation_split, subset_name)
            if verbose:
                print(f"Using {len(files)} files for {subset_name}.")
        return FolderDataset(
            files, subset_labels, names, spec, label_mode=label_mode, batch_size=batch_size,
            shuffle=shuffled, seed=seed, drop_remainder=drop_remainder,
            cache_dir=resolve_cache_dir(cache_dir), on_error=on_error,
            num_workers=num_workers, prefetch_batches=prefetch_batches)

    if subset == "both":  # Keras never shuffles the validation half
        return make("training", shuffle), make("validation", False)
    return make(subset, shuffle)


def flow_from_directory(
    directory: str | Path, target_size: tuple[int, int] = (256, 256), color_mode: str = "rgb",
    classes: list[str] | None = None, class_mode: str | None = "categorical",
    batch_size: int = 32, shuffle: bool = True, seed: int | None = None,
    follow_links: bool = False, subset: str | None = None, interpolation: str = "nearest",
    keep_aspect_ratio: bool = False, *, validation_split: float = 0.0,
    cache_dir: str | Path | bool = False, on_error: str = "skip",
    num_workers: int | None = None,
) -> FolderDataset:
    """`ImageDataGenerator().flow_from_directory` without the augmentation (that runs on
    device, see convjax.augment); `validation_split` is the generator's. The split is per
    class and unshuffled, as in Keras: validation takes the first fraction of each class."""
    if class_mode not in CLASS_MODES:
        raise ValueError(f"class_mode must be one of {list(CLASS_MODES)}, got {class_mode!r}")
    if subset not in (None, "training", "validation"):
        raise ValueError(f"subset must be 'training' or 'validation', got {subset!r}")
    if subset and not 0 < validation_split < 1:
        raise ValueError(f"subset={subset!r} needs 0 < validation_split < 1")
    spec = DecodeSpec(tuple(target_size), color_mode, interpolation, keep_aspect_ratio)
    names = tuple(class_directories(directory, classes))
    if not names:
        raise ValueError(f"no class sub-directories in {directory}")
    if class_mode == "binary" and len(names) != 2:
        raise ValueError(f"class_mode='binary' needs exactly 2 classes, got {list(names)}")
    paths, labels = [], []
    for label, name in enumerate(names):
        files = walk_image_files(os.path.join(str(directory), name), follow_links)
        if subset:
            cut = int(validation_split * len(files))
            files = files[:cut] if subset == "validation" else files[cut:]
        paths += files
        labels += [label] * len(files)
    print(f"Found {len(paths)} images belonging to {len(names)} classes.")
    seed = int(np.random.randint(1e6)) if seed is None else seed
    return FolderDataset(
        paths, np.asarray(labels, np.int32), names, spec, label_mode=CLASS_MODES[class_mode],
        batch_size=batch_size, shuffle=shuffle, seed=seed,
        cache_dir=resolve_cache_dir(cache_dir), on_error=on_error, num_workers=num_workers)
