import numpy as np
import pytest
from PIL import Image

from convjax.config import DataConfig
from convjax.data import (
    DecodeSpec,
    FolderSource,
    SkippedImagesWarning,
    epoch_order,
    eval_indices,
    from_arrays,
    list_image_files,
    load_image_folder,
    load_splits,
    resolve_folder,
    split_validation,
    steps_per_epoch,
    to_arrays,
    train_indices,
)
from helpers import tiny_arrays, write_image_folder


def test_folder_classes_sorted_and_resized(tmp_path):
    root = write_image_folder(tmp_path / "imgs", per_class=3, classes=("dog", "cat", ".hidden"))
    src = load_image_folder(root, (6, 5), "rgb", cache_dir=False)
    assert src.class_names == ("cat", "dog")  # sorted, hidden skipped
    assert src.images.shape == (6, 6, 5, 3) and src.images.dtype == np.uint8
    assert list(src.labels) == [0, 0, 0, 1, 1, 1]
    grey = load_image_folder(root, (6, 5), "grayscale", cache_dir=False)
    assert grey.images.shape == (6, 6, 5, 1)


def test_folder_cache_is_used_and_invalidated(tmp_path):
    root = write_image_folder(tmp_path / "imgs", per_class=2)
    first = load_image_folder(root, (4, 4), cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache" / "folders").glob("*.npy"))) == 1
    again = load_image_folder(root, (4, 4), cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(first.images, again.images)
    np.testing.assert_array_equal(first.labels, again.labels)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / "cat" / "new.png")
    changed = load_image_folder(root, (4, 4), cache_dir=tmp_path / "cache")
    assert len(changed) == len(first) + 1  # a changed folder is never served stale


def test_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images"):
        load_image_folder(tmp_path / "empty")
    (tmp_path / "flat").mkdir()
    with pytest.raises(ValueError, match="no class sub-directories"):
        load_image_folder(tmp_path / "flat")
    root = write_image_folder(tmp_path / "bad", per_class=2)
    (root / "cat" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        load_image_folder(root, cache_dir=False, on_error="raise")
    with pytest.warns(SkippedImagesWarning, match=r"(?s)skipped 1 .*broken\.jpg"):
        src = load_image_folder(root, cache_dir=False)
    assert len(src) == 4 and list(src.labels) == [0, 0, 1, 1]  # the bad cat is left out


def test_folder_splits_accept_validation_as_test(tmp_path):
    write_image_folder(tmp_path / "cvd" / "train", per_class=3)
    write_image_folder(tmp_path / "cvd" / "validation", per_class=2)
    cfg = DataConfig(source="folder", folder=str(tmp_path / "cvd"), image_size=(5, 5),
                     validation_split=0.0, cache_dir=str(tmp_path / "cache"))
    train, val, test = load_splits(cfg, seed=0)
    assert (len(train), val, len(test)) == (6, None, 4)
    assert test.class_names == ("cat", "dog")


def test_folder_splits_are_listed_not_decoded_and_pick_what_the_decoded_arrays_did(tmp_path):
    write_image_folder(tmp_path / "ds" / "train", per_class=10, classes=("a", "b", "c"))
    write_image_folder(tmp_path / "ds" / "test", per_class=5, classes=("a", "b", "c"))
    cfg = DataConfig(source="folder", folder=str(tmp_path / "ds"), image_size=(4, 4),
                     validation_split=0.3, train_limit=20, test_limit=9,
                     cache_dir=str(tmp_path / "cache"))
    train, val, test = load_splits(cfg, seed=5)
    assert all(isinstance(s, FolderSource) for s in (train, val, test))
    assert not (tmp_path / "cache" / "folders").exists()  # listed only: nothing decoded yet
    assert (len(train), len(val), len(test)) == (14, 6, 9)
    # The same examples, in the same order, as the rules applied to the decoded folders
    # (what load_splits returned before it streamed): sample, then split, with the seed.
    whole = load_image_folder(tmp_path / "ds" / "train", (4, 4), cache_dir=False)
    old_train, old_val = split_validation(whole.sample(20, 5), 0.3, 5)
    old_test = load_image_folder(tmp_path / "ds" / "test", (4, 4), cache_dir=False).sample(9, 5)
    for new, old in ((train, old_train), (val, old_val), (test, old_test)):
        arrays = to_arrays(new)
        np.testing.assert_array_equal(arrays.images, old.images)
        np.testing.assert_array_equal(arrays.labels, old.labels)
        assert new.class_names == old.class_names == ("a", "b", "c")


def test_a_folder_source_samples_the_files_an_array_source_samples(tmp_path):
    root = write_image_folder(tmp_path / "d", per_class=9)
    files, labels, names = list_image_files(root)
    src = FolderSource(files, labels, names, DecodeSpec((4, 4)))
    arrays = to_arrays(src)
    for n, seed in ((5, 0), (5, 1), (17, 3)):
        picked = src.sample(n, seed)
        np.testing.assert_array_equal(to_arrays(picked).images, arrays.sample(n, seed).images)
        np.testing.assert_array_equal(picked.labels, arrays.sample(n, seed).labels)
    assert src.sample(0, 0) is src and src.sample(18, 0) is src


def test_archive_is_extracted_once(tmp_path):
    import tarfile

    root = write_image_folder(tmp_path / "ds" / "train", per_class=2)
    write_image_folder(tmp_path / "ds" / "test", per_class=1)
    archive = tmp_path / "ds.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "ds", arcname="ds")
    folder = resolve_folder(archive, tmp_path / "cache")
    assert folder.name == "ds" and (folder / "train" / "cat").is_dir()
    assert resolve_folder(archive, tmp_path / "cache") == folder
    cfg = DataConfig(source="folder", folder=str(archive), image_size=(4, 4),
                     validation_split=0.25, cache_dir=str(tmp_path / "cache"))
    train, val, test = load_splits(cfg, seed=0)
    assert (len(train), len(val), len(test)) == (3, 1, 2)
    assert root.exists()


def test_missing_data_folder_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_splits(DataConfig(source="folder", folder=str(tmp_path / "nowhere")), 0)
    (tmp_path / "only_train" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="train/<class>/ and test/<class>/"):
        load_splits(DataConfig(source="folder", folder=str(tmp_path / "only_train")), 0)


def test_epoch_order_is_a_pure_function_of_seed_and_epoch():
    a = epoch_order(100, seed=1, epoch=3)
    np.testing.assert_array_equal(a, epoch_order(100, seed=1, epoch=3))
    assert not np.array_equal(a, epoch_order(100, seed=1, epoch=4))
    assert not np.array_equal(a, epoch_order(100, seed=2, epoch=3))
    assert sorted(a) == list(range(100))


def test_train_indices_resume_mid_epoch():
    full = list(train_indices(50, 8, seed=0, epoch=2))
    resumed = list(train_indices(50, 8, seed=0, epoch=2, start_step=4))
    assert len(full) == 6  # last partial batch dropped
    for a, b in zip(full[4:], resumed, strict=True):
        np.testing.assert_array_equal(a, b)


def test_eval_indices_cover_each_example_once():
    seen = np.concatenate([idx[mask > 0] for idx, mask in eval_indices(23, 8)])
    np.testing.assert_array_equal(seen, np.arange(23))


def test_batch_larger_than_data_is_an_error():
    with pytest.raises(ValueError, match=r"train\.batch_size=64 .* \(10 examples\)"):
        steps_per_epoch(10, 64)


def test_validation_split_and_sample():
    src = tiny_arrays(40)
    train, val = split_validation(src, 0.25, seed=0)
    assert len(train) == 30 and len(val) == 10
    assert split_validation(src, 0.0, 0)[1] is None
    with pytest.raises(ValueError, match="validation_split"):
        split_validation(src, 1.0, 0)
    assert len(src.sample(7, seed=0)) == 7 and len(src.sample(0, 0)) == 40


def test_from_arrays_checks_shapes():
    src = from_arrays(np.zeros((4, 5, 5), np.uint8), np.array([[0], [1], [2], [1]]))
    assert src.images.shape == (4, 5, 5, 1) and src.class_names == ("0", "1", "2")
    with pytest.raises(ValueError, match="labels must have shape"):
        from_arrays(np.zeros((4, 5, 5, 3), np.uint8), np.zeros(3))
    with pytest.raises(ValueError, match="uint8"):
        from_arrays(np.zeros((4, 5, 5, 3), np.float32), np.zeros(4))


def test_truncated_archive_names_itself_and_leaves_no_partial_extraction(tmp_path):
    import tarfile

    write_image_folder(tmp_path / "ds" / "train", per_class=20, size=(40, 40))
    archive = tmp_path / "ds.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "ds", arcname="ds")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"ds\.tar\.gz.*truncated or corrupt"):
        resolve_folder(archive, tmp_path / "cache")
    assert list((tmp_path / "cache" / "archives").iterdir()) == []


def test_a_folder_of_only_unreadable_images_says_so(tmp_path):
    for name in ("cat/a.jpg", "cat/b.png", "dog/c.jpg"):
        (tmp_path / "bad" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "bad" / name).write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"all 3 image files under .*bad are unreadable"):
        load_image_folder(tmp_path / "bad", cache_dir=False)
