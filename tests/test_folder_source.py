"""FolderSource (convjax.data.folder_source): random access to image files, unreadable files
served as the next readable one, and a folder with none readable."""

import warnings

import numpy as np
import pytest

import convjax.data.folder_source as folder_source_module
from convjax.data import (
    DecodeSpec,
    FolderSource,
    SkippedImagesWarning,
    list_image_files,
    split_validation,
    to_arrays,
)
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


def test_the_splits_of_a_folder_fill_and_then_read_one_cache(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "d", per_class=5)
    (root / "cat" / "002.png").write_bytes(b"broken")
    cache = tmp_path / "cache"
    train, val = split_validation(folder_source(root, cache_dir=cache), 0.3, seed=0)
    with pytest.warns(SkippedImagesWarning, match=r"002\.png"):
        first = [to_arrays(split) for split in (train, val)]
    assert len(list((cache / "folders").glob("*.npy"))) == 1  # one cache, complete
    # The split holding the bad file serves it as the next file of that split.
    split, decoded = next((s, a) for s, a in zip((train, val), first)
                          if str(root / "cat" / "002.png") in s.file_paths)
    k = split.file_paths.index(str(root / "cat" / "002.png"))
    np.testing.assert_array_equal(decoded.images[k], decoded.images[k + 1])
    assert decoded.labels[k] == split.labels[k + 1]

    def no_decoding(*args):
        raise AssertionError("decoded again instead of read from the cache")

    monkeypatch.setattr(folder_source_module, "decode_image", no_decoding)
    again = split_validation(folder_source(root, cache_dir=cache), 0.3, seed=0)
    with pytest.warns(SkippedImagesWarning, match=r"002\.png.*recorded in the cache"):
        for split, before in zip(again, first, strict=True):
            np.testing.assert_array_equal(to_arrays(split).images, before.images)
    other = split_validation(folder_source(root, cache_dir=cache), 0.3, seed=1)[0]
    with pytest.warns(SkippedImagesWarning):
        assert len(to_arrays(other)) == 7  # another seed's split: the same cache
