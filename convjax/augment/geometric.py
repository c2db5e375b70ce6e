"""Flips, random crop with padding and cutout: cheap spatial transforms of one image. Pure.

Each takes uniforms u in [0, 1) (drawn once per image by the pipeline) and one HWC image; the
random choice is traced (jnp.where), so one compiled program serves every image of a batch.
"""

import jax
import jax.numpy as jnp

from convjax.augment.affine import uniform_index
from convjax.augment.sampling import sample_image


def random_flip(u: jax.Array, image_hwc: jax.Array, axis: int) -> jax.Array:
    """Reverse `axis` (1: left-right, 0: top-bottom) when u < 1/2."""
    return jnp.where(u < 0.5, jnp.flip(image_hwc, axis), image_hwc)


def random_crop(
    u: jax.Array, image_hwc: jax.Array, padding: int, fill_mode: str, cval: float
) -> jax.Array:
    """Crop of the image padded by `padding` on each side: a whole-pixel shift in [-p, p].

    u: two uniforms (rows, columns). The padding is filled like every other outside pixel
    (fill_mode): 'reflect' is the fast-CIFAR recipe, 'constant' with cval=0 the classic
    zero-padded crop.
    """
    height, width, _ = image_hwc.shape
    dy = uniform_index(u[0], 2 * padding + 1) - padding
    dx = uniform_index(u[1], 2 * padding + 1) - padding
    # Reading through the shared sampler (not jnp.pad + slice) gives exactly the fill modes of
    # the affine transform, including scipy's peculiar 'wrap'. Integer positions: no blending.
    rows = jnp.broadcast_to(jnp.arange(height)[:, None] + dy, (height, width))
    cols = jnp.broadcast_to(jnp.arange(width)[None, :] + dx, (height, width))
    return sample_image(
        image_hwc, rows.astype(jnp.float32), cols.astype(jnp.float32), fill_mode, cval, order=0
    )


def random_cutout(u: jax.Array, image_hwc: jax.Array, size: int, cval: float) -> jax.Array:
    """Fill a size x size square with cval; its centre (from two uniforms u) is any pixel.

    As in DeVries & Taylor (2017) the square may hang over the border (then less is hidden).
    Cutout usually runs on normalised images, where 0 is the mean: to get that here, set cval
    to the dataset mean in pixel units.
    """
    height, width, _ = image_hwc.shape
    top = uniform_index(u[0], height) - size // 2
    left = uniform_index(u[1], width) - size // 2
    rows = jnp.arange(height)[:, None]
    cols = jnp.arange(width)[None, :]
    hidden = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
    return jnp.where(hidden[..., None], jnp.asarray(cval, image_hwc.dtype), image_hwc)
