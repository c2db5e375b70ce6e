"""Transfer learning: a pretrained backbone plus a new head, freezing by parameter path.

Pure. The course's three workflows are built from these pieces:

1. frozen backbone + new head: `Classifier` nests the backbone (Keras: "combine models") and
   `make_partitioned_optimizer(trainable=("head",))` gives frozen parameters a zero update
   (`optax.multi_transform` + `optax.set_to_zero`, as big_vision does);
2. feature extraction: `extract_features` runs the frozen backbone once; an MLP `Head` trains
   on the cached features (see convjax/features.py for the on-disk cache);
3. fine-tuning: the same optimizer with more path patterns trainable (e.g. the top blocks) and
   a low learning rate.

The backbone always runs in inference mode (`train=False`): its batch-norm statistics stay
the pretrained ones even when its top blocks are fine-tuned. This is the Keras guide's advice
("keep the BatchNormalization layers in inference mode when unfreezing") and is what makes
small-dataset fine-tuning stable.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

PyTree = Any


class Head(nn.Module):
    """Dropout + hidden Dense layers + logits, on pooled (B, D) or spatial (B, H, W, C) features
    (spatial ones are flattened, as the course's `Flatten()` after `mixed7`)."""

    num_classes: int
    hidden: Sequence[int] = ()
    dropout: float = 0.2

    @nn.compact
    def __call__(self, features: jax.Array, train: bool = False) -> jax.Array:
        x = features.reshape((features.shape[0], -1))
        for i, units in enumerate(self.hidden):
            x = nn.relu(nn.Dense(units, name=f"dense{i}")(x))
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        if not self.hidden and self.dropout > 0:
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes, name="logits")(x)


class Classifier(nn.Module):
    """`backbone` (pretrained, returns features) followed by a new `Head`."""

    backbone: nn.Module
    head: Head

    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        features = self.backbone(images, train=False)  # frozen BN: see the module docstring
        return self.head(features, train=train)


def init_classifier(
    model: Classifier, key: jax.Array, input_shape: tuple[int, ...], backbone_variables: dict
) -> dict:
    """Pretrained backbone variables plus freshly initialised head parameters."""
    dummy = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    try:
        features = jax.eval_shape(
            lambda v, x: model.backbone.apply(v, x, train=False), backbone_variables, dummy
        )
    except (flax.errors.FlaxError, TypeError, ValueError) as err:
        name = type(model.backbone).__name__
        raise ValueError(f"backbone_variables do not fit {name}: {err}") from err
    head = model.head.init(key, jnp.zeros(features.shape, features.dtype), train=False)
    params = {"backbone": backbone_variables["params"], "head": head["params"]}
    expected = jax.eval_shape(lambda x: model.init(key, x, train=False), dummy)["params"]
    if jax.tree.map(jnp.shape, params) != jax.tree.map(lambda s: s.shape, expected):
        raise ValueError("backbone_variables do not match the classifier's backbone structure")
    variables = {"params": params}
    if backbone_variables.get("batch_stats"):
        variables["batch_stats"] = {"backbone": backbone_variables["batch_stats"]}
    return variables


def trainable_labels(params: PyTree, trainable: Sequence[str]) -> PyTree:
    """"train"/"freeze" per leaf: a leaf trains when its path ("backbone/mixed7/...") matches
    one of the glob patterns in `trainable` (e.g. "head/*", "backbone/mixed9*")."""
    flat = traverse_util.flatten_dict(params, sep="/")
    labels = {
        path: "train" if any(fnmatch.fnmatch(path, p) or path.startswith(p.rstrip("*") + "/")
                             for p in trainable) else "freeze"
        for path in flat
    }
    if "train" not in labels.values():
        raise ValueError(f"no parameter matches the trainable patterns {list(trainable)}")
    return traverse_util.unflatten_dict(labels, sep="/")


def make_partitioned_optimizer(
    tx: optax.GradientTransformation, params: PyTree, trainable: Sequence[str]
) -> optax.GradientTransformation:
    """`tx` for the trainable paths, an exact zero update (and no optimizer state) elsewhere."""
    labels = trainable_labels(params, trainable)
    return optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, labels)
