"""The course's CNNs as configurations of one Flax module.

Pure. `CNN` is a stack of conv blocks (Conv[+BN]+ReLU repeated, then 2x2 pooling and dropout)
followed by a dense head, exactly the Keras Sequential models the course builds:

    Conv2D(32, 3, padding="same", activation="relu")   -> Conv2D("conv0_0")
    BatchNormalization()                                -> BatchNorm("bn0_0")
    MaxPooling2D(2)                                     -> pool2x2 (no parameters)
    Dropout(0.25)                                       -> Dropout
    Flatten(); Dense(512, "relu"); Dense(10)            -> flatten, Dense("dense0"), Dense("logits")

The model returns logits (no softmax): the loss applies log-softmax itself, which is more
accurate than Keras's softmax-then-log.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from convjax.config import ModelConfig
from convjax.models.layers import Conv2D, pool2x2


class CNN(nn.Module):
    cfg: ModelConfig

    def _conv_block(self, x: jax.Array, block: int, filters: int, train: bool) -> jax.Array:
        cfg = self.cfg
        for j in range(cfg.convs_per_block):
            x = Conv2D(
                filters, cfg.kernel_size, cfg.padding, impl=cfg.conv_impl, name=f"conv{block}_{j}"
            )(x)
            if cfg.batch_norm:
                # Keras defaults: momentum 0.99, epsilon 1e-3 (Flax's are 0.99 and 1e-5).
                x = nn.BatchNorm(
                    use_running_average=not train, momentum=0.99, epsilon=1e-3,
                    name=f"bn{block}_{j}",
                )(x)
            x = nn.relu(x)
        if cfg.pool != "none":
            x = pool2x2(x, cfg.pool, cfg.pool_impl)
        if cfg.dropout > 0:
            x = nn.Dropout(cfg.dropout, deterministic=not train)(x)
        return x

    @nn.compact
    def __call__(self, images_bhwc: jax.Array, train: bool = False) -> jax.Array:
        cfg = self.cfg
        x = images_bhwc
        for block, filters in enumerate(cfg.conv_filters):
            x = self._conv_block(x, block, filters, train)
        x = x.reshape((x.shape[0], -1))
        for i, units in enumerate(cfg.dense):
            x = nn.relu(nn.Dense(units, name=f"dense{i}")(x))
            if cfg.dense_dropout > 0:
                x = nn.Dropout(cfg.dense_dropout, deterministic=not train)(x)
        return nn.Dense(cfg.num_classes, name="logits")(x)


def l2_penalty(params) -> jax.Array:
    """Sum of squared kernels (not biases, not BN scales), as Keras `kernel_regularizer=l2`."""
    leaves = jax.tree_util.tree_leaves_with_path(params)
    squares = [
        jnp.sum(jnp.square(leaf))
        for path, leaf in leaves
        if getattr(path[-1], "key", None) == "kernel"
    ]
    return sum(squares, jnp.zeros((), jnp.float32))
