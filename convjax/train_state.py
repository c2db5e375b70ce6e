"""The train state: every array that changes during a run, as one pytree.

Pure. Unlike `flax.training.train_state.TrainState`, this holds no functions (no `apply_fn`,
no `tx`): the model and optimizer are bound into the steps by `steps.make_steps`, so the
state is plain data that Orbax saves and restores as is, and that jit never re-traces. The
learning rate and its `lr_scale` live in `opt_state` (see `optim.py`), nowhere else.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

PyTree = Any


@struct.dataclass
class TrainState:
    step: jax.Array  # int32 number of optimizer updates applied so far
    params: PyTree  # trainable parameters ("params" collection)
    batch_stats: PyTree  # BatchNorm running statistics ({} when the model has none)
    opt_state: optax.OptState  # includes the injected learning rate
    rng: jax.Array  # base key; each step folds in the step number
    ema_params: PyTree  # exponential moving average of params, or None when disabled


def init_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    key: jax.Array,
    input_shape: tuple[int, ...],
    ema: bool = False,
) -> TrainState:
    """Initialises parameters from `key` for inputs of `input_shape` (without batch axis)."""
    init_key, state_key = jax.random.split(key)
    dummy = jnp.zeros((1, *input_shape), jnp.float32)
    variables = model.init(init_key, dummy, train=False)
    return state_from_variables(variables, tx, state_key, ema)


def state_from_variables(
    variables: dict, tx: optax.GradientTransformation, key: jax.Array, ema: bool = False
) -> TrainState:
    """A fresh train state around given variables (e.g. a pretrained backbone + new head).

    The state gets its own copies: the loop donates the state's buffers to each step, which
    would otherwise delete the caller's arrays (e.g. the pretrained weights they still hold).
    """
    params = jax.tree.map(jnp.copy, variables["params"])
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=jax.tree.map(jnp.copy, variables.get("batch_stats", {})),
        opt_state=tx.init(params),
        rng=key,
        ema_params=jax.tree.map(jnp.copy, params) if ema else None,
    )


def eval_params(state: TrainState, use_ema: bool) -> PyTree:
    """The parameters to evaluate with: the EMA when asked for and kept, else the raw ones."""
    if use_ema and state.ema_params is not None:
        return state.ema_params
    return state.params
