"""Pixel normalisation: the one place where uint8 pixels become the model's float inputs.

Pure. A `Normalization` is a small frozen, hashable spec (not a function), so that the same
value is bound into the train, eval and predict steps, it can be written into configs and
results, and a feature cache can be keyed by it (two specs are equal exactly when they compute
the same thing; two lambdas never compare equal, and would silently share a cache key).

    y = x * scale + offset      (per channel when `scale` / `offset` have one entry per channel)

The course's `rescale=1./255` is `Normalization()`; Keras's InceptionV3 `preprocess_input`
(x / 127.5 - 1) is `INCEPTION`; EfficientNet-Lite's (x - 127) / 128 is `LITE`.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp


@dataclass(frozen=True)
class Normalization:
    scale: tuple[float, ...] = (1.0 / 255.0,)  # one value, or one per channel
    offset: tuple[float, ...] = (0.0,)  # added after scaling; one value or one per channel

    def __post_init__(self):
        # Accept plain floats too (Normalization(1/255)), stored as tuples to stay hashable.
        for name in ("scale", "offset"):
            value = getattr(self, name)
            if isinstance(value, (int, float)):
                object.__setattr__(self, name, (float(value),))
            else:
                object.__setattr__(self, name, tuple(float(v) for v in value))

    def __call__(self, images: jax.Array) -> jax.Array:
        """uint8 or float pixels (..., C) -> float32 model inputs."""
        images = jnp.asarray(images, jnp.float32)
        return images * jnp.asarray(self.scale, jnp.float32) + jnp.asarray(self.offset, jnp.float32)

    @classmethod
    def mean_std(cls, mean: tuple[float, ...], std: tuple[float, ...]) -> Normalization:
        """(x - mean) / std, as torchvision-style preprocessing writes it (pixel units)."""
        return cls(tuple(1.0 / s for s in std), tuple(-m / s for m, s in zip(mean, std)))


RESCALE = Normalization()  # the course's ImageDataGenerator(rescale=1./255)
INCEPTION = Normalization((1.0 / 127.5,), (-1.0,))  # keras.applications.inception_v3
LITE = Normalization.mean_std((127.0,), (128.0,))  # EfficientNet-Lite's TF builder
IDENTITY = Normalization((1.0,), (0.0,))  # inputs already prepared (cached features)
