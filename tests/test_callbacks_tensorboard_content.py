import numpy as np
import pytest

from convjax.callbacks.tensorboard_content import (
    flatten_hparams,
    params_table,
    profile_range,
    weight_image,
)


def test_weight_images():
    assert weight_image(np.arange(3.0)).shape == (1, 3)
    dense = weight_image(np.arange(12.0).reshape(6, 2))
    assert dense.shape == (2, 6) and dense.min() == 0.0 and dense.max() == 1.0
    conv = np.zeros((3, 3, 2, 4))
    conv[:, :, 1, 2] = 1.0  # input channel 1, filter 2
    grid = weight_image(conv)
    assert grid.shape == (2 * 3, 4 * 3)
    assert grid[3:6, 6:9].min() == 1.0 and grid.sum() == 9.0
    assert not weight_image(np.ones((2, 2))).any()  # constant: all zeros, no division by 0


def test_params_table_lists_every_weight():
    params = {"dense": {"kernel": np.zeros((2, 3)), "bias": np.zeros(3)}}
    table = params_table(params)
    assert "dense/kernel" in table and "(2, 3)" in table and "Total params: 9" in table


def test_hparams_are_flattened_to_tensorboards_value_types():
    hparams = {"optim": {"learning_rate": 1e-3, "name": "adam", "warmup": None},
               "model": {"conv_filters": (32, 64), "dense": ()}, "seed": 0, "ema": False}
    assert flatten_hparams(hparams) == {
        "optim.learning_rate": 1e-3, "optim.name": "adam", "model.conv_filters": "(32, 64)",
        "model.dense": "()", "seed": 0, "ema": False}  # None left out: an empty cell


@pytest.mark.parametrize("given, expected", [
    (0, (0, 0)), ((0, 0), (0, 0)), (2, (2, 2)), ((2, 5), (2, 5)), ([3, 3], (3, 3)),
    ("10,20", (10, 20)),
])
def test_profile_batch_as_keras_reads_it(given, expected):
    assert profile_range(given) == expected


@pytest.mark.parametrize("given", [-1, (0, 4), (5, 2), (1, 2, 3), 1.5, "x", (-1, 2)])
def test_profile_batch_outside_keras_rules_fails(given):
    with pytest.raises(ValueError, match="profile_batch"):
        profile_range(given)
