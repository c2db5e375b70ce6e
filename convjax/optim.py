"""Optax optimizers and learning-rate schedules chosen by config: the one home of the rate.

Pure. The optimizer owns the learning rate: its schedule is passed to
`optax.inject_hyperparams`, which evaluates it at the optimizer's own step count and keeps the
value it used in the optimizer state, and `scale_by_lr_scale` multiplies the update by an
`lr_scale` also kept in the optimizer state. Callbacks (ReduceLROnPlateau,
LearningRateScheduler) change `lr_scale` between steps, never the compiled function, and the
rate an update trained with is `schedule(step) * lr_scale`, read back from the state with
`optax.tree_utils` (`learning_rate`).
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


def make_optimizer(cfg: OptimConfig, schedule: Schedule) -> optax.GradientTransformation:
    """The base optimizer driven by `schedule`, then `scale_by_lr_scale`."""
    if cfg.name == "sgd":
        base = optax.inject_hyperparams(optax.sgd)(
            learning_rate=schedule, momentum=cfg.momentum, nesterov=cfg.nesterov)
    elif cfg.name == "adam":
        # Keras's Adam epsilon is 1e-7 (Optax's default 1e-8); keep Keras's for parity.
        base = optax.inject_hyperparams(optax.adam)(learning_rate=schedule, eps=1e-7)
    elif cfg.name == "adamw":
        base = optax.inject_hyperparams(optax.adamw)(
            learning_rate=schedule, eps=1e-7, weight_decay=cfg.weight_decay)
    else:
        raise ValueError(f"unknown optim.name {cfg.name!r}; choose sgd, adam or adamw")
    return optax.chain(base, scale_by_lr_scale())


def _is_array(path, value) -> bool:
    # inject_hyperparams keeps a schedule's own state under the same name ("learning_rate"):
    # only the array is the rate.
    del path
    return isinstance(value, jax.Array)


def learning_rate(opt_state: optax.OptState) -> jax.Array:
    """The rate the most recent update used: the schedule's value times `lr_scale` (before
    any update: the rate the first one will use). Works inside jit and through
    `optax.multi_transform` (freezing), as long as one rate is injected."""
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
