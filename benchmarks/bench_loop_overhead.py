"""Loop overhead of `fit`: one epoch of `fit` (progress bar on) against a bare Python loop.

Command (from the repository root; `-m` so that `experiments` imports; drop JAX_PLATFORMS to
use an accelerator):

    JAX_PLATFORMS=cpu python -m benchmarks.bench_loop_overhead [--rounds 5 --batch-size 16]

Project issue #10. The course CIFAR-10 CNN (experiments/cifar10_cnn.py) trains at a small batch,
where per-step costs outside the compiled step show most, on random uint8 32x32x3 images held
on the device (`DeviceArrays`). Peer (a) is `fit(verbose=1, epochs=1)` with no validation, its
tqdm bar sent to os.devnull; peer (b) calls the same `Steps.train` program on the same
`train_batches(0)` and waits once at the end. Both are compiled and warmed up first, and both
start each round from a fresh copy of the same initial state (fit copies it inside, so the bare
loop does too). Rounds alternate a, b, a, b, ...; the last line is the median over rounds of
(fit images/s / bare images/s). Target: >= 0.97. Runtime: about two minutes on 2 idle CPU
cores (nearly four with the cores busy).

This script is I/O (it reads clocks and prints); the steps it times are pure.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import statistics
import time

import jax
import numpy as np

from convjax.data.arrays import ArraySource
from convjax.data.device_batches import DeviceArrays
from convjax.loop import fit
from convjax.metrics import zero_sums
from convjax.models.cnn import resolved_impls
from convjax.sharding import make_mesh, place_replicated
from convjax.steps import Steps
from convjax.train import build
from convjax.train_state import TrainState
from experiments.cifar10_cnn import config


def fit_epoch(state: TrainState, data: DeviceArrays, steps: Steps, mesh) -> float:
    """Seconds for one `fit` epoch with the default progress bar (printed to os.devnull)."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):  # tqdm's stream
        start = time.perf_counter()
        trained, _ = fit(state, data, steps=steps, epochs=1, verbose=1, mesh=mesh)
        jax.block_until_ready(trained)  # fit already read the sums; this makes sure
        return time.perf_counter() - start


def bare_epoch(state: TrainState, data: DeviceArrays, steps: Steps, mesh) -> float:
    """Seconds for the same epoch as a plain loop: dispatch every step, wait once."""
    start = time.perf_counter()
    run_state = place_replicated(state, mesh)  # train donates its state: keep `state` intact
    sums = place_replicated(zero_sums(), mesh)
    for batch in data.train_batches(0):
        run_state, sums = steps.train(run_state, sums, batch)
    jax.block_until_ready((run_state, sums))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timings of each peer")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--images", type=int, default=2048, help="random training images")
    args = parser.parse_args()

    cfg = config()
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=1,
                                                             batch_size=args.batch_size))
    rng = np.random.default_rng(0)
    source = ArraySource(rng.integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8),
                         rng.integers(0, 10, args.images).astype(np.int32),
                         tuple(str(i) for i in range(10)))
    mesh = make_mesh()
    data = DeviceArrays(source, batch_size=args.batch_size, seed=cfg.train.seed, mesh=mesh)
    _, state, steps = build(cfg, source.image_shape, data.steps_per_epoch, 10)
    print(f"JAX {jax.__version__} on {jax.device_count()} {jax.devices()[0].platform} "
          f"device(s); {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    impls = resolved_impls(cfg.model)
    print(f"course CNN ({impls['conv_impl']}/{impls['pool_impl']}), batch "
          f"{args.batch_size}, {args.images} images = {data.steps_per_epoch} steps per round")

    # Compile (step, gather, tqdm import paths) and warm both peers up, outside the timings.
    fit_epoch(state, data, steps, mesh)
    bare_epoch(state, data, steps, mesh)

    images = data.steps_per_epoch * args.batch_size  # trained images: a partial batch is dropped
    fit_rates, bare_rates = [], []
    for _ in range(args.rounds):  # interleaved: each ratio compares timings seconds apart
        fit_rates.append(images / fit_epoch(state, data, steps, mesh))
        bare_rates.append(images / bare_epoch(state, data, steps, mesh))
    ratios = [f / b for f, b in zip(fit_rates, bare_rates)]

    print(f"\n{'round':>5}{'fit img/s':>12}{'bare img/s':>12}{'fit/bare':>10}")
    for i, (f, b, r) in enumerate(zip(fit_rates, bare_rates, ratios), 1):
        print(f"{i:>5}{f:12,.0f}{b:12,.0f}{r:10.3f}")
    print(f"{'med':>5}{statistics.median(fit_rates):12,.0f}"
          f"{statistics.median(bare_rates):12,.0f}{statistics.median(ratios):10.3f}"
          f"   (ratio range {min(ratios):.3f}-{max(ratios):.3f})")
    print(f"fit/bare ratio {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
