"""Training throughput of the course CIFAR-10 CNN: convjax against Keras 3 and PyTorch.

Same model (Conv32-Conv32-MaxPool-Dropout-Conv64-Conv64-MaxPool-Dropout-Dense512-Dropout-
Dense10, 'same' padding), same batch (128 random 32x32x3 uint8 images, rescaled /255 inside
the step), same optimizer (Adam 1e-3), one process per framework so that backends and thread
pools do not interfere. Compilation and warm-up steps are excluded from the timings.

    python benchmarks/bench_train_speed.py            # all peers that are installed
    python benchmarks/bench_train_speed.py --steps 20 --only convjax,convjax-xla
    python benchmarks/bench_train_speed.py --steps 20 --runs 3     # median of 3 rounds
    python benchmarks/bench_train_speed.py --only convjax,convjax-shifted,pytorch  # issue #14

Peers are optional extras (`pip install -e .[bench]`): Keras 3 with the JAX backend, Keras 3
with the TensorFlow backend (needs tensorflow), PyTorch (eager). Missing ones are reported as
skipped. TensorFlow pins its own numpy/ml_dtypes, so it may live in a separate virtualenv:
`--tf-python /path/to/venv-tf/bin/python` runs the keras-tensorflow peer there (that venv
needs only `tensorflow-cpu keras`). Prints images/second for each and the ratio to convjax's
default configuration.

Host memory: by default every peer's process starts with glibc keeping freed memory
(`GLIBC_TUNABLES`, `convjax/host_memory.py`), which convjax's command line sets for itself and
which spares XLA:CPU a page fault per scratch page per step; `--host-memory default` runs all
peers with glibc's defaults. Both are in the README.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

BATCH, STEPS, WARMUP = 128, 30, 3


def _data(np):
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (BATCH, 32, 32, 3), dtype=np.uint8),
            rng.integers(0, 10, BATCH).astype(np.int32))


def _timed(step, steps: int, sync) -> float:
    for _ in range(WARMUP):
        sync(step())
    t0 = time.perf_counter()
    for _ in range(steps):
        out = step()
    sync(out)
    return BATCH * steps / (time.perf_counter() - t0)


def convjax_program(conv_impl: str = "auto", pool_impl: str = "auto", *,
                    model_overrides: dict | None = None, optim=None):
    """(train, state, sums, batch): the course CNN's jitted train step (the program `fit` runs,
    state donated) and its arguments. `model_overrides` (ModelConfig fields) and `optim` (an
    OptimConfig, default Adam 1e-3) vary it for other benchmarks."""
    import jax
    import numpy as np

    from convjax.config import ModelConfig, OptimConfig
    from convjax.metrics import zero_sums
    from convjax.models import CNN
    from convjax.optim import make_optimizer, make_schedule
    from convjax.steps import make_steps
    from convjax.train_state import init_train_state

    model = CNN(ModelConfig(conv_impl=conv_impl, pool_impl=pool_impl, num_classes=10,
                            **(model_overrides or {})))
    optim = optim or OptimConfig()
    tx = make_optimizer(optim, make_schedule(optim, 100, 100))
    state = init_train_state(model, tx, jax.random.key(0), (32, 32, 3))
    images, labels = _data(np)
    batch = {"image": jax.device_put(images), "label": jax.device_put(labels)}
    return make_steps(model=model, tx=tx).train, state, jax.device_put(zero_sums()), batch


def convjax_step(conv_impl: str = "auto", pool_impl: str = "auto", **variation):
    """A function whose every call runs one train step (returns the metric sums);
    `variation`: `convjax_program`'s keyword arguments."""
    train, state, sums, batch = convjax_program(conv_impl, pool_impl, **variation)
    holder = [state, sums]

    def step():
        holder[0], holder[1] = train(holder[0], holder[1], batch)
        return holder[1]

    return step


def run_convjax(steps: int, conv_impl: str, pool_impl: str) -> float:
    import jax

    return _timed(convjax_step(conv_impl, pool_impl), steps, jax.block_until_ready)


def _keras_model(keras):
    L = keras.layers
    return keras.Sequential([
        keras.Input((32, 32, 3)), L.Rescaling(1 / 255),
        L.Conv2D(32, 3, padding="same", activation="relu"),
        L.Conv2D(32, 3, padding="same", activation="relu"), L.MaxPooling2D(), L.Dropout(0.25),
        L.Conv2D(64, 3, padding="same", activation="relu"),
        L.Conv2D(64, 3, padding="same", activation="relu"), L.MaxPooling2D(), L.Dropout(0.25),
        L.Flatten(), L.Dense(512, activation="relu"), L.Dropout(0.5), L.Dense(10),
    ])


