"""Conv formulations and a fused activation on XLA:CPU, timed A/B/A/B in one process.

Command (repository root; `-m` so that `benchmarks` imports):

    JAX_PLATFORMS=cpu python -m benchmarks.bench_conv_impls [--parts layers,act,step] [--rounds 6]

Issue #14 (course CNN, batch 128, 32x32x3, Adam). Each part compiles and warms up its
candidates, then times them in alternating order, round after round, so that a busy machine
slows them alike; it prints each candidate's median milliseconds and the median over rounds of
(candidate time / first candidate's time):

- layers: forward + both gradients (`jax.vjp`) of the course CNN's four 3x3 convs, for
  "xla", "im2col" and the shifted-sum conv with each of its backward variants
  (`shifted_conv.DKERNEL` x `DX`);
- act: bias + ReLU (+ 2x2 max-pool) forward and backward, as autodiff derives it against a
  `custom_vjp` that saves a boolean mask instead of the activations (candidate only, not in
  the library: see the result in the README);
- step: the whole train step (`bench_train_speed.convjax_step`) per `conv_impl`/`pool_impl`.

oneDNN's conv (`models/onednn_conv.py`) joins layers and step where it builds. Each conv's
forward and gradients on their own: `benchmarks/profile_train_step.py --conv-impl onednn`.

Runtime on 2 cores shared with another job: layers ~90 s (--rounds 3), act ~10 s, step
~60 s. I/O (clocks, prints); what it times is pure.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp

from benchmarks.bench_train_speed import convjax_step
from convjax.models import onednn_conv
from convjax.models.layers import extract_patches
from convjax.models.shifted_conv import DKERNEL, DX, conv_shifted, make_conv_shifted

BATCH = 128
# (height = width, input channels, output channels) of the course CNN's convs.
COURSE_CONVS = ((32, 3, 32), (32, 32, 32), (16, 32, 64), (16, 64, 64))


def alternate(candidates: dict[str, Callable], rounds: int, reps: int) -> dict[str, list]:
    """Milliseconds per call of each candidate, one entry per round, order reversed each round."""
    for fn in candidates.values():
        jax.block_until_ready(fn())  # compile and warm up
    times = {name: [] for name in candidates}
    for r in range(rounds):
        for name in list(candidates)[:: 1 if r % 2 == 0 else -1]:
            t0 = time.perf_counter()
            for _ in range(reps):
                out = candidates[name]()
            jax.block_until_ready(out)
            times[name].append((time.perf_counter() - t0) / reps * 1e3)
    return times


def forward_backward(f: Callable, args: tuple, dout: jax.Array) -> Callable:
    """A no-argument call returning f's output and its vjp with `dout`, jitted (returning the
    output too, as training uses it: else XLA drops what the gradients do not need)."""

    def run(dout, *args):
        out, pullback = jax.vjp(f, *args)
        return out, pullback(dout)

    run = jax.jit(run)
    return functools.partial(run, dout, *args)


def report(title: str, times: dict[str, list]) -> None:
    ref_name, ref = next(iter(times.items()))
    print(f"\n{title}\n{'candidate':<36}{'median ms':>10}   vs {ref_name}")
    for name, ms in times.items():
        ratio = statistics.median(m / r for m, r in zip(ms, ref))
        print(f"{name:<36}{statistics.median(ms):>10.1f}{ratio:>8.2f}x")


def conv_candidates(variants: bool = True) -> dict[str, Callable]:
    """conv(x, kernel) for each formulation, SAME padding, no bias; with `variants`, the
    shifted-sum conv once per backward variant, else only as `conv_impl="shifted"` runs it."""
    convs = {
        "im2col": lambda x, k: extract_patches(x, 3, "SAME") @ k.reshape(-1, k.shape[-1]),
        "xla": lambda x, k: jax.lax.conv_general_dilated(
            x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")),
    }
    if onednn_conv.available():
        convs["onednn"] = onednn_conv.conv_onednn
    if not variants:
        return {**convs, "shifted": conv_shifted}
    for dk in DKERNEL:
        for dx in DX:
            convs[f"shifted dk={dk} dx={dx}"] = make_conv_shifted(dk, dx)
    return convs


def part_layers(rounds: int) -> None:
    for size, cin, cout in COURSE_CONVS:
        x = jax.random.normal(jax.random.key(0), (BATCH, size, size, cin))
        k = jax.random.normal(jax.random.key(1), (3, 3, cin, cout)) * 0.1
        dy = jax.random.normal(jax.random.key(2), (BATCH, size, size, cout))
        runs = {name: forward_backward(conv, (x, k), dy)
                for name, conv in conv_candidates().items()}
        times = alternate(runs, rounds, 3)
        report(f"conv {size}x{size}x{cin} -> {cout}, forward + dx + dkernel", times)


@jax.custom_vjp
def bias_relu_masked(y, bias):
    return jnp.maximum(y + bias, 0)


def _bias_relu_fwd(y, bias):
    z = y + bias
    return jnp.maximum(z, 0), z > 0  # the residual: one byte per element, not four


def _bias_relu_bwd(positive, g):
    dz = jnp.where(positive, g, 0)
    return dz, dz.sum(axis=(0, 1, 2))


bias_relu_masked.defvjp(_bias_relu_fwd, _bias_relu_bwd)


def _pool_view(a):  # (B, H, W, C) -> (B, H/2, 2, W/2, 2, C)
    b, h, w, c = a.shape
    return a.reshape(b, h // 2, 2, w // 2, 2, c)


@jax.custom_vjp
def bias_relu_pool_masked(y, bias):
    return _pool_view(jnp.maximum(y + bias, 0)).max(axis=(2, 4))


def _bias_relu_pool_fwd(y, bias):
    a = _pool_view(jnp.maximum(y + bias, 0))
    pooled = a.max(axis=(2, 4))
    # Where the gradient goes: the window's max, if positive (a tie, unlikely with floats,
    # gets it twice where autodiff splits it).
    return pooled, (a == pooled[:, :, None, :, None, :]) & (a > 0)


def _bias_relu_pool_bwd(winners, g):
    dz = jnp.where(winners, g[:, :, None, :, None, :], 0).reshape(
        winners.shape[0], winners.shape[1] * 2, winners.shape[3] * 2, winners.shape[5])
    return dz, dz.sum(axis=(0, 1, 2))


bias_relu_pool_masked.defvjp(_bias_relu_pool_fwd, _bias_relu_pool_bwd)


def part_act(rounds: int) -> None:
    plain = {"relu": lambda y, b: jax.nn.relu(y + b),
             "relu+pool": lambda y, b: _pool_view(jax.nn.relu(y + b)).max(axis=(2, 4))}
    masked = {"relu": bias_relu_masked, "relu+pool": bias_relu_pool_masked}
    for size, _, ch in COURSE_CONVS[1::2]:
        y = jax.random.normal(jax.random.key(0), (BATCH, size, size, ch))
        b = jnp.zeros(ch)
        for op in plain:
            dout = jnp.ones_like(plain[op](y, b))
            runs = {"autodiff": forward_backward(plain[op], (y, b), dout),
                    "custom_vjp mask": forward_backward(masked[op], (y, b), dout)}
            times = alternate(runs, rounds, 20)
            report(f"bias+{op} on {size}x{size}x{ch}, forward + backward", times)


def part_step(rounds: int) -> None:
    impls = (("im2col", "reshape"), ("shifted", "reshape"), ("xla", "reshape"), ("xla", "xla"),
             ("onednn", "reshape"))
    steps = {f"conv {conv}, pool {pool}": convjax_step(conv, pool) for conv, pool in impls}
    report("course CNN train step, batch 128", alternate(steps, rounds, 3))


PARTS = {"layers": part_layers, "act": part_act, "step": part_step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated: " +
                        ", ".join(PARTS))
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}, batch {BATCH}")
    for part in args.parts.split(","):
        PARTS[part](args.rounds)


if __name__ == "__main__":
    main()
