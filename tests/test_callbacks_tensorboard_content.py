import numpy as np
import pytest

from convjax.callbacks.tensorboard_content import (
    DARK_BLUE,
    confusion_image,
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


def cell_colours(image: np.ndarray, classes: int) -> np.ndarray:
    """(C, C, 3): each cell's colour, read at its top-left pixel (counts are centred)."""
    cell = image.shape[0] // classes
    return image[::cell, ::cell]


def test_confusion_image_colours_each_cell_by_its_share_of_the_true_class():
    image = confusion_image(np.diag([5.0, 7.0, 1.0]))
    assert image.dtype == np.uint8 and image.shape == (192, 192, 3)  # cells of 480 // 3, at most 64
    colours = cell_colours(image, 3)
    np.testing.assert_array_equal(colours[np.eye(3, dtype=bool)], [DARK_BLUE] * 3)
    np.testing.assert_array_equal(colours[~np.eye(3, dtype=bool)], [[255, 255, 255]] * 6)
    # Rows are normalised: 9 of 10 in a big class and 1 of 1 in a small one look alike.
    shares = cell_colours(confusion_image(np.array([[9, 1], [0, 1]])), 2)
    assert shares[0, 0].sum() > shares[1, 1].sum() == DARK_BLUE.sum()  # 0.9 lighter than 1.0
    assert shares[0, 1].sum() > shares[0, 0].sum()  # 0.1 lighter still


def test_confusion_image_writes_counts_that_fit_and_survives_empty_rows():
    image = confusion_image(np.array([[3, 0], [0, 0]]))  # class 1 has no example
    assert (cell_colours(image, 2)[1] == 255).all()  # white, not NaN
    cell = image.shape[0] // 2
    count_cell = image[:cell, :cell]
    assert (count_cell != DARK_BLUE).any()  # the "3" written in white on dark blue
    big = confusion_image(np.eye(600))  # cells of 1 pixel: no text, no class names
    assert big.shape == (600, 600, 3)
    assert np.array_equal(confusion_image(np.eye(600), [str(i) for i in range(600)]), big)


def test_class_names_label_rows_and_columns_around_the_same_grid():
    matrix = np.array([[4, 1], [2, 3]])
    plain = confusion_image(matrix)
    labelled = confusion_image(matrix, ["cat", "a much longer class name"])
    margin = labelled.shape[0] - plain.shape[0]
    assert margin > 0 and labelled.shape == (margin + 128, margin + 128, 3)
    np.testing.assert_array_equal(labelled[margin:, margin:], plain)
    assert (labelled[:margin, margin:] < 255).any() and (labelled[margin:, :margin] < 255).any()
