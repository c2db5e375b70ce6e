"""Optax optimizers and learning-rate schedules chosen by config: the one home of the rate.

Pure. The optimizer owns the learning rate: its schedule is passed to
`optax.inject_hyperparams`, which evaluates it at the optimizer's own step count and keeps the
value it used in the optimizer state, and `scale_by_lr_scale` multiplies the update by an
`lr_scale` also kept in the optimizer state. Callbacks (ReduceLROnPlateau,
LearningRateScheduler) change `lr_scale` between steps, never the compiled function, and the
rate an update trained with is `schedule(step) * lr_scale`, read back from the state with
`optax.tree_utils` (`learning_rate`).

Keras's gradient knobs, with its semantics: `clipnorm` clips each weight's gradient to that L2
norm on its own, `global_clipnorm` all of them jointly (at most one of the two, as Keras
requires); `gradient_accumulation_steps` (optax.MultiSteps) updates every k batches with the
mean of their gradients, clipped after averaging, and the schedule keeps counting batches, as
Keras's does ("learning rate schedules look at the real iterations").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from convjax.config_fields import check_fields, require

Schedule = Callable[[jnp.ndarray], jnp.ndarray]
ScheduleName = Literal["constant", "cosine", "warmup_cosine", "piecewise", "exponential"]


@dataclass(frozen=True)
class OptimConfig:
    """The optimizer and its learning-rate schedule."""

    config_key: ClassVar[str] = "optim"
    name: Literal["sgd", "adam", "adamw"] = "adam"  # sgd has momentum; adamw decoupled decay
    learning_rate: float = 1e-3  # peak learning rate
    momentum: float = 0.9  # SGD only
    nesterov: bool = False  # SGD only
    weight_decay: float = 1e-4  # AdamW only (decoupled)
    schedule: ScheduleName = "constant"  # the rate as a function of the step
    warmup_epochs: float = 1.0  # warmup_cosine only
    decay_rate: float = 0.9  # exponential: multiply the rate by this every epoch
    boundaries: tuple[float, ...] = ()  # piecewise: epochs at which the rate changes
    scales: tuple[float, ...] = ()  # piecewise: multiply the rate by these at the boundaries
    clipnorm: float = 0.0  # Keras clipnorm: clip each weight's gradient to this L2 norm; 0 = off
    global_clipnorm: float = 0.0  # Keras global_clipnorm: clip all gradients jointly; 0 = off
    # A batch N times larger at the same memory; the schedule still counts batches (Keras).
    gradient_accumulation_steps: int = 1  # update every N batches with their mean gradient

    def __post_init__(self) -> None:
        check_fields(self)
        require(self.learning_rate > 0, self, "learning_rate", "> 0")
        require(0 <= self.momentum < 1, self, "momentum", "in [0, 1)")
        require(self.weight_decay >= 0, self, "weight_decay", ">= 0")
        require(self.warmup_epochs >= 0, self, "warmup_epochs", ">= 0")
        require(self.decay_rate > 0, self, "decay_rate", "> 0")
        require(list(self.boundaries) == sorted(self.boundaries) and min(
            self.boundaries, default=0) >= 0, self, "boundaries", "ascending epochs >= 0")
        require(len(self.scales) == len(self.boundaries), self, "scales",
                f"the same length as optim.boundaries ({len(self.boundaries)})")
        require(self.clipnorm >= 0, self, "clipnorm", ">= 0 (0: off)")
        require(self.global_clipnorm >= 0, self, "global_clipnorm", ">= 0 (0: off)")
        require(not (self.clipnorm and self.global_clipnorm), self, "clipnorm",
                "0 when optim.global_clipnorm is set (Keras allows only one of them)")
        require(self.gradient_accumulation_steps >= 1, self, "gradient_accumulation_steps",
                ">= 1 (1: no accumulation)")


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


class LrScaleState(NamedTuple):
    lr_scale: jax.Array  # float32 multiplier on the schedule's rate


def scale_by_lr_scale() -> optax.GradientTransformation:
    """Multiplies updates by `lr_scale` (1.0 until a callback changes it).

    Applied after the base optimizer, so it scales exactly what the learning rate scales
    (for SGD with momentum also the velocity, as changing optax's rate does)."""

    def init(params):
        del params
        return LrScaleState(jnp.ones((), jnp.float32))

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u: u * state.lr_scale.astype(u.dtype), updates), state

    return optax.GradientTransformation(init, update)


