"""The course's CNNs as configurations of one Flax module.

Pure. `CNN` is a stack of conv blocks (Conv[+BN]+ReLU repeated, then 2x2 pooling and dropout)
followed by a dense head, exactly the Keras Sequential models the course builds:

    Conv2D(32, 3, padding="same", activation="relu")   -> Conv2D("conv0_0")
    BatchNormalization()                                -> BatchNorm("bn0_0")
    MaxPooling2D(2)                                     -> pool2x2 (no parameters)
    Dropout(0.25)                                       -> Dropout
    Flatten(); Dense(512, "relu"); Dense(10)            -> flatten, Dense("dense0"), Dense("logits")

The model returns float32 logits (no softmax): the loss applies log-softmax itself, which is
more accurate than Keras's softmax-then-log.

Mixed precision (`dtype="bfloat16"`, Keras's "mixed_bfloat16" policy): layers compute in
bfloat16 from float32 parameters (`param_dtype`), so gradients and the optimizer state stay
float32; batch-norm statistics are reduced and kept in float32 (Flax's BatchNorm), and the
logits are cast to float32 before the softmax and the loss. On this CPU bfloat16 ran at 0.87x
float32's speed: it is an option for GPU/TPU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from convjax.config_fields import check_fields, require
from convjax.models.layers import Conv2D, pool2x2, resolve_impl

DType = Literal["float32", "bfloat16"]
ConvImpl = Literal["auto", "xla", "im2col", "shifted", "onednn"]


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
    l2_layers: Literal["all", "conv", "dense"] = "all"  # whose kernels `l2` regularises
    # Formulations of the same function (README, "Training speed"); "auto" takes the fastest
    # on the running backend (`layers.resolve_impl`): on CPU oneDNN's conv (on one device,
    # where it builds; else xla) + reshape pool, xla for both elsewhere.
    # xla: lax.conv; im2col: patches @ kernel; shifted: a sum over the k*k offsets of shifted
    # input @ kernel[i, j] (models/shifted_conv.py); onednn: Intel's oneDNN kernels through
    # jax.ffi (models/onednn_conv.py, float32, CPU)
    conv_impl: ConvImpl = "auto"  # lax.conv, a pure-JAX rewrite of it, or oneDNN's
    pool_impl: Literal["auto", "xla", "reshape"] = "auto"  # reduce_window, or max of a reshape
    dtype: DType = "float32"  # compute dtype; bfloat16 = mixed precision (for GPU/TPU)
    param_dtype: DType = "float32"  # parameters (and so gradients, optimizer state, EMA)

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


def resolved_impls(cfg: ModelConfig, backend: str | None = None) -> dict[str, str]:
    """The formulations the CNN runs with on `backend` (default: the running one)."""
    return {"conv_impl": resolve_impl("conv", cfg.conv_impl, backend, cfg.dtype),
            "pool_impl": resolve_impl("pool", cfg.pool_impl, backend)}


def resolve_model_impls(cfg: ModelConfig, backend: str | None = None) -> ModelConfig:
    """`cfg` with "auto" formulations replaced by those of `backend` (at model build)."""
    return dataclasses.replace(cfg, **resolved_impls(cfg, backend))


def _dtypes(cfg: ModelConfig) -> dict[str, jnp.dtype]:
    return {"dtype": jnp.dtype(cfg.dtype), "param_dtype": jnp.dtype(cfg.param_dtype)}


class CNN(nn.Module):
    cfg: ModelConfig

    def _conv_block(self, x: jax.Array, block: int, filters: int, train: bool) -> jax.Array:
        cfg = self.cfg
        dtypes = _dtypes(cfg)
        for j in range(cfg.convs_per_block):
            x = Conv2D(filters, cfg.kernel_size, cfg.padding, impl=cfg.conv_impl,
                       name=f"conv{block}_{j}", **dtypes)(x)
            if cfg.batch_norm:
                # Keras defaults: momentum 0.99, epsilon 1e-3 (Flax's are 0.99 and 1e-5).
                # Flax reduces the statistics and keeps the running averages in float32.
                x = nn.BatchNorm(
                    use_running_average=not train, momentum=0.99, epsilon=1e-3,
                    name=f"bn{block}_{j}", **dtypes,
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
        dtypes = _dtypes(cfg)
        x = images_bhwc.astype(dtypes["dtype"])
        for block, filters in enumerate(cfg.conv_filters):
            x = self._conv_block(x, block, filters, train)
        x = x.reshape((x.shape[0], -1))
        for i, units in enumerate(cfg.dense):
            x = nn.relu(nn.Dense(units, name=f"dense{i}", **dtypes)(x))
            if cfg.dense_dropout > 0:
                x = nn.Dropout(cfg.dense_dropout, deterministic=not train)(x)
        # float32 logits: the softmax and the loss run in float32 (Keras's mixed precision
        # guide does the same with a float32 final activation).
        return nn.Dense(cfg.num_classes, name="logits", **dtypes)(x).astype(jnp.float32)