def run_keras(steps: int, backend: str) -> float:
    os.environ["KERAS_BACKEND"] = backend
    import keras
    import numpy as np

    model = _keras_model(keras)
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
    images, labels = _data(np)
    x, y = images.astype("float32"), labels
    return _timed(lambda: model.train_on_batch(x, y), steps, lambda _: None)


def run_torch(steps: int) -> float:
    import numpy as np
    import torch
    from torch import nn

    model = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Dropout(0.25),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Dropout(0.25),
        nn.Flatten(), nn.Linear(64 * 8 * 8, 512), nn.ReLU(), nn.Dropout(0.5), nn.Linear(512, 10),
    ).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    images, labels = _data(np)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(labels).long()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x.float() / 255), y)
        loss.backward()
        opt.step()
        return loss

    return _timed(step, steps, lambda loss: loss.item())


PEERS = {
    "convjax": lambda s: run_convjax(s, "auto", "auto"),  # the default: what auto picks here
    "convjax-xla": lambda s: run_convjax(s, "xla", "xla"),  # plain Flax layers
    "convjax-reshape-pool": lambda s: run_convjax(s, "xla", "reshape"),
    "convjax-im2col": lambda s: run_convjax(s, "im2col", "reshape"),  # patches @ kernel
    "convjax-shifted": lambda s: run_convjax(s, "shifted", "reshape"),  # no patch tensor
    "convjax-onednn": lambda s: run_convjax(s, "onednn", "reshape"),  # oneDNN via jax.ffi
    "keras-jax": lambda s: run_keras(s, "jax"),
    "keras-tensorflow": lambda s: run_keras(s, "tensorflow"),
    "pytorch": run_torch,
}


def _child(name: str, steps: int, python: str, env: dict) -> dict:
    proc = subprocess.run([python, __file__, "--child", name, "--steps", str(steps)],
                          capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        reason = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        return {"name": name, "skipped": reason[:100]}
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--runs", type=int, default=1,
                        help="rounds over all peers (interleaved); the table shows the median")
    parser.add_argument("--only", default=",".join(PEERS), help="comma-separated peer names")
    parser.add_argument("--tf-python", default=sys.executable,
                        help="interpreter for the keras-tensorflow peer (a venv with tensorflow)")
    parser.add_argument("--host-memory", choices=["keep", "default"], default="keep",
                        help="keep: every peer runs with glibc keeping freed memory, as "
                             "convjax's command line sets it (convjax/host_memory.py); "
                             "default: glibc's defaults for every peer")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps({"name": args.child, "images_per_s": PEERS[args.child](args.steps)}))
        return
    names = args.only.split(",")
    env = dict(os.environ)
    if args.host_memory == "keep":
        from convjax.host_memory import TUNABLES  # here: the TensorFlow venv lacks convjax

        env["GLIBC_TUNABLES"] = TUNABLES
    speeds: dict[str, list[float]] = {name: [] for name in names}
    skipped: dict[str, str] = {}
    for _ in range(args.runs):  # round after round, so a change of load hits every peer
        for name in names:
            python = args.tf_python if name == "keras-tensorflow" else sys.executable
            result = _child(name, args.steps, python, env)
            if "images_per_s" in result:
                speeds[name].append(result["images_per_s"])
            else:
                skipped[name] = result["skipped"]
    median = {name: statistics.median(v) for name, v in speeds.items() if v}
    print(f"\n{'framework':<22}{'images/s':>10}{'vs convjax':>12}{'vs pytorch':>12}   runs"
          f"   (batch {BATCH}, {args.steps} timed steps, median of {args.runs} run(s), "
          f"{os.cpu_count()} CPUs, host memory: {args.host_memory})")
    for name in names:
        if name not in median:
            print(f"{name:<22}{'skipped':>10}   {skipped.get(name, '')}")
            continue
        ratios = [f"{median[name] / median[ref]:.2f}x" if ref in median else "-"
                  for ref in ("convjax", "pytorch")]
        runs = ", ".join(f"{v:.0f}" for v in speeds[name])
        print(f"{name:<22}{median[name]:>10.0f}{ratios[0]:>12}{ratios[1]:>12}   {runs}")


if __name__ == "__main__":
    main()