def clip_by_norm_per_leaf(max_norm: float) -> optax.GradientTransformation:
    """Keras's `clipnorm`: each leaf (weight) g becomes g * max_norm / max(|g|, max_norm).
    (`optax.clip` clips values, not norms; `clip_by_global_norm` takes one joint norm.)"""

    def clip(g: jax.Array) -> jax.Array:
        norm = jnp.sqrt(jnp.sum(jnp.square(g)))
        return g * (max_norm / jnp.maximum(norm, max_norm)).astype(g.dtype)

    return optax.stateless(lambda updates, params: jax.tree.map(clip, updates))


def _clipping(cfg: OptimConfig) -> list[optax.GradientTransformation]:
    if cfg.clipnorm:
        return [clip_by_norm_per_leaf(cfg.clipnorm)]
    if cfg.global_clipnorm:
        return [optax.clip_by_global_norm(cfg.global_clipnorm)]
    return []


def per_update(schedule: Schedule, every: int) -> Schedule:
    """`schedule`, a function of the batch, as a function of the update count when each
    update comes every `every` batches: update n uses the rate of its window's last batch,
    n*every + every - 1, the batch counter Keras's schedule reads when it updates."""
    return lambda count: schedule(count * every + every - 1)


def make_optimizer(cfg: OptimConfig, schedule: Schedule) -> optax.GradientTransformation:
    """Clipping (if any), the base optimizer driven by `schedule`, then `scale_by_lr_scale`;
    all inside `optax.MultiSteps` when gradients are accumulated."""
    every = cfg.gradient_accumulation_steps
    if every > 1:
        schedule = per_update(schedule, every)
    tx = optax.chain(*_clipping(cfg), _base_optimizer(cfg, schedule), scale_by_lr_scale())
    return optax.MultiSteps(tx, every).gradient_transformation() if every > 1 else tx


def _base_optimizer(cfg: OptimConfig, schedule: Schedule) -> optax.GradientTransformation:
    if cfg.name == "sgd":
        return optax.inject_hyperparams(optax.sgd)(
            learning_rate=schedule, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.name == "adam":
        # Keras's Adam epsilon is 1e-7 (Optax's default 1e-8); keep Keras's for parity.
        return optax.inject_hyperparams(optax.adam)(learning_rate=schedule, eps=1e-7)
    if cfg.name == "adamw":
        return optax.inject_hyperparams(optax.adamw)(
            learning_rate=schedule, eps=1e-7, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optim.name {cfg.name!r}; choose sgd, adam or adamw")


def _is_array(path, value) -> bool:
    # inject_hyperparams keeps a schedule's own state under the same name ("learning_rate"):
    # only the array is the rate.
    del path
    return isinstance(value, jax.Array)


def learning_rate(opt_state: optax.OptState) -> jax.Array:
    """The rate the most recent update used: the schedule's value times `lr_scale` (before
    any update: the rate the first one will use). Works inside jit and through
    `optax.multi_transform` (freezing) and `optax.MultiSteps` (accumulation: between updates
    it stays the last update's), as long as one rate is injected."""
    base = optax.tree_utils.tree_get(opt_state, "learning_rate", filtering=_is_array)
    if base is None:
        raise ValueError("the optimizer has no injected learning_rate: build it with "
                         "convjax.optim.make_optimizer (or optax.inject_hyperparams)")
    return base.astype(jnp.float32) * lr_scale(opt_state)


def lr_scale(opt_state: optax.OptState) -> jax.Array:
    scale = optax.tree_utils.tree_get(opt_state, "lr_scale")
    if scale is None:
        raise ValueError("the optimizer has no lr_scale: chain convjax.optim.scale_by_lr_scale() "
                         "after the base optimizer (make_optimizer does)")
    return scale


def with_lr_scale(opt_state: optax.OptState, value: jax.Array) -> optax.OptState:
    """`opt_state` with `lr_scale` replaced (placed like the old one)."""
    old = lr_scale(opt_state)
    new = jax.device_put(jnp.asarray(value, old.dtype), old.sharding)
    return optax.tree_utils.tree_set(opt_state, lr_scale=new)
