"""The building blocks of InceptionV3, as `keras.applications.InceptionV3` builds them. Pure.

Every convolution in Keras's InceptionV3 is its helper `conv2d_bn`: Conv2D without bias, then
BatchNormalization without scale (gamma), then ReLU. `ConvBN` is that unit. The blocks below
are the five kinds of "mixed" block; their submodule names follow the branch names in the
Keras source (`branch1x1`, `branch5x5_1`, ...).

Each block lists in `keras_order` its `ConvBN` units in the order the Keras code creates them.
Keras numbers its layers in creation order (`conv2d_1`, `conv2d_2`, ...), so this order is what
lets `keras_weights` put each layer of a Keras weight file in the right place. The `__call__`
methods create the units in that same order.
"""

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

# Keras's defaults: BatchNormalization(momentum=0.99, epsilon=1e-3) and Conv2D/Dense with
# glorot_uniform kernels. Flax's own defaults differ (epsilon 1e-5, lecun_normal).
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3
KERNEL_INIT = nn.initializers.glorot_uniform()


class ConvBN(nn.Module):
    """Keras's `conv2d_bn`: Conv2D (no bias) -> BatchNorm (no scale) -> ReLU."""

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: str = "SAME"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = nn.Conv(
            self.features,
            self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            use_bias=False,  # the batch norm's bias (beta) makes a conv bias redundant
            kernel_init=KERNEL_INIT,
            name="conv",
        )(x)
        x = nn.BatchNorm(
            use_running_average=not train,
            momentum=BN_MOMENTUM,
            epsilon=BN_EPSILON,
            use_scale=False,  # Keras: BatchNormalization(scale=False); the ReLU follows
            name="bn",
        )(x)
        return nn.relu(x)


def avg_pool_3x3(x: jax.Array) -> jax.Array:
    # Keras's AveragePooling2D(padding="same") averages only the pixels inside the image, so
    # border outputs are not pulled towards zero by the padding.
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding="SAME", count_include_pad=False)


def max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class Stem(nn.Module):
    """The five convolutions and two max-pools before mixed0 (299x299 -> 35x35x192)."""

    keras_order: ClassVar[tuple[str, ...]] = (
        "conv1_3x3_s2",
        "conv2_3x3",
        "conv3_3x3",
        "conv4_1x1",
        "conv5_3x3",
    )

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = ConvBN(32, (3, 3), strides=(2, 2), padding="VALID", name="conv1_3x3_s2")(x, train)
        x = ConvBN(32, (3, 3), padding="VALID", name="conv2_3x3")(x, train)
        x = ConvBN(64, (3, 3), name="conv3_3x3")(x, train)
        x = max_pool_3x3_s2(x)
        x = ConvBN(80, (1, 1), padding="VALID", name="conv4_1x1")(x, train)
        x = ConvBN(192, (3, 3), padding="VALID", name="conv5_3x3")(x, train)
        return max_pool_3x3_s2(x)


