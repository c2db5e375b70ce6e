"""On-device image augmentation with Keras `ImageDataGenerator` semantics. Pure (no I/O).

    cfg = AugmentConfig(rotation_range=40, width_shift_range=0.2, height_shift_range=0.2,
                        shear_range=0.2, zoom_range=0.2, horizontal_flip=True)
    augment = jax.jit(functools.partial(augment_batch, cfg))
    images = augment(key, images_bhwc)  # float, pixel units 0..255; one key per image inside

Everything is a function of (config, key, images): jit- and vmap-able, reproducible per key.

Keras quirks kept (so course numbers carry over):
- shear_range is in degrees (the course's 0.2 is a fifth of a degree: almost no shear);
- zoom factors > 1 shrink the content (the matrix maps output to input), x and y drawn apart;
- an int shift range n gives whole pixels in -(n-1)..n-1 (np.random.choice(n) semantics);
  a float >= 1 is pixels, < 1 a fraction of the size; a list holds allowed magnitudes;
- channel_shift adds the same offset to every channel, clipped to the image's min and max;
- fill modes are scipy.ndimage's, including 'wrap' with period n-1 (Keras calls scipy);
- rescale is not applied by the augmentation: it sets the steps' one normalisation, so
  training, evaluation and prediction see the same input range (`steps.make_steps`).

Keras quirks fixed by default (`keras_compat_axes=True` puts both back, to port results):
- Keras's width_shift_range moves images vertically and height_shift_range horizontally (its
  x shift is drawn from height_shift_range, scaled by the height); here width moves columns;
- Keras turns, shears and zooms non-square images about (h/2, w/2) taken as (x, y), which is
  not the centre; here the pivot is the centre. Square images are unaffected.

Also different from Keras: brightness multiplies float pixels (clipped to 0..255) instead of
rounding through an 8-bit PIL image; 'constant' fill forgives float32 rounding at the border
(see sampling.CONSTANT_MODE_TOLERANCE). Added (not in Keras): crop_padding and cutout_size.
"""

from convjax.augment.affine import affine_matrix, apply_affine
from convjax.augment.config import FILL_MODES, AugmentConfig
from convjax.augment.pipeline import augment_batch, augment_image

__all__ = [
    "FILL_MODES",
    "AugmentConfig",
    "affine_matrix",
    "apply_affine",
    "augment_batch",
    "augment_image",
]
