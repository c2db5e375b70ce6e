"""What the course CNN's train step spends outside the convolutions' own kernels.

Four programs in one process, timed A/B/A/B (`bench_conv_impls.alternate`; batch 128,
32x32x3): the step as `fit` runs it (Adam, dropout), the same without dropout, then with SGD
instead of Adam, then the gradient of the loss alone (no optimizer, no dropout, no metric
sums). Their differences are what dropout and Adam cost; the last one against the sum of the
layers timed one by one (`profile_train_step.py`) is what running the layers as one program
adds.

    JAX_PLATFORMS=cpu python -m benchmarks.bench_step_parts --rounds 4
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.bench_conv_impls import alternate, report
from benchmarks.bench_train_speed import _data, convjax_step
from convjax.config import ModelConfig, OptimConfig
from convjax.models import CNN

NO_DROPOUT = {"dropout": 0.0, "dense_dropout": 0.0}


def gradient_only() -> Callable:
    """One call = the gradient of the mean cross-entropy, nothing else."""
    model = CNN(ModelConfig(num_classes=10, **NO_DROPOUT))
    variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    images, labels = _data(np)
    images = jnp.asarray(images, jnp.float32) / 255

    def loss(v):
        logits = model.apply(v, images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    grad = jax.jit(jax.grad(loss))
    return lambda: grad(variables)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10, help="steps per round")
    args = parser.parse_args()
    programs = {
        "step (Adam, dropout)": convjax_step(),
        "no dropout": convjax_step(model_overrides=NO_DROPOUT),
        "no dropout, SGD": convjax_step(model_overrides=NO_DROPOUT,
                                        optim=OptimConfig(name="sgd")),
        "gradient only": gradient_only(),
    }
    report("ms per step (batch 128)", alternate(programs, args.rounds, args.steps))


if __name__ == "__main__":
    main()
