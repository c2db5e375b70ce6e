"""Conv and pooling layers, each with alternative formulations of the same function.

Pure. Each alternative computes the same function as the standard Flax/lax layer (tests
compare them); they were written for XLA:CPU, where three parts of a CNN were slow:

- conv weight-gradients -> `im2col`: gather the k*k shifted views into one patch tensor, so
  forward and both gradients are plain matrix products; `shifted` (module `shifted_conv`)
  gets the same products as a sum over the k*k offsets, without the patch tensor;
- the max-pool gradient (`select_and_scatter`) -> `reshape`: for 2x2/stride-2 pooling a max
  over a reshaped axis, whose gradient is an elementwise mask;
- XLA:CPU's convolutions themselves -> `onednn` (module `onednn_conv`): Intel's oneDNN
  kernels, the ones PyTorch uses on CPU, called from the jitted program through `jax.ffi`.

Measured on the course CNN (README, "Training speed"), with jax/jaxlib 0.10.2 on CPU: a train
step with oneDNN's conv runs at 1.6-1.9x the speed of one with XLA's conv, which in turn
beats im2col and `shifted` (whose thin (Cin, Cout) products are bound by memory traffic); the
reshape max-pool beats `select_and_scatter`. Every `impl` defaults to "auto": `resolve_impl`
picks the one measured fastest on the running backend when the model is built.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# The module, not its names: `available` is looked up when called (tests replace it).
import convjax.models.onednn_conv as onednn_conv
from convjax.models.onednn_conv import conv_onednn
from convjax.models.shifted_conv import conv_shifted, padding_amounts

# The formulations measured fastest per backend (README, "Training speed"; EfficientNet-Lite's
# depthwise conv: efficientnet_lite.DepthwiseConv2D). A backend not listed (gpu, tpu) gets
# XLA's own convolutions and pooling, which its compilers are built to run fast.
CONV_IMPLS = ("xla", "im2col", "shifted", "onednn")
FASTEST = {"cpu": {"conv": "onednn", "pool": "reshape", "depthwise": "shifted"}}


def resolve_impl(kind: str, impl: str, backend: str | None = None,
                 dtype: Any = jnp.float32) -> str:
    """`impl` itself, or for "auto" the fastest formulation of layer `kind` ("conv", "pool" or
    "depthwise") on `backend` (default: the running one, `jax.default_backend()`) for a layer
    computing in `dtype`."""
    if impl != "auto":
        return impl
    backend = jax.default_backend() if backend is None else backend
    fastest = FASTEST.get(backend, {}).get(kind, "xla")
    if fastest == "onednn" and not (jnp.dtype(dtype) == jnp.float32 and _onednn_fits()):
        return "xla"
    return fastest


def _onednn_fits() -> bool:
    """Whether "auto" may take oneDNN's conv: it must build and load here (`available`), and
    run on one device. Its custom call has no partitioning rule, so with the batch sharded over
    several devices XLA would gather the whole batch onto every device for each conv (correct,
    but each device would do all the work); XLA's own conv is partitioned."""
    return jax.device_count() == 1 and onednn_conv.available()


def extract_patches(x_bhwc: jax.Array, kernel_size: int, padding: str) -> jax.Array:
    """(B, H, W, C) -> (B, H', W', k*k*C) patches, ordered (dy, dx, c) like an HWIO kernel."""
    pads = padding_amounts(kernel_size, padding)
    x_bhwc = jnp.pad(x_bhwc, ((0, 0), pads, pads, (0, 0)))
    out_h = x_bhwc.shape[1] - kernel_size + 1
    out_w = x_bhwc.shape[2] - kernel_size + 1
    views = [
        x_bhwc[:, dy : dy + out_h, dx : dx + out_w, :]
        for dy in range(kernel_size)
        for dx in range(kernel_size)
    ]
    return jnp.concatenate(views, axis=-1)


class Conv2D(nn.Module):
    """Stride-1 square conv with bias; parameters named and shaped exactly like `nn.Conv`,
    stored as `param_dtype` and computed in `dtype` (mixed precision: bfloat16 and float32)."""

    features: int
    kernel_size: int = 3
    padding: str = "SAME"
    impl: str = "auto"  # "xla", "im2col", "shifted", "onednn" or "auto" (`resolve_impl`)
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_bhwc: jax.Array) -> jax.Array:
        impl = resolve_impl("conv", self.impl, dtype=self.dtype)
        if impl not in CONV_IMPLS:
            raise ValueError(f"conv_impl must be one of {', '.join(CONV_IMPLS)} or 'auto', "
                             f"got {self.impl!r}")
        in_ch = x_bhwc.shape[-1]
        kernel_shape = (self.kernel_size, self.kernel_size, in_ch, self.features)
        # Same initialisers and names as nn.Conv, so both impls share one parameter tree.
        kernel = self.param("kernel", nn.initializers.lecun_normal(), kernel_shape,
                            self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,),
                          self.param_dtype)
        x_bhwc, kernel, bias = (a.astype(self.dtype) for a in (x_bhwc, kernel, bias))
        if impl == "xla":
            y = jax.lax.conv_general_dilated(
                x_bhwc, kernel, (1, 1), self.padding.upper(),
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )
            return y + bias
        if impl == "shifted":
            return conv_shifted(x_bhwc, kernel, self.padding) + bias
        if impl == "onednn":
            return conv_onednn(x_bhwc, kernel, self.padding) + bias
        patches = extract_patches(x_bhwc, self.kernel_size, self.padding)
        return patches @ kernel.reshape(-1, self.features) + bias


def pool2x2(x_bhwc: jax.Array, kind: str, impl: str = "auto") -> jax.Array:
    """2x2 pooling with stride 2 (Keras MaxPooling2D()/AveragePooling2D() defaults)."""
    if kind not in ("max", "avg"):
        raise ValueError(f"pool must be 'max', 'avg' or 'none', got {kind!r}")
    resolved = resolve_impl("pool", impl)
    if resolved == "xla":
        pool = nn.max_pool if kind == "max" else nn.avg_pool
        return pool(x_bhwc, (2, 2), strides=(2, 2))
    if resolved != "reshape":
        raise ValueError(f"pool_impl must be 'xla', 'reshape' or 'auto', got {impl!r}")
    b, h, w, c = x_bhwc.shape
    # Keras 'valid' pooling drops an odd last row/column; do the same before reshaping.
    x = x_bhwc[:, : h - h % 2, : w - w % 2, :].reshape(b, h // 2, 2, w // 2, 2, c)
    return x.max(axis=(2, 4)) if kind == "max" else x.mean(axis=(2, 4))
