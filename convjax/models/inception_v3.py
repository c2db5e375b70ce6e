"""InceptionV3 as `keras.applications.InceptionV3` builds it, in Flax linen. Pure.

    from convjax.models.keras_weights import load_inception_v3_weights
    model = InceptionV3(include_top=False, output_layer="mixed7")  # the course's `last_layer`
    variables = load_inception_v3_weights("x_notop.h5", model)  # or load_inception_v3_imagenet
    features_bhwc = model.apply(variables, preprocess_input(images_bhwc), train=False)

Parameter tree: `stem` and one entry per Keras block, `mixed0` .. `mixed10`, each holding
`ConvBN` units named after the Keras branch variables (e.g. `mixed7/branch7x7_2/conv/kernel`,
`mixed7/branch7x7_2/bn/bias`; running statistics under `batch_stats`), plus `predictions`
(kernel, bias) with the top. `keras_conv_order` lists the units in Keras's creation order,
which is the order of `conv2d_1 .. conv2d_94` and `batch_normalization_1 .. _94` in Keras
weight files. Blocks by path also make freezing easy: everything under `mixed0..mixed7`.

`apply_with_endpoints(model, variables, images_bhwc)` also returns every block's output by
its Keras name, e.g. `["mixed7"]`, from the same forward pass.
"""

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from convjax.models.inception_v3_blocks import (
    KERNEL_INIT,
    InceptionA,
    InceptionC,
    InceptionE,
    ReductionA,
    ReductionB,
    Stem,
)
from convjax.normalize import INCEPTION

# Keras rejects smaller inputs: the stem and the two reductions need at least 75x75 pixels to
# leave a non-empty 1x1 grid at mixed10.
MIN_SIZE = 75

# (Keras layer name, block constructor) from input to output.
BLOCKS: tuple[tuple[str, Callable[..., nn.Module]], ...] = (
    ("mixed0", functools.partial(InceptionA, pool_features=32)),
    ("mixed1", functools.partial(InceptionA, pool_features=64)),
    ("mixed2", functools.partial(InceptionA, pool_features=64)),
    ("mixed3", ReductionA),
    ("mixed4", functools.partial(InceptionC, channels_7x7=128)),
    ("mixed5", functools.partial(InceptionC, channels_7x7=160)),
    ("mixed6", functools.partial(InceptionC, channels_7x7=160)),
    ("mixed7", functools.partial(InceptionC, channels_7x7=192)),
    ("mixed8", ReductionB),
    ("mixed9", InceptionE),
    ("mixed10", InceptionE),
)
ENDPOINTS: tuple[str, ...] = tuple(name for name, _ in BLOCKS)


def preprocess_input(images: jax.Array) -> jax.Array:
    """Pixels in [0, 255] -> [-1, 1], as `keras.applications.inception_v3.preprocess_input`.

    Keras's name for `convjax.normalize.INCEPTION`; steps and the feature cache take the spec
    itself, not this function.
    """
    return INCEPTION(images)


