"""Read an image at fractional (row, col) positions, with scipy.ndimage's fill modes. Pure.

Why not `jax.scipy.ndimage.map_coordinates`: its 'constant' mode blends the edge pixel with
cval (scipy calls that 'grid-constant') and its 'wrap' has period n (scipy's 'grid-wrap'),
while Keras calls scipy's 'constant' (cval outside [0, n-1], no blending) and 'wrap' (period
n-1: first and last pixels overlap). On an HWC image it also interpolates along the channel
axis, gathering single values; here one gather reads a whole pixel (all channels) at once.

The recipe is scipy's for spline order 0 and 1: fold each coordinate into [0, n-1] as the fill
mode says, then interpolate between in-range neighbours.
"""

import jax
import jax.numpy as jnp

# Coordinates computed in float32 land a hair outside [0, n-1] where exact arithmetic gives the
# border (a 180-degree turn gives -1e-6, not 0). 'constant' accepts that much, so rounding
# never paints a border pixel with cval. scipy (float64) uses no tolerance.
CONSTANT_MODE_TOLERANCE = 1e-3


def fold_coordinate(coord: jax.Array, size: int, fill_mode: str) -> jax.Array:
    """Where scipy reads a coordinate that may lie outside [0, size-1], as a coordinate inside."""
    last = size - 1
    if fill_mode in ("nearest", "constant"):  # constant's outside points are masked by the caller
        return jnp.clip(coord, 0, last)
    if fill_mode == "reflect":
        # Mirror about the outer pixel edges (-0.5 and size-0.5): d c b a | a b c d | d c b a.
        period = 2 * size
        m = jnp.mod(coord + 0.5, period)
        return jnp.clip(jnp.where(m < size, m, period - m) - 0.5, 0, last)
    if fill_mode == "wrap":
        if size == 1:
            return jnp.zeros_like(coord)
        # scipy's 'wrap' repeats with period size-1 and leaves [0, size-1] itself untouched.
        below = coord + last * (jnp.trunc(-coord / last) + 1)
        above = coord - last * jnp.trunc(coord / last)
        return jnp.where(coord < 0, below, jnp.where(coord > last, above, coord))
    raise ValueError(f"fill_mode must be constant, nearest, reflect or wrap; got {fill_mode!r}")


def sample_image(
    image_hwc: jax.Array,
    rows: jax.Array,
    cols: jax.Array,
    fill_mode: str = "nearest",
    cval: float = 0.0,
    order: int = 1,
) -> jax.Array:
    """image at each (rows[i, j], cols[i, j]): bilinear (order 1) or nearest pixel (order 0)."""
    height, width, _ = image_hwc.shape
    r = fold_coordinate(rows, height, fill_mode)
    c = fold_coordinate(cols, width, fill_mode)
    out = interpolate(image_hwc, r, c, order)
    if fill_mode == "constant":
        tol = CONSTANT_MODE_TOLERANCE
        inside_rows = (rows >= -tol) & (rows <= height - 1 + tol)
        inside_cols = (cols >= -tol) & (cols <= width - 1 + tol)
        inside = inside_rows & inside_cols
        out = jnp.where(inside[..., None], out, jnp.asarray(cval, out.dtype))
    return out


def interpolate(image_hwc: jax.Array, r: jax.Array, c: jax.Array, order: int) -> jax.Array:
    """image at positions (r, c) that lie inside [0, H-1] x [0, W-1]."""
    height, width, channels = image_hwc.shape
    pixels = image_hwc.reshape(height * width, channels)

    def read(ri: jax.Array, ci: jax.Array) -> jax.Array:
        # One gather of whole pixels, shape r.shape + (C,). The indices are in range by
        # construction (folded, then clamped); saying so skips JAX's index normalisation,
        # which is measurably slower on CPU. The clip guards against NaN positions.
        flat = jnp.clip(ri * width + ci, 0, height * width - 1)
        return pixels.at[flat].get(mode="promise_in_bounds")

    if order == 0:
        # scipy rounds half up (floor(x + 0.5)), unlike jnp.round's half-to-even.
        ri = jnp.minimum(jnp.floor(r + 0.5), height - 1).astype(jnp.int32)
        ci = jnp.minimum(jnp.floor(c + 0.5), width - 1).astype(jnp.int32)
        return read(ri, ci)
    if order == 1:
        r0, c0 = jnp.floor(r), jnp.floor(c)
        wr = (r - r0)[..., None].astype(image_hwc.dtype)  # weight of the lower/right neighbour
        wc = (c - c0)[..., None].astype(image_hwc.dtype)
        r0, c0 = r0.astype(jnp.int32), c0.astype(jnp.int32)
        # At the last row/column the far neighbour has weight 0; clamping keeps it in bounds.
        r1, c1 = jnp.minimum(r0 + 1, height - 1), jnp.minimum(c0 + 1, width - 1)
        top = read(r0, c0) * (1 - wc) + read(r0, c1) * wc
        bottom = read(r1, c0) * (1 - wc) + read(r1, c1) * wc
        return top * (1 - wr) + bottom * wr
    raise ValueError(f"interpolation order must be 0 or 1, got {order!r}")
