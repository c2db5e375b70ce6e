"""Where one course-CNN train step spends its time: XLA's cost analysis and each piece timed.

Command (repository root; `-m` so that `benchmarks` imports):

    JAX_PLATFORMS=cpu python -m benchmarks.profile_train_step [--conv-impl xla --reps 5]

Issue #14. Prints
1. this machine's practical matmul peak: a 4096x4096 float32 `jnp.dot`, in GFLOP/s;
2. the compiled train step (`bench_train_speed.convjax_program`, batch 128, Adam): XLA's
   `cost_analysis()` FLOPs and bytes, its measured time and GFLOP/s;
3. each piece of that step jitted on its own at the step's shapes: every conv's forward,
   kernel gradient and input gradient (the first conv's is not computed in training), bias +
   ReLU and the 2x2 max-pool (forward + backward), the dense layer's forward and backward;
   in ms, with GFLOP/s and % of the peak for the matrix products. Their sum against the whole
   step is what the rest costs (loss, Adam, boundaries between XLA's fusions).
For the fused HLO ops themselves, trace the loop instead (`tensorboard.profile_batch`).
Runtime: ~40 s on 2 busy cores. I/O (clocks, prints); what it times is pure.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp

from benchmarks.bench_conv_impls import BATCH, COURSE_CONVS, conv_candidates
from benchmarks.bench_train_speed import convjax_program
from convjax.models.layers import CONV_IMPLS, pool2x2


def time_ms(fn: Callable, reps: int) -> float:
    jax.block_until_ready(fn())  # compile and warm up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def matmul_peak_gflops(reps: int) -> float:
    a = jax.random.normal(jax.random.key(0), (4096, 4096))
    dot = jax.jit(jnp.dot)
    return 2 * 4096**3 / time_ms(lambda: dot(a, a), reps) / 1e6


def cost_analysis(conv_impl: str, pool_impl: str) -> dict:
    """XLA's count of the compiled step's FLOPs and bytes accessed."""
    train, state, sums, batch = convjax_program(conv_impl, pool_impl)
    cost = train.lower(state, sums, batch).compile().cost_analysis()
    return cost[0] if isinstance(cost, list) else cost  # a list in older jax


def whole_step(conv_impl: str, pool_impl: str, reps: int) -> tuple[dict, float]:
    """XLA's cost analysis of the compiled step, and its median ms. XLA counts nothing inside
    a custom call, so oneDNN's step is counted as the same step with XLA's conv."""
    train, state, sums, batch = convjax_program(conv_impl, pool_impl)
    compiled = train.lower(state, sums, batch).compile()
    cost = cost_analysis("xla" if conv_impl == "onednn" else conv_impl, pool_impl)
    holder = [state, sums]

    def step():
        holder[0], holder[1] = compiled(holder[0], holder[1], batch)
        return holder[1]

    return cost, time_ms(step, reps)


def jitted(f: Callable, *args, grad_of: int | None = None, output: bool = True) -> Callable:
    """A no-argument jitted call of f(*args); with `grad_of`, the gradient of f's outputs (all
    cotangents one) w.r.t. args[grad_of] instead, and with `output` f's outputs as well."""
    def run(*args):
        if grad_of is None:
            return f(*args)
        out, pullback = jax.vjp(f, *args)
        grad = pullback(jnp.ones_like(out))[grad_of]
        return (out, grad) if output else grad

    return functools.partial(jax.jit(run), *args)


def pieces(conv_impl: str, pool_impl: str) -> list[tuple[str, Callable, float, bool]]:
    """(name, no-argument call, FLOPs or 0, part of the train step?) for each piece."""
    conv = conv_candidates(variants=False)[conv_impl]
    relu = lambda y, b: jax.nn.relu(y + b)  # noqa: E731
    pool = lambda y: pool2x2(y, "max", pool_impl)  # noqa: E731
    rows = []
    for n, (size, cin, cout) in enumerate(COURSE_CONVS):
        x = jax.random.normal(jax.random.key(0), (BATCH, size, size, cin))
        k = jax.random.normal(jax.random.key(1), (3, 3, cin, cout)) * 0.1
        y = jax.random.normal(jax.random.key(2), (BATCH, size, size, cout))
        flops = 2 * BATCH * size * size * 9 * cin * cout
        label = f"conv{n} {size}x{size}x{cin}->{cout}"
        rows += [
            (f"{label} forward", jitted(conv, x, k), flops, True),
            (f"{label} dkernel", jitted(conv, x, k, grad_of=1, output=False), flops, True),
            (f"{label} dx", jitted(conv, x, k, grad_of=0, output=False), flops, n > 0),
            (f"{label} bias+relu f+b", jitted(relu, y, y[0, 0, 0], grad_of=0), 0, True),
        ]
        if n % 2:  # a pool closes each block of two convs
            rows.append((f"maxpool {size}x{size}x{cout} f+b", jitted(pool, y, grad_of=0), 0,
                         True))
    h = jax.random.normal(jax.random.key(0), (BATCH, 8 * 8 * 64))
    w = jax.random.normal(jax.random.key(1), (8 * 8 * 64, 512))
    flops = 2 * BATCH * 4096 * 512
    rows += [("dense 4096->512 forward", jitted(jnp.dot, h, w), flops, True),
             ("dense 4096->512 dkernel", jitted(jnp.dot, h, w, grad_of=1, output=False), flops,
              True),
             ("dense 4096->512 dx", jitted(jnp.dot, h, w, grad_of=0, output=False), flops, True)]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conv-impl", default="xla", choices=list(CONV_IMPLS))
    parser.add_argument("--pool-impl", default="reshape", choices=["xla", "reshape"])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    peak = matmul_peak_gflops(3)
    print(f"jax {jax.__version__}; 4096x4096 float32 jnp.dot: {peak:.0f} GFLOP/s (the peak)")
    cost, step_ms = whole_step(args.conv_impl, args.pool_impl, args.reps)
    flops, nbytes = cost.get("flops", 0.0), cost.get("bytes accessed", 0.0)
    print(f"train step ({args.conv_impl} conv, {args.pool_impl} pool, batch {BATCH}): "
          f"{step_ms:.1f} ms; XLA counts {flops / 1e9:.2f} GFLOP, {nbytes / 1e9:.2f} GB "
          f"accessed -> {flops / step_ms / 1e6:.0f} GFLOP/s ({flops / step_ms / 1e6 / peak:.0%}"
          " of the peak)")
    print(f"\n{'piece':<38}{'ms':>8}{'GFLOP/s':>9}{'of peak':>9}")
    total = 0.0
    for name, fn, flops, in_step in pieces(args.conv_impl, args.pool_impl):
        ms = time_ms(fn, args.reps)
        total += ms if in_step else 0.0
        rate = f"{flops / ms / 1e6:>9.0f}{flops / ms / 1e6 / peak:>9.0%}" if flops else ""
        print(f"{name + ('' if in_step else ' (not in step)'):<38}{ms:>8.1f}{rate}")
    print(f"{'sum of the pieces in the step':<38}{total:>8.1f}   vs the step's {step_ms:.1f} ms")


if __name__ == "__main__":
    main()
