"""Stride-1 convolution as a sum of shifted matrix products, with a hand-written gradient.

Pure. A kh x kw convolution is a sum over the kernel's kh*kw offsets (i, j): take the input
window shifted by (i, j), see it as a (B*H'*W', Cin) matrix, and multiply it by the kernel's
(Cin, Cout) slice `kernel[i, j]`:

    y             = sum_ij window_ij(x) @ kernel[i, j]
    dkernel[i, j] =        window_ij(x)^T @ dy            (one small matrix per offset)
    dx            = sum_ij place_ij(dy @ kernel[i, j]^T)  (each term added back where its
                                                           window came from, then unpadded)

All three are plain matrix products, which XLA:CPU runs through its dot kernels. `im2col`
(`layers`) gets the same by concatenating the kh*kw windows into one patch tensor, which
costs kh*kw copies of the input: for the course CNN's second 3x3 conv at batch 128 (32x32x32
float32) that is 9 x 16 MB = ~150 MB written, read back, and kept alive for the backward pass
(autodiff saves the patches for dkernel). Here no patch tensor exists: the forward keeps only
`x` and `kernel` for the backward, and each window is used once, as it is made.

Measured (README, "Training speed", issue #14), with jax 0.10.2 on CPU: per layer about as
fast as im2col and ~3x slower than XLA's own conv (timed under load); in the whole train step
361 images/s against 480 for im2col and 662 for XLA's conv (quiet machine). Each product
is thin (a (Cin, Cout) = 32x32 kernel slice), so memory traffic, not arithmetic, bounds it.
It stays as the readable statement of what a conv's gradients are, and to re-measure on
other CPUs and jax versions (`benchmarks/bench_conv_impls.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

import jax
import jax.numpy as jnp

Window = tuple[int, int, jax.Array]


def padding_amounts(kernel_size: int, padding: str) -> tuple[int, int]:
    """(before, after) padding of one axis; lax's "SAME" puts an even kernel's extra after."""
    if padding.upper() == "SAME":
        total = kernel_size - 1
        return total // 2, total - total // 2
    if padding.upper() == "VALID":
        return 0, 0
    raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")


def _pad(x_bhwc: jax.Array, kh: int, kw: int, padding: str) -> jax.Array:
    pads = (padding_amounts(kh, padding), padding_amounts(kw, padding))
    return jnp.pad(x_bhwc, ((0, 0), *pads, (0, 0)))


def _windows(xp_bhwc: jax.Array, kh: int, kw: int) -> Iterator[Window]:
    """(i, j, window) for each offset: the padded input shifted by (i, j), as (B*H'*W', C)."""
    out_h, out_w = xp_bhwc.shape[1] - kh + 1, xp_bhwc.shape[2] - kw + 1
    for i in range(kh):
        for j in range(kw):
            window = xp_bhwc[:, i:i + out_h, j:j + out_w, :]
            yield i, j, window.reshape(-1, xp_bhwc.shape[-1])


def _matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    # float32 accumulation across the kh*kw terms, also for bfloat16 inputs.
    return jnp.matmul(a, b, preferred_element_type=jnp.float32)


def _forward(x_bhwc: jax.Array, kernel_hwio: jax.Array, padding: str) -> jax.Array:
    kh, kw, _, out_ch = kernel_hwio.shape
    xp = _pad(x_bhwc, kh, kw, padding)
    y = sum(_matmul(window, kernel_hwio[i, j]) for i, j, window in _windows(xp, kh, kw))
    out_shape = (x_bhwc.shape[0], xp.shape[1] - kh + 1, xp.shape[2] - kw + 1, out_ch)
    return y.reshape(out_shape).astype(x_bhwc.dtype)


def _dkernel_per_offset(xp: jax.Array, dy: jax.Array, kh: int, kw: int) -> jax.Array:
    """dkernel[i, j] = window_ij^T @ dy, one (Cin, Cout) product per offset."""
    return jnp.stack([_matmul(window.T, dy) for _, _, window in _windows(xp, kh, kw)])


def _dkernel_concat(xp: jax.Array, dy: jax.Array, kh: int, kw: int) -> jax.Array:
    """The same as one product over the concatenated windows (im2col's dkernel)."""
    patches = jnp.concatenate([window for _, _, window in _windows(xp, kh, kw)], axis=1)
    return _matmul(patches.T, dy)


def _dx_scatter(dy_bhwc: jax.Array, kernel_hwio: jax.Array,
                padded_shape: tuple[int, ...]) -> jax.Array:
    """sum_ij dy @ kernel[i, j]^T, each term added where window_ij came from (padded)."""
    b, out_h, out_w, out_ch = dy_bhwc.shape
    kh, kw, in_ch, _ = kernel_hwio.shape
    dy = dy_bhwc.reshape(-1, out_ch)
    dxp = jnp.zeros(padded_shape, jnp.float32)
    for i in range(kh):
        for j in range(kw):
            term = _matmul(dy, kernel_hwio[i, j].T).reshape(b, out_h, out_w, in_ch)
            dxp = dxp.at[:, i:i + out_h, j:j + out_w, :].add(term)
    return dxp


def _dx_gather(dy_bhwc: jax.Array, kernel_hwio: jax.Array,
               padded_shape: tuple[int, ...]) -> jax.Array:
    """The same gradient (w.r.t. the padded input) read the other way: a shifted conv of dy,
    padded by (kh-1, kw-1) all round, with the kernel flipped and transposed."""
    kh, kw = kernel_hwio.shape[:2]
    dyp = jnp.pad(dy_bhwc, ((0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0)))
    flipped = jnp.flip(kernel_hwio, (0, 1)).transpose(0, 1, 3, 2)
    return sum(_matmul(window, flipped[i, j]) for i, j, window in _windows(dyp, kh, kw)
               ).reshape(padded_shape)


DKERNEL = {"per_offset": _dkernel_per_offset, "concat": _dkernel_concat}
DX = {"scatter": _dx_scatter, "gather": _dx_gather}


def make_conv_shifted(dkernel: str = "per_offset", dx: str = "scatter") -> Callable:
    """`conv(x_bhwc, kernel_hwio, padding)`: the shifted-sum conv with the backward built from
    `DKERNEL[dkernel]` and `DX[dx]` (alternatives kept to re-measure: benchmarks/)."""
    dkernel_fn, dx_fn = DKERNEL[dkernel], DX[dx]

    @partial(jax.custom_vjp, nondiff_argnums=(2,))
    def conv(x_bhwc: jax.Array, kernel_hwio: jax.Array, padding: str = "SAME") -> jax.Array:
        return _forward(x_bhwc, kernel_hwio, padding)

    def conv_fwd(x_bhwc, kernel_hwio, padding):
        return _forward(x_bhwc, kernel_hwio, padding), (x_bhwc, kernel_hwio)

    def conv_bwd(padding, residuals, dy_bhwc):
        x_bhwc, kernel_hwio = residuals
        kh, kw, _, out_ch = kernel_hwio.shape
        xp = _pad(x_bhwc, kh, kw, padding)
        dk = dkernel_fn(xp, dy_bhwc.reshape(-1, out_ch), kh, kw).reshape(kernel_hwio.shape)
        dxp = dx_fn(dy_bhwc, kernel_hwio, xp.shape)
        top, left = padding_amounts(kh, padding)[0], padding_amounts(kw, padding)[0]
        dx = dxp[:, top:top + x_bhwc.shape[1], left:left + x_bhwc.shape[2], :]
        return dx.astype(x_bhwc.dtype), dk.astype(kernel_hwio.dtype)

    conv.defvjp(conv_fwd, conv_bwd)
    return conv


# `lax.conv_general_dilated(x, kernel, (1, 1), padding)` in NHWC/HWIO, without bias.
conv_shifted = make_conv_shifted()
