"""Tests for convjax.augment: Keras/scipy parity, the fixed Keras axis bugs, every parameter."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi

from convjax.augment import (
    AugmentConfig,
    affine_matrix,
    apply_affine,
    augment_batch,
    augment_image,
)
from convjax.augment.geometric import random_flip
from helpers import require_module

KEY = jax.random.key(0)


def batch(n=8, h=6, w=7, c=3, lo=1.0, hi=255.0, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.uniform(lo, hi, (n, h, w, c)), jnp.float32)


# These tests check results, not speed: XLA's unoptimised CPU backend compiles twice as fast,
# and compiling is most of this file's runtime.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


@functools.cache  # one compile per config (AugmentConfig is hashable)
def jitted(cfg):
    return jax.jit(functools.partial(augment_batch, cfg), compiler_options=FAST_COMPILE)


def run(cfg, images, key=KEY):
    return np.asarray(jitted(cfg)(key, images))


def keras_matrix_rowcol(theta, tx, ty, shear, zx, zy, h, w):
    """Keras 3's apply_affine_transform matrix, for scipy's (row, col) order (copied from it)."""
    t, s = np.deg2rad(theta), np.deg2rad(shear)
    rotation = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    shift = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
    shearing = np.array([[1, -np.sin(s), 0], [0, np.cos(s), 0], [0, 0, 1]])
    zoom = np.array([[zx, 0, 0], [0, zy, 0], [0, 0, 1]])
    ox, oy = h / 2 - 0.5, w / 2 - 0.5  # transform_matrix_offset_center(matrix, h, w)
    offset = np.array([[1, 0, ox], [0, 1, oy], [0, 0, 1]])
    reset = np.array([[1, 0, -ox], [0, 1, -oy], [0, 0, 1]])
    m = offset @ rotation @ shift @ shearing @ zoom @ reset
    m[:, [0, 1]] = m[:, [1, 0]]  # Keras's swap of x and y for numpy's (row, col) indexing
    m[[0, 1]] = m[[1, 0]]
    return m


def scipy_affine(image, m, mode, cval, order):
    channels = [
        ndi.affine_transform(
            image[..., c].astype(np.float64), m[:2, :2], m[:2, 2], order=order, mode=mode, cval=cval
        )
        for c in range(image.shape[-1])
    ]
    return np.stack(channels, -1)


@functools.partial(
    jax.jit, static_argnames=("mode", "order", "compat"), compiler_options=FAST_COMPILE
)
def transform(image, params, mode="nearest", cval=0.0, order=1, compat=False):
    """affine_matrix + apply_affine for params (theta, tx, ty, shear, zx, zy), compiled once
    per shape and static choice (the tests stay fast)."""
    h, w, _ = image.shape
    return apply_affine(image, affine_matrix(*params, h, w, compat), mode, cval, order)


# Generic transforms: no sampled position lands exactly on the border, where float64 scipy and
# float32 here may round to opposite sides (see test_rotate_180_is_both_flips_on_non_square).
TRANSFORMS = [(30.0, 1.5, -2.2, 10.0, 0.8, 1.25), (-75.0, 0.3, 0.7, -25.0, 1.3, 0.9)]
PARITY_CASES = (
    [((8, 8), False, p, 1) for p in TRANSFORMS]  # square: the default equals Keras
    + [((7, 11), True, TRANSFORMS[0], 1)]  # non-square: compat mode equals Keras
    + [((8, 8), False, TRANSFORMS[1], 0)]  # nearest-pixel interpolation
)


@pytest.mark.parametrize("mode", ["nearest", "reflect", "constant", "wrap"])
@pytest.mark.parametrize("shape, compat, params, order", PARITY_CASES)
def test_affine_matches_scipy_with_keras_matrix(mode, shape, compat, params, order):
    # Images in [0, 1]: float32 positions are off by ~1e-6 px, so errors scale with contrast.
    image = np.random.default_rng(1).uniform(0, 1, shape + (3,)).astype(np.float32)
    expected = scipy_affine(image, keras_matrix_rowcol(*params, *shape), mode, 0.7, order)
    got = transform(jnp.asarray(image), jnp.asarray(params), mode, 0.7, order, compat)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_compat_mode_matches_keras_itself_on_non_square(monkeypatch):
    if "KERAS_BACKEND" not in os.environ:  # Keras 3 would otherwise want TensorFlow
        monkeypatch.setenv("KERAS_BACKEND", "jax")
    require_module("keras")  # a test extra: skips locally when absent, fails under CI
    from keras.src.legacy.preprocessing.image import apply_affine_transform

    image = np.random.default_rng(1).uniform(0, 1, (7, 11, 3)).astype(np.float32)
    params = TRANSFORMS[0]
    expected = apply_affine_transform(image, *params, row_axis=0, col_axis=1, channel_axis=2)
    got = transform(jnp.asarray(image), jnp.asarray(params), compat=True)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def asymmetric_5x9():
    return jnp.arange(5 * 9 * 2, dtype=jnp.float32).reshape(5, 9, 2) ** 1.5


def params(theta=0.0, tx=0.0, ty=0.0, shear=0.0, zx=1.0, zy=1.0):
    return jnp.array([theta, tx, ty, shear, zx, zy])


@pytest.mark.parametrize("mode", ["nearest", "constant"])
def test_rotate_180_is_both_flips_on_non_square(mode):
    image = asymmetric_5x9()
    got = transform(image, params(theta=180), mode, cval=-1.0)
    np.testing.assert_allclose(got, image[::-1, ::-1], atol=1e-3)
    keras_pivot = transform(image, params(theta=180), mode, cval=-1.0, compat=True)
    assert not np.allclose(keras_pivot, image[::-1, ::-1], atol=1.0)  # Keras's off-centre pivot


def test_positive_angle_turns_counter_clockwise():
    image = jnp.arange(64.0).reshape(8, 8, 1)
    np.testing.assert_allclose(transform(image, params(theta=90)), np.rot90(image), atol=1e-3)


def test_zoom_keeps_the_centre_of_a_non_square_image():
    image = asymmetric_5x9()
    got = transform(image, params(zx=0.5, zy=0.5))
    np.testing.assert_allclose(got[2, 4], image[2, 4], rtol=1e-5)
    keras = transform(image, params(zx=0.5, zy=0.5), compat=True)
    assert not np.allclose(keras[2, 4], image[2, 4], rtol=1e-2)


def shifted(image, dy, dx, cval):
    """image moved by (dy, dx) whole pixels, holes filled with cval (numpy reference)."""
    out = np.full_like(image, cval)
    h, w = image.shape[:2]
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def assert_each_shifted(outputs, images, moves, cval=-1.0):
    for out, image in zip(outputs, np.asarray(images), strict=True):
        assert any(np.allclose(out, shifted(image, dy, dx, cval), atol=1e-3) for dy, dx in moves)


@pytest.mark.parametrize("compat", [False, True])
def test_width_shift_moves_along_width_and_height_shift_along_height(compat):
    images = batch(n=6, h=5, w=9)
    const = dict(fill_mode="constant", cval=-1.0, keras_compat_axes=compat)
    wide = run(AugmentConfig(width_shift_range=[2], **const), images)
    tall = run(AugmentConfig(height_shift_range=[1], **const), images)
    rows, cols = [(2, 0), (-2, 0)], [(0, 2), (0, -2)]
    assert_each_shifted(wide, images, rows if compat else cols)  # Keras moves width vertically
    rows, cols = [(1, 0), (-1, 0)], [(0, 1), (0, -1)]
    assert_each_shifted(tall, images, cols if compat else rows)


@pytest.mark.parametrize(
    "shift_range, allowed_pixels",
    [
        ([0.25], {-2, 2}),  # a list of fractions (all < 1): +-0.25 * width
        (3, {-2, -1, 0, 1, 2}),  # an int n: whole pixels 0..n-1, random sign (Keras)
        (0.25, None),  # a float < 1: uniform in +-0.25 * width = +-2 pixels
        (2.0, None),  # a float >= 1: uniform in +-2 pixels, not a fraction
    ],
)
def test_shift_range_kinds_follow_keras(shift_range, allowed_pixels):
    ramp = jnp.broadcast_to(jnp.arange(8.0) * 10, (16, 5, 8))[..., None]  # value = 10 * column
    out = run(AugmentConfig(width_shift_range=shift_range), ramp)
    moved_pixels = (out[:, 0, 3, 0] - 30.0) / 10  # column 3 stays clear of the border
    assert np.all(np.abs(moved_pixels) <= 2 + 1e-4)
    if allowed_pixels is None:
        assert len(np.unique(moved_pixels.round(3))) > 8  # continuous, not a few values
    else:
        assert set(moved_pixels.round(3)) <= allowed_pixels


def test_fill_modes_follow_scipy():
    ramp = jnp.broadcast_to(jnp.arange(9.0) * 10, (5, 9))[..., None]  # value = 10 * column
    first_two = {
        mode: np.asarray(transform(ramp, params(tx=-2), mode, cval=-5.0))[0, :2, 0].tolist()
        for mode in ("constant", "nearest", "reflect", "wrap")
    }  # tx=-2 reads from 2 columns to the left: the content moves right
    # scipy's wrap repeats with period n-1 (first and last pixel overlap): -2 -> 6, -1 -> 7.
    assert first_two == {
        "constant": [-5, -5],
        "nearest": [0, 0],
        "reflect": [10, 0],
        "wrap": [60, 70],
    }


# Configs (and image shapes) are shared with the focused tests below, so that each program is
# compiled once for the whole file: compiling dominates this file's runtime.
CROP = dict(crop_padding=2, fill_mode="constant", cval=-1.0)
ONE_AT_A_TIME = [
    dict(rotation_range=40),
    dict(width_shift_range=0.3),
    dict(height_shift_range=3),
    dict(shear_range=30),
    dict(zoom_range=[0.5, 0.8]),
    dict(brightness_range=[0.5, 0.9]),
    dict(channel_shift_range=40.0),
    dict(horizontal_flip=True),
    dict(vertical_flip=True),
    CROP,
    dict(cutout_size=3),
]


@pytest.mark.parametrize("kwargs", ONE_AT_A_TIME, ids=str)
def test_each_transform_changes_images_and_keeps_shape_and_dtype(kwargs):
    cfg = AugmentConfig(**kwargs)
    images = batch()
    out = run(cfg, images)
    assert cfg.enabled and out.shape == images.shape and out.dtype == np.float32
    assert not np.allclose(out, images)


OFF = [
    dict(),
    dict(rotation_range=0),
    dict(width_shift_range=0),
    dict(height_shift_range=0.0),
    dict(shear_range=0.0),
    dict(zoom_range=0),
    dict(zoom_range=[1, 1]),
    dict(brightness_range=[1, 1]),
    dict(channel_shift_range=0.0),
    dict(crop_padding=0),
    dict(cutout_size=0),
    dict(rescale=None),
    dict(rescale=0.5),  # the steps' normalisation, not an augmentation
    dict(fill_mode="reflect", cval=9.0),
]


@pytest.mark.parametrize("kwargs", OFF, ids=str)
def test_off_or_zero_range_is_identity(kwargs):
    cfg = AugmentConfig(**kwargs)
    images = batch()
    assert not cfg.enabled
    np.testing.assert_array_equal(run(cfg, images), images)


def test_flip_twice_is_identity_and_flips_are_mirrors():
    image = batch(n=1)[0]
    for u in (0.2, 0.7):  # flipped (u < 1/2) and kept
        for axis in (0, 1):
            twice = random_flip(u, random_flip(u, image, axis), axis)
            np.testing.assert_array_equal(twice, image)
    images = np.asarray(batch())
    out = run(AugmentConfig(horizontal_flip=True), images)
    mirrored = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images, strict=True)]
    kept = [np.array_equal(o, i) for o, i in zip(out, images, strict=True)]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True))
    assert any(mirrored) and any(kept)


def test_crop_is_a_whole_pixel_shift_within_padding():
    cfg = AugmentConfig(**CROP)
    images = batch()
    moves = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]
    assert_each_shifted(run(cfg, images), images, moves)


def test_cutout_fills_one_square_with_cval():
    out = run(AugmentConfig(cutout_size=3, cval=0.0), batch())  # images are >= 1
    for image in out:
        rows, cols = np.nonzero((image == 0).all(-1))
        assert 0 < rows.size <= 9 and np.ptp(rows) < 3 and np.ptp(cols) < 3
        assert (image == 0).any(-1).sum() == rows.size  # channels change together


def test_brightness_multiplies_and_saturates():
    images = batch(lo=1.0, hi=100.0)
    ratio = run(AugmentConfig(brightness_range=[0.5, 0.9]), images) / images
    per_image = ratio.reshape(len(ratio), -1)
    assert np.allclose(per_image, per_image[:, :1], rtol=1e-5)  # one factor per image
    assert (per_image >= 0.5 - 1e-6).all() and (per_image <= 0.9 + 1e-6).all()
    assert run(AugmentConfig(brightness_range=[3, 4]), images).max() == 255.0


def test_channel_shift_adds_one_offset_clipped_to_the_image_range():
    images = batch(lo=50.0, hi=200.0)
    out = run(AugmentConfig(channel_shift_range=40.0), images)
    for o, i in zip(out, np.asarray(images), strict=True):
        assert o.min() >= i.min() and o.max() <= i.max()
        unclipped = (o > i.min()) & (o < i.max())
        offsets = (o - i)[unclipped]
        assert np.ptp(offsets) < 1e-3 and abs(offsets[0]) <= 40.0  # same for every channel


def test_rescale_is_left_to_the_steps_normalisation():
    # Pixels stay in pixel units through augmentation (cval too); rescale is applied once, by
    # the steps, in training and evaluation alike (tests/test_steps.py).
    cfg = AugmentConfig(cutout_size=20, cval=100.0, rescale=0.5)  # cutout hides everything
    np.testing.assert_allclose(run(cfg, batch(n=2, h=4, w=4)), 100.0)
    assert not AugmentConfig(rescale=0.5).enabled


KERAS_COURSE = AugmentConfig(
    rotation_range=40,
    width_shift_range=0.2,
    height_shift_range=0.2,
    shear_range=0.2,
    zoom_range=0.2,
    horizontal_flip=True,
    fill_mode="nearest",
)


def test_same_key_same_output_different_key_different_output():
    images = batch()
    np.testing.assert_array_equal(run(KERAS_COURSE, images), run(KERAS_COURSE, images))
    assert not np.allclose(run(KERAS_COURSE, images), run(KERAS_COURSE, images, jax.random.key(1)))
    old_style = jax.random.PRNGKey(0)  # raw uint32 keys work too
    assert run(KERAS_COURSE, images, old_style).shape == images.shape


def test_each_example_gets_its_own_transform():
    same = jnp.broadcast_to(batch(n=1), (8, 6, 7, 3))
    out = run(KERAS_COURSE, same)
    assert len({o.tobytes() for o in out}) == 8


def test_switching_one_transform_on_leaves_the_others_draws_alone():
    images = batch()
    rotated = run(AugmentConfig(rotation_range=40), images)
    both = run(AugmentConfig(rotation_range=40, vertical_flip=True), images)
    # Separately compiled programs may differ in the last bits, hence allclose.
    assert all(
        np.allclose(b, r, atol=1e-3) or np.allclose(b, r[::-1], atol=1e-3)
        for b, r in zip(both, rotated, strict=True)
    )


def test_vmap_of_augment_image_is_augment_batch_and_eager_works():
    images = batch()
    keys = jax.random.split(KEY, len(images))
    per_image = jax.vmap(functools.partial(augment_image, KERAS_COURSE))
    vmapped = jax.jit(per_image, compiler_options=FAST_COMPILE)(keys, images)
    # Separately compiled programs may differ in the last bits, hence allclose.
    np.testing.assert_allclose(vmapped, run(KERAS_COURSE, images), atol=1e-3)
    cheap = AugmentConfig(horizontal_flip=True, brightness_range=[0.5, 0.9])  # few ops to run
    eager = augment_image(cheap, keys[0], images[0])  # no jit anywhere
    np.testing.assert_allclose(eager, run(cheap, images)[0], atol=1e-3)


def test_lower_precision_dtype_is_kept():
    images = batch().astype(jnp.bfloat16)
    assert run(KERAS_COURSE, images).dtype == jnp.bfloat16


def test_config_is_hashable_with_lists_turned_into_tuples():
    cfg = AugmentConfig(width_shift_range=[1, 2], zoom_range=[0.8, 1.2])
    assert cfg.width_shift_range == (1, 2) and hash(cfg) == hash(
        AugmentConfig(width_shift_range=(1, 2), zoom_range=(0.8, 1.2))
    )
    assert KERAS_COURSE.zoom_bounds == (0.8, 1.2)


@pytest.mark.parametrize(
    "name, value",
    [
        ("rotation_range", -1),
        ("width_shift_range", -0.1),
        ("height_shift_range", []),
        ("height_shift_range", [0.1, -2]),
        ("shear_range", "10"),
        ("zoom_range", [0.9]),
        ("zoom_range", [0.8, 1.0, 1.2]),
        ("zoom_range", -0.1),
        ("zoom_range", 1.5),
        ("zoom_range", [1.2, 0.8]),
        ("brightness_range", [0.5]),
        ("brightness_range", [1.5, 0.5]),
        ("channel_shift_range", -1.0),
        ("fill_mode", "mirror"),
        ("cval", None),
        ("interpolation_order", 3),
        ("rescale", "1/255"),
        ("crop_padding", -1),
        ("crop_padding", 2.5),
        ("cutout_size", -3),
        ("horizontal_flip", "yes"),
        ("keras_compat_axes", 1),
    ],
)
def test_bad_parameters_raise_naming_the_parameter(name, value):
    with pytest.raises(ValueError, match=name):
        AugmentConfig(**{name: value})


def test_bad_images_raise():
    with pytest.raises(ValueError, match="floating"):
        augment_batch(KERAS_COURSE, KEY, batch().astype(jnp.uint8))
    with pytest.raises(ValueError, match="BHWC"):
        augment_batch(KERAS_COURSE, KEY, batch()[0])


@pytest.mark.parametrize("axis_type", ["Explicit", "Auto"])
def test_batch_sharded_over_devices_gives_the_same_result(axis_type):
    axis_types = (getattr(jax.sharding.AxisType, axis_type),)
    mesh = jax.make_mesh((len(jax.devices()),), ("batch",), axis_types=axis_types)
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
    images = batch()  # 8 images over the 4 fake CPU devices of conftest.py
    sharded = run(KERAS_COURSE, jax.device_put(images, sharding))
    np.testing.assert_allclose(sharded, run(KERAS_COURSE, images), atol=1e-3)
