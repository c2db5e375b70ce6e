import numpy as np
import pytest
import tensorflow_datasets as tfds

from convjax.config import DataConfig
from convjax.data import load_splits, load_tfds


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


def test_offline_error_says_how_to_use_local_files(tmp_path):
    with pytest.raises(RuntimeError, match="CONVJAX_DATA"):
        load_tfds("cifar10", "train", data_dir=str(tmp_path))
