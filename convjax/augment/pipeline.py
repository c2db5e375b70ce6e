"""augment_image and augment_batch: the configured transforms, in Keras's order. Pure.

Order: affine (rotation, shift, shear, zoom) -> random crop -> channel shift -> flips ->
brightness -> cutout. The first, and flips and brightness, follow Keras's `apply_transform`.
`AugmentConfig.rescale` is *not* applied here: pixels stay in pixel units (so are cval and the
brightness clip) and the step's one normalisation (`normalize.py`, set from `rescale` by
`steps.make_steps`) follows, the same in training, evaluation and prediction.

Transforms that are off are skipped by Python `if`s on the static config: they are not in the
compiled program at all.
"""

import functools

import jax
import jax.numpy as jnp

from convjax.augment.affine import apply_affine, random_affine_matrix
from convjax.augment.config import AugmentConfig
from convjax.augment.geometric import random_crop, random_cutout, random_flip
from convjax.augment.photometric import random_brightness, random_channel_shift

# Every random number an image needs is drawn in one call, `uniform(key, (_NUM_UNIFORMS,))`:
# one PRNG call compiles several times faster than one per transform. Each transform reads its
# own fixed slots, so switching one transform on or off leaves the others' draws unchanged
# (ablations compare like with like).
_AFFINE = slice(0, 8)  # rotation, x shift (value, sign), y shift (value, sign), shear, zx, zy
_CROP = slice(8, 10)  # row and column offsets
_CHANNEL_SHIFT, _HFLIP, _VFLIP, _BRIGHTNESS = 10, 11, 12, 13
_CUTOUT = slice(14, 16)  # centre row and column
_NUM_UNIFORMS = 16


def augment_image(cfg: AugmentConfig, key: jax.Array, image_hwc: jax.Array) -> jax.Array:
    """One random augmentation of one float HWC image in pixel units; same shape and dtype."""
    _check_images(image_hwc, rank=3)
    height, width, _ = image_hwc.shape
    u = jax.random.uniform(key, (_NUM_UNIFORMS,))

    x = image_hwc
    if cfg.affine_enabled:
        matrix = random_affine_matrix(cfg, u[_AFFINE], height, width)
        x = apply_affine(x, matrix, cfg.fill_mode, cfg.cval, cfg.interpolation_order)
    if cfg.crop_padding:
        x = random_crop(u[_CROP], x, cfg.crop_padding, cfg.fill_mode, cfg.cval)
    if cfg.channel_shift_range:
        x = random_channel_shift(u[_CHANNEL_SHIFT], x, cfg.channel_shift_range)
    if cfg.horizontal_flip:
        x = random_flip(u[_HFLIP], x, axis=1)
    if cfg.vertical_flip:
        x = random_flip(u[_VFLIP], x, axis=0)
    if cfg.brightness_enabled:
        x = random_brightness(u[_BRIGHTNESS], x, *cfg.brightness_range)
    if cfg.cutout_size:
        x = random_cutout(u[_CUTOUT], x, cfg.cutout_size, cfg.cval)
    return x.astype(image_hwc.dtype)


def augment_batch(cfg: AugmentConfig, key: jax.Array, images_bhwc: jax.Array) -> jax.Array:
    """Augment each image of a batch with its own key (split from `key`); same shape and dtype.

    Jit it with the config bound: `jax.jit(functools.partial(augment_batch, cfg))`.
    """
    _check_images(images_bhwc, rank=4)
    if not cfg.enabled:
        return images_bhwc
    keys = jax.random.split(key, images_bhwc.shape[0])
    # Under explicit sharding (jax.make_mesh's default) vmap wants the keys split over devices
    # like the images; under automatic sharding the spec is empty and nothing happens.
    sharding = jax.typeof(images_bhwc).sharding
    if len(sharding.spec) and sharding.spec[0] is not None:
        batch_only = jax.sharding.PartitionSpec(sharding.spec[0])
        keys = jax.sharding.reshard(keys, jax.sharding.NamedSharding(sharding.mesh, batch_only))
    return jax.vmap(functools.partial(augment_image, cfg))(keys, images_bhwc)


def _check_images(images: jax.Array, rank: int) -> None:
    layout = "HWC" if rank == 3 else "BHWC"
    if images.ndim != rank:
        raise ValueError(f"images must be {layout} (rank {rank}), got shape {images.shape}")
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise ValueError(
            f"images must be floating point in pixel units (0..255), got {images.dtype}; "
            "convert uint8 images with .astype(jnp.float32) first"
        )
