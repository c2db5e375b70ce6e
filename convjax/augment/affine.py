"""Keras's affine augmentation: rotation, shift, shear and zoom in one resampling pass. Pure.

Coordinates are (x, y) = (column, row), as in Keras's matrices. A matrix maps an *output* pixel
to the input position it is read from (scipy's `affine_transform` convention), so a shift of
+k reads from k pixels further on: content moves by -k. Matrices are 2x3: the top two rows of
the homogeneous 3x3 matrix, whose last row is always (0, 0, 1).
"""

import jax
import jax.numpy as jnp

from convjax.augment.config import AugmentConfig, ShiftRange
from convjax.augment.sampling import sample_image


def affine_matrix(
    theta: jax.Array | float,
    tx: jax.Array | float,
    ty: jax.Array | float,
    shear: jax.Array | float,
    zx: jax.Array | float,
    zy: jax.Array | float,
    height: int,
    width: int,
    keras_compat_axes: bool = False,
) -> jax.Array:
    """2x3 matrix: output (x, y, 1) -> input (x, y); Keras's rotation . shift . shear . zoom.

    theta and shear in degrees; tx along x (columns) and ty along y (rows), in pixels; zx, zy
    the zoom factors (> 1 shows more of the scene: the content shrinks). The composition turns
    about the image centre; `keras_compat_axes=True` turns about Keras's point instead, which is
    the centre only for square images.
    """
    if keras_compat_axes:
        # Keras's transform_matrix_offset_center(matrix, h, w) puts the height on the x axis.
        cx, cy = height / 2 - 0.5, width / 2 - 0.5
    else:
        cx, cy = (width - 1) / 2, (height - 1) / 2
    # The product, multiplied out by hand: a few scalar formulas compile (and run) much faster
    # than five 3x3 matrix products. tests/test_augment.py checks it against Keras's product.
    theta, shear = jnp.deg2rad(theta), jnp.deg2rad(shear)
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    # rotation @ shearing: shearing tilts the y axis by `shear`, rotation turns both by theta;
    # zoom then scales the two columns.
    a, b = cos * zx, -jnp.sin(theta + shear) * zy
    c, d = sin * zx, jnp.cos(theta + shear) * zy
    # The shift comes after the rotation in the product, so it is turned by theta too.
    shift_x, shift_y = cos * tx - sin * ty, sin * tx + cos * ty
    # About the centre: input = linear(output - centre) + centre + shift.
    e = cx + shift_x - a * cx - b * cy
    f = cy + shift_y - c * cx - d * cy
    # Only the two informative rows: a constant (0, 0, 1) row would be unbatched under vmap,
    # which explicit sharding refuses to stack with the batched entries.
    return jnp.stack([jnp.stack([a, b, e]), jnp.stack([c, d, f])])


def apply_affine(
    image_hwc: jax.Array,
    matrix: jax.Array,
    fill_mode: str = "nearest",
    cval: float = 0.0,
    order: int = 1,
) -> jax.Array:
    """Resample image_hwc through `matrix` (from affine_matrix), like scipy's affine_transform."""
    height, width, _ = image_hwc.shape
    ys, xs = jnp.meshgrid(
        jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32), indexing="ij"
    )
    x_in = matrix[0, 0] * xs + matrix[0, 1] * ys + matrix[0, 2]
    y_in = matrix[1, 0] * xs + matrix[1, 1] * ys + matrix[1, 2]
    return sample_image(image_hwc, y_in, x_in, fill_mode, cval, order)


def uniform_index(u: jax.Array, n: int) -> jax.Array:
    """An int uniform in 0..n-1 from u uniform in [0, 1)."""
    return jnp.minimum(jnp.floor(u * n), n - 1).astype(jnp.int32)  # min: float32 rounding


def sample_shift(u: jax.Array, shift_range: ShiftRange, size: int) -> jax.Array:
    """One random shift in pixels, drawn as Keras's get_random_transform draws it.

    u holds two uniforms in [0, 1): the magnitude and the sign.
    """
    if isinstance(shift_range, float):
        shift = (2 * u[0] - 1) * shift_range
        return shift * size if shift_range < 1 else shift
    # Keras: np.random.choice(n) for an int n picks from 0..n-1, so int 3 gives -2..2.
    values = tuple(range(shift_range)) if isinstance(shift_range, int) else shift_range
    magnitude = jnp.asarray(values, jnp.float32)[uniform_index(u[0], len(values))]
    shift = jnp.where(u[1] < 0.5, magnitude, -magnitude)
    return shift * size if max(values) < 1 else shift


def random_affine_matrix(cfg: AugmentConfig, u: jax.Array, height: int, width: int) -> jax.Array:
    """The matrix of one random draw of cfg's rotation, shifts, shear and zoom.

    u: 8 uniforms in [0, 1), each with a fixed use whichever transforms are on: rotation,
    x shift (2), y shift (2), shear, zoom x, zoom y.
    """

    def symmetric(u_i: jax.Array, r: float) -> jax.Array | float:
        return (2 * u_i - 1) * r if r else 0.0

    # Keras feeds height_shift_range to its x (column) shift, scaled by the height, and
    # width_shift_range to y (rows): the swap that keras_compat_axes keeps and the default fixes.
    if cfg.keras_compat_axes:
        x_range, x_size = cfg.height_shift_range, height
        y_range, y_size = cfg.width_shift_range, width
    else:
        x_range, x_size = cfg.width_shift_range, width
        y_range, y_size = cfg.height_shift_range, height
    tx = sample_shift(u[1:3], x_range, x_size) if x_range else 0.0
    ty = sample_shift(u[3:5], y_range, y_size) if y_range else 0.0
    lo, hi = cfg.zoom_bounds
    zx, zy = 1.0, 1.0
    if (lo, hi) != (1.0, 1.0):
        # Independent x and y zoom, as Keras draws them (the aspect ratio changes too).
        zx, zy = lo + (hi - lo) * u[6], lo + (hi - lo) * u[7]
    return affine_matrix(
        symmetric(u[0], cfg.rotation_range),
        tx,
        ty,
        symmetric(u[5], cfg.shear_range),
        zx,
        zy,
        height,
        width,
        cfg.keras_compat_axes,
    )
