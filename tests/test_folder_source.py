"""FolderSource (convjax.data.folder_source): random access to image files, unreadable files
served as the next readable one, and a folder with none readable."""

import warnings

import numpy as np
import pytest

from convjax.data import DecodeSpec, FolderSource, SkippedImagesWarning, list_image_files
from helpers import write_image_folder


def folder_source(root, **kwargs) -> FolderSource:
    files, labels, names = list_image_files(root)
    return FolderSource(files, labels, names, DecodeSpec((3, 3), "rgb", "nearest"), **kwargs)


def test_random_access_and_a_bad_file_served_as_the_next_readable(tmp_path):
    root = write_image_folder(tmp_path / "d", per_class=2)  # cat/000, cat/001, dog/000, dog/001
    (root / "cat" / "001.png").write_bytes(b"broken")
    src = folder_source(root, cache_dir=tmp_path / "cache")
    assert (len(src), src.image_shape, src.class_names) == (4, (3, 3, 3), ("cat", "dog"))
    dog0, label = src[2]
    assert dog0.dtype == np.uint8 and dog0.shape == (3, 3, 3) and label == 1
    replaced, label = src[1]  # cat/001 is unreadable: dog/000 stands in, with its label
    np.testing.assert_array_equal(replaced, dog0)
    assert label == 1 and len(src) == 4
    images, labels = src.get_batch(np.array([3, 1, 0]))
    np.testing.assert_array_equal(images[1], dog0)
    assert labels.tolist() == [1, 1, 0] and labels.dtype == np.int32
    np.testing.assert_array_equal(src[-1][0], src[3][0])
    with pytest.raises(IndexError):
        src[4]
    with pytest.warns(SkippedImagesWarning, match=r"(?s)skipped 1 .*replaced.*001\.png"):
        src.report_skipped()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        src.report_skipped()  # nothing new, no second warning
    (root / "dog" / "001.png").write_bytes(b"broken")
    last = folder_source(root)
    np.testing.assert_array_equal(last[3][0], last[0][0])  # wraps around to cat/000


def test_streaming_a_folder_of_only_unreadable_images_says_so(tmp_path):
    for name in ("cat/a.jpg", "dog/b.png"):
        (tmp_path / "bad" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "bad" / name).write_bytes(b"not an image")
    src = folder_source(tmp_path / "bad")
    with pytest.raises(ValueError, match=r"all 2 image files under .*bad are unreadable"):
        src.get_batch(np.array([0, 1]))
