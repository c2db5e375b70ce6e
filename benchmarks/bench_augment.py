"""Augmentation throughput: convjax (jitted, on device) against Keras's ImageDataGenerator.

Command (from the repository root; drop JAX_PLATFORMS to use an accelerator):

    JAX_PLATFORMS=cpu python benchmarks/bench_augment.py

The config is the course's cats-vs-dogs one (rotation 40, shifts 0.2, shear 0.2, zoom 0.2,
horizontal flip, fill 'nearest'), on 32x32x3 images in batches of 128 and 150x150x3 in batches
of 32. convjax is timed after compilation, waiting for each batch (block_until_ready); Keras
(optional: skipped with a message when it cannot be imported) runs `flow(...)` batches, which
call scipy once per image and channel. Both run in this process, in interleaved rounds of at
least a second each, and the table gives the median of the per-round ratios with their range:
on a shared machine compare ratios, not absolute numbers. Target: convjax >= 20x.
Runtime: about 30 seconds on 2 CPU cores.

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
ROUNDS = 7  # interleaved convjax/Keras timings per case; medians of the per-round ratios
SECONDS = 1.0  # each timing runs at least this long (Keras does ~2 batches/s at 150x150)


def images_per_second(step, batch_size: int, min_seconds: float = SECONDS) -> float:
    """(images / second) over as many calls of step(i) as fit in min_seconds (at least one)."""
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_seconds or n == 0:
        step(n)
        n += 1
    return n * batch_size / elapsed


def make_convjax_step(images: np.ndarray):
    augment = jax.jit(functools.partial(augment_batch, AugmentConfig(**COURSE)))
    images = jax.device_put(images)
    keys = jax.random.split(jax.random.key(0), 1000)
    augment(keys[0], images).block_until_ready()  # compile outside the timing
    return lambda i: augment(keys[i % 1000], images).block_until_ready()


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
    print(f"JAX {jax.__version__} on {jax.devices()[0].platform}; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; config: {COURSE}")
    print(f"{ROUNDS} interleaved rounds per case, each timing >= {SECONDS:g} s")
    rows = []
    for side, batch_size in CASES:
        images = np.random.default_rng(0).uniform(0, 255, (batch_size, side, side, 3))
        images = images.astype(np.float32)
        ours_step, flow = make_convjax_step(images), make_keras_flow(images)
        ours, keras = [], []
        for _ in range(ROUNDS if flow else 1):  # each ratio compares timings seconds apart
            ours.append(images_per_second(ours_step, batch_size))
            if flow:
                keras.append(images_per_second(lambda i, f=flow: next(f), batch_size))
        rows.append((f"{side}x{side}x3", batch_size, ours, keras))

    print(f"\n{'images':<12}{'batch':>6}{'convjax img/s':>15}{'keras img/s':>13}"
          f"{'ratio (median)':>16}{'min-max':>14}")
    for shape, batch_size, ours, keras in rows:
        if keras:
            ratios = [o / k for o, k in zip(ours, keras)]
            tail = (f"{statistics.median(keras):13,.0f}{statistics.median(ratios):15.1f}x"
                    f"{min(ratios):7.1f}-{max(ratios):.1f}x")
        else:
            tail = f"{'-':>13}{'-':>16}{'-':>14}"
        print(f"{shape:<12}{batch_size:>6}{statistics.median(ours):15,.0f}{tail}")


if __name__ == "__main__":
    main()
