import numpy as np
import pytest
import tensorflow_datasets as tfds

from convjax.config import DataConfig
from convjax.data import load_splits, load_tfds, load_tfds_resized


def test_cifar10_through_data_source_with_mock_data():
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        src = load_tfds("cifar10", "train")
    assert src.images.shape == (12, 32, 32, 3) and src.images.dtype == np.uint8
    assert len(src.class_names) == 10 and src.labels.max() < 10


def test_cifar100_and_splits_with_mock_data(monkeypatch):
    monkeypatch.delenv("CONVJAX_DATA", raising=False)
    with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
        train, val, test = load_splits(DataConfig(name="cifar100", validation_split=0.25), 0)
    assert (len(train), len(val), len(test)) == (15, 5, 20)
    assert len(train.class_names) == 100


def test_offline_error_says_how_to_use_local_files(tmp_path, monkeypatch):
    # A real attempt would spend minutes retrying the download on a machine without network.
    def data_source(*args, **kwargs):
        raise ConnectionError("Failed to establish a new connection")

    monkeypatch.setattr(tfds, "data_source", data_source)
    with pytest.raises(RuntimeError, match="CONVJAX_DATA"):
        load_tfds("cifar10", "train", data_dir=str(tmp_path))


def test_cats_vs_dogs_photos_resized_through_data_source():
    # The mock photos have random sizes, like the real ones; all come out at 15x15.
    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        src = load_tfds_resized("cats_vs_dogs", "train", (15, 15))
        grey = load_tfds_resized("cats_vs_dogs", "train", (15, 9), color_mode="grayscale")
    assert src.images.shape == (6, 15, 15, 3) and src.images.dtype == np.uint8
    assert src.class_names == ("cat", "dog") and set(src.labels.tolist()) <= {0, 1}
    assert src.images.std() > 0  # real pixels, not an empty buffer
    assert grey.images.shape == (6, 15, 9, 1)


def test_a_missing_module_is_reported_as_such_not_as_no_network(monkeypatch):
    import tensorflow_datasets as tfds

    def data_source(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'importlib_resources'",
                                  name="importlib_resources")

    monkeypatch.setattr(tfds, "data_source", data_source)
    with pytest.raises(RuntimeError, match="missing module 'importlib_resources'") as err:
        load_tfds("cifar10", "train")
    assert "CONVJAX_DATA" not in str(err.value)  # not the offline hint


def test_the_modules_tfds_imports_lazily_are_installed():
    import importlib

    for name in ("importlib_resources", "array_record", "etils.epath"):
        importlib.import_module(name)  # a fresh `pip install convjax` must bring them
