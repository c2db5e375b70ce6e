"""The train and eval steps: pure functions of (state, batch), jitted once by the loop.

Pure. Configuration (model, optimizer, schedule, augmentation) is bound with
`functools.partial` by `make_train_step` / `make_eval_step`, never passed through the jitted
signature. Metrics come back as on-device sums and counts, so the loop can add them up
without reading them back every step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from convjax.augment import AugmentConfig, augment_batch
from convjax.models.cnn import l2_penalty
from convjax.optim import Schedule, with_learning_rate
from convjax.train_state import TrainState

Batch = dict[str, jax.Array]  # {"image": uint8 (B,H,W,C), "label": int32 (B,), "mask": opt.}
Metrics = dict[str, jax.Array]
Preprocess = Callable[[jax.Array], jax.Array]


def rescale(images: jax.Array) -> jax.Array:
    """The course's `rescale=1./255`: uint8 pixels to floats in [0, 1]."""
    return images.astype(jnp.float32) / 255.0


def classification_metrics(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> Metrics:
    """Sums (not means) so batches and devices can be added up exactly."""
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return {
        "loss_sum": jnp.sum(losses * weights),
        "correct": jnp.sum(correct * weights),
        "count": jnp.sum(weights),
    }


def _variables(params: Any, batch_stats: Any) -> dict:
    return {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}


def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves))


def train_step(
    state: TrainState,
    batch: Batch,
    *,
    model: nn.Module,
    tx: optax.GradientTransformation,
    schedule: Schedule,
    preprocess: Preprocess = rescale,
    augment: AugmentConfig | None = None,
    l2: float = 0.0,
    ema_momentum: float = 0.0,
) -> tuple[TrainState, Metrics]:
    """One optimizer update. A non-finite loss or gradient leaves the state unchanged and is
    counted in `metrics["nonfinite"]`, so TerminateOnNaN can stop with the last good state."""
    step_key = jax.random.fold_in(state.rng, state.step)
    augment_key, dropout_key = jax.random.split(step_key)
    images = batch["image"].astype(jnp.float32)
    if augment is not None and augment.enabled:
        images = augment_batch(augment, augment_key, images)
    images = preprocess(images)
    weights = jnp.ones(images.shape[0], jnp.float32)

    def loss_fn(params):
        logits, new_vars = model.apply(
            _variables(params, state.batch_stats), images, train=True,
            rngs={"dropout": dropout_key}, mutable=["batch_stats"],
        )
        metrics = classification_metrics(logits, batch["label"], weights)
        loss = metrics["loss_sum"] / metrics["count"]
        if l2:
            loss = loss + l2 * l2_penalty(params)
        return loss, (metrics, new_vars.get("batch_stats", {}))

    (loss, (metrics, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params
    )
    lr = schedule(state.step) * state.lr_scale
    opt_state = with_learning_rate(state.opt_state, lr)
    updates, opt_state = tx.update(grads, opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema_params
    if ema is not None:
        ema = optax.incremental_update(params, ema, step_size=1.0 - ema_momentum)
    new_state = state.replace(
        step=state.step + 1, params=params, batch_stats=batch_stats,
        opt_state=opt_state, ema_params=ema,
    )
    # Check the updates, not the gradients: frozen parameters' gradients are then unused, and
    # XLA drops their computation entirely (a frozen backbone costs only its forward pass).
    finite = jnp.isfinite(loss) & _all_finite(updates)
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    metrics["nonfinite"] = 1.0 - finite.astype(jnp.float32)
    return new_state, metrics


def eval_step(
    params: Any, batch_stats: Any, batch: Batch, *, model: nn.Module,
    preprocess: Preprocess = rescale,
) -> Metrics:
    """Loss/accuracy sums on one batch; `batch["mask"]` (0/1) excludes padding examples."""
    logits = model.apply(_variables(params, batch_stats), preprocess(batch["image"]), train=False)
    weights = batch.get("mask", jnp.ones(logits.shape[0], jnp.float32))
    return classification_metrics(logits, batch["label"], weights.astype(jnp.float32))


def predict_step(
    params: Any, batch_stats: Any, images: jax.Array, *, model: nn.Module,
    preprocess: Preprocess = rescale,
) -> jax.Array:
    """Class probabilities, as Keras `model.predict` returns from a softmax head."""
    logits = model.apply(_variables(params, batch_stats), preprocess(images), train=False)
    return jax.nn.softmax(logits)


def make_train_step(**bound: Any) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """`train_step` with its configuration bound (not jitted: the loop jits once)."""
    return functools.partial(train_step, **bound)


def make_eval_step(**bound: Any) -> Callable[[Any, Any, Batch], Metrics]:
    return functools.partial(eval_step, **bound)
