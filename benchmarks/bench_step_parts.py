"""What the course CNN's train step spends outside the convolutions' own kernels.

Four programs in one process, rounds interleaved, median over the rounds of the time per step
(batch 128, 32x32x3): the step as `fit` runs it (Adam, dropout), the same without dropout,
then with SGD instead of Adam, then the gradient of the loss alone (no optimizer, no dropout,
no metric sums). Their differences are what dropout and Adam cost; the last one against the
sum of the layers timed one by one (`profile_train_step.py`) is what running the layers as
one program adds.

    JAX_PLATFORMS=cpu python -m benchmarks.bench_step_parts --rounds 4
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from convjax.config import ModelConfig, OptimConfig
from convjax.metrics import zero_sums
from convjax.models import CNN
from convjax.optim import make_optimizer, make_schedule
from convjax.steps import make_steps
from convjax.train_state import init_train_state

NO_DROPOUT = {"dropout": 0.0, "dense_dropout": 0.0}


def _batch() -> dict:
    rng = np.random.default_rng(0)
    return {"image": jax.device_put(rng.integers(0, 256, (128, 32, 32, 3), dtype=np.uint8)),
            "label": jax.device_put(rng.integers(0, 10, 128).astype(np.int32))}


def train_step(batch: dict, model_kw: dict, optim: OptimConfig) -> Callable:
    """One call = one jitted train step of `make_steps` (state donated, as in `fit`)."""
    model = CNN(ModelConfig(num_classes=10, **model_kw))
    tx = make_optimizer(optim, make_schedule(optim, 100, 100))
    train = make_steps(model=model, tx=tx).train
    carry = [init_train_state(model, tx, jax.random.key(0), (32, 32, 3)),
             jax.device_put(zero_sums())]

    def step():
        carry[0], carry[1] = train(carry[0], carry[1], batch)
        return carry[1]

    return step


def gradient_only(batch: dict) -> Callable:
    """One call = the gradient of the mean cross-entropy, nothing else."""
    model = CNN(ModelConfig(num_classes=10, **NO_DROPOUT))
    variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    images = batch["image"].astype(jnp.float32) / 255

    def loss(v):
        logits = model.apply(v, images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

    grad = jax.jit(jax.grad(loss))
    return lambda: grad(variables)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10, help="steps per round")
    args = parser.parse_args()
    batch = _batch()
    programs = {
        "step (Adam, dropout)": train_step(batch, {}, OptimConfig()),
        "no dropout": train_step(batch, NO_DROPOUT, OptimConfig()),
        "no dropout, SGD": train_step(batch, NO_DROPOUT, OptimConfig(name="sgd")),
        "gradient only": gradient_only(batch),
    }
    for run in programs.values():  # compile and warm up
        for _ in range(3):
            jax.block_until_ready(run())
    times: dict[str, list[float]] = {name: [] for name in programs}
    for _ in range(args.rounds):
        for name, run in programs.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                out = run()
            jax.block_until_ready(out)
            times[name].append((time.perf_counter() - start) / args.steps * 1000)
    for name, values in times.items():
        rounds = ", ".join(f"{v:.0f}" for v in values)
        print(f"{name:<24}{statistics.median(values):7.1f} ms per step   ({rounds})")


if __name__ == "__main__":
    main()
