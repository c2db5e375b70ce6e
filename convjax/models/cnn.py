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

from dataclasses import dataclass
from typing import ClassVar, Literal

import flax.linen as nn
import jax

from convjax.config_fields import check_fields, require
from convjax.models.layers import Conv2D, pool2x2


@dataclass(frozen=True)
class ModelConfig:
    """The CNN's architecture (the `model` section of the experiment config)."""

    config_key: ClassVar[str] = "model"
    conv_filters: tuple[int, ...] = (32, 64)  # filters of each conv block (one entry per block)
    convs_per_block: int = 2  # Conv+ReLU layers before each pooling
    kernel_size: int = 3  # square kernels, as in the course
    padding: Literal["SAME", "VALID"] = "SAME"  # SAME keeps the size, VALID shrinks it by k-1
    pool: Literal["max", "avg", "none"] = "max"  # 2x2 pooling, stride 2, after each block
    batch_norm: bool = False  # BatchNorm after every conv (Keras epsilon 1e-3, momentum 0.99)
    dropout: float = 0.25  # after each conv block; 0 disables
    dense: tuple[int, ...] = (512,)  # hidden Dense layers of the head
    dense_dropout: float = 0.5  # after each hidden Dense layer
    num_classes: int = 0  # 0 = as many as the data has; otherwise checked against the data
    l2: float = 0.0  # Keras kernel_regularizer=l2(l2): adds l2 * sum(kernel**2) to the loss
    # Faster formulations on XLA:CPU that compute the same function (README, "Training speed").
    conv_impl: Literal["xla", "im2col"] = "xla"  # lax.conv, or patches @ kernel (faster on CPU)
    pool_impl: Literal["xla", "reshape"] = "xla"  # reduce_window, or max of a 2x2 reshape (faster)

    def __post_init__(self) -> None:
        check_fields(self)
        require(all(f >= 1 for f in self.conv_filters), self, "conv_filters", "ints >= 1")
        require(self.convs_per_block >= 1, self, "convs_per_block", ">= 1")
        require(self.kernel_size >= 1, self, "kernel_size", ">= 1")
        require(0 <= self.dropout < 1, self, "dropout", "in [0, 1)")
        require(all(units >= 1 for units in self.dense), self, "dense", "ints >= 1")
        require(0 <= self.dense_dropout < 1, self, "dense_dropout", "in [0, 1)")
        require(self.num_classes >= 0, self, "num_classes", ">= 0 (0: from the data)")
        require(self.l2 >= 0, self, "l2", ">= 0")


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
        if cfg.num_classes < 1:  # 0 means "from the data", which the runner fills in
            raise ValueError("model.num_classes is 0 (taken from the data): set it to the "
                             "number of classes before building the CNN")
        x = images_bhwc
        for block, filters in enumerate(cfg.conv_filters):
            x = self._conv_block(x, block, filters, train)
        x = x.reshape((x.shape[0], -1))
        for i, units in enumerate(cfg.dense):
            x = nn.relu(nn.Dense(units, name=f"dense{i}")(x))
            if cfg.dense_dropout > 0:
                x = nn.Dropout(cfg.dense_dropout, deterministic=not train)(x)
        return nn.Dense(cfg.num_classes, name="logits")(x)
