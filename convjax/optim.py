"""Optax optimizers and learning-rate schedules chosen by config.

Pure. The optimizer is wrapped in `optax.inject_hyperparams`, so its learning rate is an array
inside the optimizer state: the train step writes `schedule(step) * state.lr_scale` there each
step, and callbacks (ReduceLROnPlateau, LearningRateScheduler) change `lr_scale`, never the
compiled function.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import optax

from convjax.config import OptimConfig

Schedule = Callable[[jnp.ndarray], jnp.ndarray]


def make_schedule(cfg: OptimConfig, steps_per_epoch: int, total_steps: int) -> Schedule:
    """Learning rate as a function of the step. Epoch-valued knobs are converted to steps."""
    lr = cfg.learning_rate
    total_steps = max(total_steps, 1)
    if cfg.schedule == "constant":
        return optax.constant_schedule(lr)
    if cfg.schedule == "cosine":
        return optax.cosine_decay_schedule(lr, total_steps)
    if cfg.schedule == "warmup_cosine":
        warmup = min(int(cfg.warmup_epochs * steps_per_epoch), total_steps - 1)
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, total_steps)
    if cfg.schedule == "exponential":
        return optax.exponential_decay(lr, steps_per_epoch, cfg.decay_rate)
    if cfg.schedule == "piecewise":
        if len(cfg.boundaries) != len(cfg.scales):
            raise ValueError(
                f"optim.boundaries ({len(cfg.boundaries)}) and optim.scales "
                f"({len(cfg.scales)}) must have the same length"
            )
        steps = {int(b * steps_per_epoch): s for b, s in zip(cfg.boundaries, cfg.scales)}
        return optax.piecewise_constant_schedule(lr, steps)
    raise ValueError(
        f"unknown optim.schedule {cfg.schedule!r}; "
        "choose constant, cosine, warmup_cosine, piecewise or exponential"
    )


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
    """The base optimizer with an injectable `learning_rate` hyperparameter."""
    if cfg.name == "sgd":
        make = optax.inject_hyperparams(optax.sgd)
        return make(learning_rate=cfg.learning_rate, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.name == "adam":
        # Keras's Adam epsilon is 1e-7 (Optax's default 1e-8); keep Keras's for parity.
        return optax.inject_hyperparams(optax.adam)(learning_rate=cfg.learning_rate, eps=1e-7)
    if cfg.name == "adamw":
        make = optax.inject_hyperparams(optax.adamw)
        return make(learning_rate=cfg.learning_rate, eps=1e-7, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optim.name {cfg.name!r}; choose sgd, adam or adamw")


def is_injected(opt_state: optax.OptState) -> bool:
    """True for the state of an `inject_hyperparams` transform. Duck-typed: optax has two
    such classes (InjectHyperparamsState, InjectStatefulHyperparamsState), both NamedTuples
    with a `hyperparams` dict."""
    hyperparams = getattr(opt_state, "hyperparams", None)
    return isinstance(opt_state, tuple) and isinstance(hyperparams, dict)


def with_learning_rate(opt_state: optax.OptState, lr: jnp.ndarray) -> optax.OptState:
    """Returns `opt_state` (from `inject_hyperparams`) with its learning rate replaced.

    Works through `optax.multi_transform` (used for freezing) by updating every injected
    state that has a learning rate.
    """
    if is_injected(opt_state):
        hyper = dict(opt_state.hyperparams)
        if "learning_rate" in hyper:
            hyper["learning_rate"] = jnp.asarray(lr, hyper["learning_rate"].dtype)
        return opt_state._replace(hyperparams=hyper)
    if isinstance(opt_state, tuple):  # chains, and NamedTuples like MultiTransformState
        items = [with_learning_rate(s, lr) for s in opt_state]
        return type(opt_state)(*items) if hasattr(opt_state, "_fields") else tuple(items)
    if isinstance(opt_state, dict):
        return {k: with_learning_rate(v, lr) for k, v in opt_state.items()}
    return opt_state
