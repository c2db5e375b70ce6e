"""Brightness and channel shift: per-pixel changes of intensity. Pure.

Both act on float pixel values (0..255) directly. Keras rounds brightness through an 8-bit PIL
image; here nothing is quantised, so results differ from Keras by up to one grey level.
Each takes one uniform u in [0, 1), drawn once per image by the pipeline.
"""

import jax
import jax.numpy as jnp


def random_brightness(u: jax.Array, image_hwc: jax.Array, lo: float, hi: float) -> jax.Array:
    """Multiply by a factor uniform in [lo, hi], saturating at 0 and 255 as PIL does."""
    factor = (lo + (hi - lo) * u).astype(image_hwc.dtype)
    return jnp.clip(image_hwc * factor, 0, 255)


def random_channel_shift(u: jax.Array, image_hwc: jax.Array, shift_range: float) -> jax.Array:
    """Add one offset in [-r, r] to every channel, clipped to the image's own min and max.

    This is Keras's apply_channel_shift: despite the name, all channels get the same offset,
    and the clip bounds are the whole image's extremes (over all channels).
    """
    offset = ((2 * u - 1) * shift_range).astype(image_hwc.dtype)
    return jnp.clip(image_hwc + offset, image_hwc.min(), image_hwc.max())
