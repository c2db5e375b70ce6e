"""Augmentation throughput: convjax (jitted, on device) against Keras's ImageDataGenerator.

Command (from the repository root; drop JAX_PLATFORMS to use an accelerator):

    JAX_PLATFORMS=cpu python benchmarks/bench_augment.py

The config is the course's cats-vs-dogs one (rotation 40, shifts 0.2, shear 0.2, zoom 0.2,
horizontal flip, fill 'nearest'), on 32x32x3 images in batches of 128 and 150x150x3 in batches
of 32. convjax is timed after compilation, waiting for each batch (block_until_ready); Keras
(optional: skipped with a message when it cannot be imported) runs `flow(...)` batches, which
call scipy once per image and channel. Both run in this process, one after the other, so
compare the ratio rather than absolute numbers on a shared machine. Target: convjax >= 20x.
Runtime: about a minute on 2 CPU cores.

This script is I/O (it reads clocks and prints); the augmentation itself is pure.
"""

import functools
import os
import statistics
import time

import jax
import numpy as np

from convjax.augment import AugmentConfig, augment_batch

COURSE = dict(
    rotation_range=40,
    width_shift_range=0.2,
    height_shift_range=0.2,
    shear_range=0.2,
    zoom_range=0.2,
    horizontal_flip=True,
    fill_mode="nearest",
)
CASES = [(32, 128), (150, 32)]  # (image side, batch size)
REPEATS = 5  # timings per measurement; the median is reported


def images_per_second(step, batch_size: int, min_seconds: float = 0.3) -> float:
    """Median over REPEATS of (images / second), each timing at least min_seconds long."""
    rates = []
    for _ in range(REPEATS):
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < min_seconds or n == 0:
            step(n)
            n += 1
        rates.append(n * batch_size / elapsed)
    return statistics.median(rates)


def bench_convjax(images: np.ndarray) -> float:
    augment = jax.jit(functools.partial(augment_batch, AugmentConfig(**COURSE)))
    images = jax.device_put(images)
    keys = jax.random.split(jax.random.key(0), 1000)
    augment(keys[0], images).block_until_ready()  # compile outside the timing
    return images_per_second(
        lambda i: augment(keys[i % 1000], images).block_until_ready(), len(images)
    )


def make_keras_flow(images: np.ndarray):
    """A Keras flow over `images` with the course config, or None when Keras is missing."""
    os.environ.setdefault("KERAS_BACKEND", "jax")  # Keras 3 otherwise wants TensorFlow
    try:
        from keras.src.legacy.preprocessing.image import ImageDataGenerator
    except ImportError as error:
        print(f"Keras not importable ({error}): skipping the Keras peer.")
        return None
    return ImageDataGenerator(**COURSE).flow(images, batch_size=len(images), shuffle=False)


def main() -> None:
    print(f"JAX {jax.__version__} on {jax.devices()[0].platform}; config: {COURSE}")
    rows = []
    for side, batch_size in CASES:
        images = np.random.default_rng(0).uniform(0, 255, (batch_size, side, side, 3))
        images = images.astype(np.float32)
        ours = bench_convjax(images)
        flow = make_keras_flow(images)
        keras = images_per_second(lambda i, f=flow: next(f), batch_size) if flow else None
        rows.append((f"{side}x{side}x3", batch_size, ours, keras))

    print(f"\n{'images':<12}{'batch':>6}{'convjax img/s':>16}{'keras img/s':>14}{'ratio':>9}")
    for shape, batch_size, ours, keras in rows:
        keras_text = f"{keras:14,.0f}" if keras else f"{'-':>14}"
        ratio_text = f"{ours / keras:8.1f}x" if keras else f"{'-':>9}"
        print(f"{shape:<12}{batch_size:>6}{ours:16,.0f}{keras_text}{ratio_text}")


if __name__ == "__main__":
    main()