class InceptionA(nn.Module):
    """mixed0..mixed2 (35x35): 1x1, 5x5, double 3x3 and pool branches."""

    pool_features: int  # 32 in mixed0, 64 in mixed1 and mixed2
    keras_order: ClassVar[tuple[str, ...]] = (
        "branch1x1",
        "branch5x5_1",
        "branch5x5_2",
        "branch3x3dbl_1",
        "branch3x3dbl_2",
        "branch3x3dbl_3",
        "branch_pool",
    )

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        b1 = ConvBN(64, (1, 1), name="branch1x1")(x, train)
        b5 = ConvBN(48, (1, 1), name="branch5x5_1")(x, train)
        b5 = ConvBN(64, (5, 5), name="branch5x5_2")(b5, train)
        b3 = ConvBN(64, (1, 1), name="branch3x3dbl_1")(x, train)
        b3 = ConvBN(96, (3, 3), name="branch3x3dbl_2")(b3, train)
        b3 = ConvBN(96, (3, 3), name="branch3x3dbl_3")(b3, train)
        bp = ConvBN(self.pool_features, (1, 1), name="branch_pool")(avg_pool_3x3(x), train)
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class ReductionA(nn.Module):
    """mixed3 (35x35 -> 17x17): strided 3x3, strided double 3x3 and max-pool branches."""

    keras_order: ClassVar[tuple[str, ...]] = (
        "branch3x3",
        "branch3x3dbl_1",
        "branch3x3dbl_2",
        "branch3x3dbl_3",
    )

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        b3 = ConvBN(384, (3, 3), strides=(2, 2), padding="VALID", name="branch3x3")(x, train)
        bd = ConvBN(64, (1, 1), name="branch3x3dbl_1")(x, train)
        bd = ConvBN(96, (3, 3), name="branch3x3dbl_2")(bd, train)
        bd = ConvBN(96, (3, 3), strides=(2, 2), padding="VALID", name="branch3x3dbl_3")(bd, train)
        return jnp.concatenate([b3, bd, max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
    """mixed4..mixed7 (17x17): 7x7 convolutions factorised into 1x7 and 7x1."""

    channels_7x7: int  # 128 in mixed4, 160 in mixed5 and mixed6, 192 in mixed7
    keras_order: ClassVar[tuple[str, ...]] = (
        "branch1x1",
        "branch7x7_1",
        "branch7x7_2",
        "branch7x7_3",
        "branch7x7dbl_1",
        "branch7x7dbl_2",
        "branch7x7dbl_3",
        "branch7x7dbl_4",
        "branch7x7dbl_5",
        "branch_pool",
    )

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        c = self.channels_7x7
        b1 = ConvBN(192, (1, 1), name="branch1x1")(x, train)
        b7 = ConvBN(c, (1, 1), name="branch7x7_1")(x, train)
        b7 = ConvBN(c, (1, 7), name="branch7x7_2")(b7, train)
        b7 = ConvBN(192, (7, 1), name="branch7x7_3")(b7, train)
        bd = ConvBN(c, (1, 1), name="branch7x7dbl_1")(x, train)
        bd = ConvBN(c, (7, 1), name="branch7x7dbl_2")(bd, train)
        bd = ConvBN(c, (1, 7), name="branch7x7dbl_3")(bd, train)
        bd = ConvBN(c, (7, 1), name="branch7x7dbl_4")(bd, train)
        bd = ConvBN(192, (1, 7), name="branch7x7dbl_5")(bd, train)
        bp = ConvBN(192, (1, 1), name="branch_pool")(avg_pool_3x3(x), train)
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class ReductionB(nn.Module):
    """mixed8 (17x17 -> 8x8): strided 3x3, strided 7x7-then-3x3 and max-pool branches."""

    keras_order: ClassVar[tuple[str, ...]] = (
        "branch3x3_1",
        "branch3x3_2",
        "branch7x7x3_1",
        "branch7x7x3_2",
        "branch7x7x3_3",
        "branch7x7x3_4",
    )

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        b3 = ConvBN(192, (1, 1), name="branch3x3_1")(x, train)
        b3 = ConvBN(320, (3, 3), strides=(2, 2), padding="VALID", name="branch3x3_2")(b3, train)
        b7 = ConvBN(192, (1, 1), name="branch7x7x3_1")(x, train)
        b7 = ConvBN(192, (1, 7), name="branch7x7x3_2")(b7, train)
        b7 = ConvBN(192, (7, 1), name="branch7x7x3_3")(b7, train)
        b7 = ConvBN(192, (3, 3), strides=(2, 2), padding="VALID", name="branch7x7x3_4")(b7, train)
        return jnp.concatenate([b3, b7, max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
    """mixed9 and mixed10 (8x8): branches that split into parallel 1x3 and 3x1 convolutions."""

    keras_order: ClassVar[tuple[str, ...]] = (
        "branch1x1",
        "branch3x3_1",
        "branch3x3_2a",
        "branch3x3_2b",
        "branch3x3dbl_1",
        "branch3x3dbl_2",
        "branch3x3dbl_3a",
        "branch3x3dbl_3b",
        "branch_pool",
    )

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        b1 = ConvBN(320, (1, 1), name="branch1x1")(x, train)
        b3 = ConvBN(384, (1, 1), name="branch3x3_1")(x, train)
        b3 = jnp.concatenate(
            [
                ConvBN(384, (1, 3), name="branch3x3_2a")(b3, train),
                ConvBN(384, (3, 1), name="branch3x3_2b")(b3, train),
            ],
            axis=-1,
        )
        bd = ConvBN(448, (1, 1), name="branch3x3dbl_1")(x, train)
        bd = ConvBN(384, (3, 3), name="branch3x3dbl_2")(bd, train)
        bd = jnp.concatenate(
            [
                ConvBN(384, (1, 3), name="branch3x3dbl_3a")(bd, train),
                ConvBN(384, (3, 1), name="branch3x3dbl_3b")(bd, train),
            ],
            axis=-1,
        )
        bp = ConvBN(192, (1, 1), name="branch_pool")(avg_pool_3x3(x), train)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)