class InceptionV3(nn.Module):
    """`keras.applications.InceptionV3(weights=None, ...)` with the same options.

    `apply(variables, images_bhwc, train=False)` takes NHWC float images (see
    `preprocess_input`) of at least 75x75 and returns, in this order of precedence:
    - `output_layer` set: that block's feature map, e.g. (B, 17, 17, 768) for "mixed7" at 299;
      the blocks after it are not built (no parameters), like Keras's
      `Model(inputs, model.get_layer("mixed7").output)`;
    - `include_top`: class probabilities (B, classes) ("predictions"), or logits when
      `classifier_activation` is None (what a softmax cross-entropy loss wants);
    - otherwise the mixed10 feature map, globally pooled when `pooling` is "avg" or "max".
    `pooling` also applies to the `output_layer` map. `train=True` uses batch statistics and
    needs `mutable=["batch_stats"]`.
    """

    include_top: bool = True
    pooling: str | None = None  # None, "avg" or "max"; Keras ignores it with the top
    classes: int = 1000
    classifier_activation: str | None = "softmax"  # "softmax" or None (logits)
    output_layer: str | None = None  # None (the whole network) or one of ENDPOINTS

    def check_config(self) -> None:
        """Raises ValueError for contradictory options, before any tracing."""
        if self.output_layer is not None and self.output_layer not in ENDPOINTS:
            raise ValueError(
                f"output_layer must be None or one of {ENDPOINTS}, got {self.output_layer!r}"
            )
        if self.output_layer is not None and self.include_top:
            raise ValueError(
                f"output_layer={self.output_layer!r} needs include_top=False "
                "(the classifier sits after mixed10)"
            )
        if self.pooling not in (None, "avg", "max"):
            raise ValueError(f"pooling must be None, 'avg' or 'max', got {self.pooling!r}")
        if self.classifier_activation not in (None, "softmax"):
            raise ValueError(
                "classifier_activation must be 'softmax' or None, "
                f"got {self.classifier_activation!r}"
            )

    def built_blocks(self) -> tuple[tuple[str, Callable[..., nn.Module]], ...]:
        """The `BLOCKS` this configuration builds: all, or those up to `output_layer`."""
        if self.output_layer is None:
            return BLOCKS
        return BLOCKS[: ENDPOINTS.index(self.output_layer) + 1]

    @nn.compact
    def __call__(self, images_bhwc: jax.Array, train: bool = False) -> jax.Array:
        self.check_config()
        check_input_shape(images_bhwc.shape)
        x = Stem(name="stem")(images_bhwc, train)
        for name, block in self.built_blocks():
            x = block(name=name)(x, train)
        if self.include_top:
            x = jnp.mean(x, axis=(1, 2))  # Keras's GlobalAveragePooling2D "avg_pool"
            logits = nn.Dense(self.classes, kernel_init=KERNEL_INIT, name="predictions")(x)
            return nn.softmax(logits) if self.classifier_activation == "softmax" else logits
        if self.pooling == "avg":
            return jnp.mean(x, axis=(1, 2))
        if self.pooling == "max":
            return jnp.max(x, axis=(1, 2))
        return x


def check_input_shape(shape: tuple[int, ...]) -> None:
    """Raises ValueError unless `shape` is (batch, height, width, channels), both sides >= 75."""
    if len(shape) != 4:
        raise ValueError(
            f"InceptionV3 expects images_bhwc of shape (batch, height, width, "
            f"channels), got shape {shape}"
        )
    height, width = shape[1], shape[2]
    if height < MIN_SIZE or width < MIN_SIZE:
        raise ValueError(
            f"InceptionV3 needs images_bhwc of at least {MIN_SIZE}x{MIN_SIZE} "
            f"pixels (height x width), got {height}x{width}"
        )


def keras_conv_order(model: InceptionV3) -> list[tuple[str, str]]:
    """(block, unit) of every ConvBN that `model` builds, in Keras's creation order.

    The i-th entry holds the weights of the i-th Conv2D and i-th BatchNormalization that
    Keras creates (`conv2d_i` and `batch_normalization_i` in the published weight files).
    """
    order = [("stem", unit) for unit in Stem.keras_order]
    for name, block in model.built_blocks():
        block_class = block.func if isinstance(block, functools.partial) else block
        order += [(name, unit) for unit in block_class.keras_order]
    return order


def apply_with_endpoints(
    model: InceptionV3, variables: dict, images_bhwc: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(model output, {block name: block output}) from one forward pass in inference mode.

    Like Keras's `Model(inputs, [model.get_layer("mixed7").output, ...])`, for every block the
    model builds ("mixed0" ..), via Flax's `capture_intermediates`.
    """

    def is_block(module: nn.Module, method_name: str) -> bool:
        return method_name == "__call__" and len(module.path) == 1 and module.name in ENDPOINTS

    output, state = model.apply(
        variables,
        images_bhwc,
        train=False,
        capture_intermediates=is_block,
        mutable=["intermediates"],
    )
    captured = state["intermediates"]
    # capture_intermediates keeps a tuple of outputs (one per call) under "__call__".
    return output, {name: captured[name]["__call__"][0] for name in ENDPOINTS if name in captured}
