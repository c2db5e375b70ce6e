"""The train, eval and predict steps, and `make_steps`, the one place that jits them.

The step functions are pure functions of pytrees. `train_step(state, batch)`:

    key = fold_in(state.rng, state.step) -> augment -> normalise -> model.apply(train=True)
    -> loss (+ L2, logged as Keras logs it) -> Optax update (the optimizer owns the rate)
    -> EMA -> keep the old state if anything is non-finite

Metrics are sums and counts (`losses.classification_sums`) plus `nonfinite` and the
`learning_rate` the update used, so the loop adds them up exactly over batches and devices.
Class weights (Keras's `class_weight`) weight the training loss: each label looks its weight
up in `StepConfig.class_weights`. Evaluation adds top-k hits and the confusion matrix when the
configuration knows the number of classes (`metrics.py`).
`make_steps` binds the configuration (model, optimizer, normalisation, augmentation) with
`functools.partial`, never through the jitted signature, and returns a `Steps` holding the
three compiled programs; `fit`, `evaluate` and `predict` take it, so building it once means
compiling once, however many times they are called.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from convjax.augment import AugmentConfig, augment_batch
from convjax.losses import classification_sums, l2_penalty
from convjax.metrics import Sums, accumulate, confusion_counts, top_k_hits, zero_sums
from convjax.normalize import RESCALE, Normalization
from convjax.optim import learning_rate
from convjax.train_state import TrainState

Batch = dict[str, jax.Array]  # {"image": uint8 (B,H,W,C), "label": int32 (B,), "mask": opt.}
Metrics = dict[str, jax.Array]


@dataclass(frozen=True)
class StepConfig:
    """Everything the steps close over (hashable, so equal configs are interchangeable)."""

    model: nn.Module
    tx: optax.GradientTransformation
    normalization: Normalization = RESCALE
    augment: AugmentConfig | None = None
    l2: float = 0.0  # Keras kernel_regularizer=l2(l2) on the kernels of `l2_layers`
    l2_layers: str = "all"  # "all", "conv" or "dense" (losses.L2_LAYERS)
    ema_momentum: float = 0.0  # >0: state.ema_params tracks the params
    class_weights: tuple[float, ...] | None = None  # training loss weight of each class
    num_classes: int = 0  # >0: evaluation also counts the (C, C) confusion matrix
    top_k: int = 0  # >0: evaluation also counts top-k hits


def variables(params: Any, batch_stats: Any) -> dict:
    return {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}


def _inputs(cfg: StepConfig, key: jax.Array, images: jax.Array) -> jax.Array:
    """Training inputs: augmented pixels (train only), then the one normalisation."""
    if cfg.augment is not None and cfg.augment.enabled:
        images = augment_batch(cfg.augment, key, images.astype(jnp.float32))
    return cfg.normalization(images)


def _loss_and_grads(cfg: StepConfig, state: TrainState, inputs: jax.Array, labels: jax.Array,
                    dropout_key: jax.Array):
    """(loss, (sums, new batch_stats)), grads of the batch's mean loss + L2 penalty."""

    def loss_fn(params):
        logits, new_vars = cfg.model.apply(
            variables(params, state.batch_stats), inputs, train=True,
            rngs={"dropout": dropout_key}, mutable=["batch_stats"],
        )
        penalty = cfg.l2 * l2_penalty(params, cfg.l2_layers) if cfg.l2 else 0.0
        weights = jnp.ones(labels.shape[0], jnp.float32)
        sample_weights = (None if cfg.class_weights is None
                          else jnp.asarray(cfg.class_weights, jnp.float32)[labels])
        sums = classification_sums(logits, labels, weights, penalty, sample_weights)
        return sums["loss_sum"] / sums["count"], (sums, new_vars.get("batch_stats", {}))

    return jax.value_and_grad(loss_fn, has_aux=True)(state.params)


def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def _keep_if_finite(finite: jax.Array, new: TrainState, old: TrainState) -> TrainState:
    """The whole new state when `finite`, else the whole old one (params, optimizer state,
    batch stats, EMA, rng and step alike), so TerminateOnNaN stops on the last good state."""
    return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)


def train_step(cfg: StepConfig, state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    """One optimizer update; a non-finite loss or update leaves the state unchanged."""
    augment_key, dropout_key = jax.random.split(jax.random.fold_in(state.rng, state.step))
    inputs = _inputs(cfg, augment_key, batch["image"])
    (loss, (sums, batch_stats)), grads = _loss_and_grads(
        cfg, state, inputs, batch["label"], dropout_key)
    updates, opt_state = cfg.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema_params
    if ema is not None:
        ema = optax.incremental_update(params, ema, step_size=1.0 - cfg.ema_momentum)
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state, ema_params=ema)
    # Check the updates, not the gradients: frozen parameters' gradients are then unused, and
    # XLA drops their computation entirely (a frozen backbone costs only its forward pass).
    finite = jnp.isfinite(loss) & _all_finite(updates) & _all_finite(batch_stats)
    metrics = {**sums, "nonfinite": 1.0 - finite.astype(jnp.float32),
               "learning_rate": learning_rate(opt_state)}
    return _keep_if_finite(finite, new_state, state), metrics


def eval_step(cfg: StepConfig, params: Any, batch_stats: Any, batch: Batch) -> Metrics:
    """Loss/accuracy sums on one batch (and top-k hits and confusion counts when configured);
    `batch["mask"]` (0/1) excludes padding examples. The loss includes the L2 penalty, as
    Keras's `val_loss` does, and no class weight (Keras's are for training only)."""
    logits = cfg.model.apply(variables(params, batch_stats), cfg.normalization(batch["image"]),
                             train=False)
    labels = batch["label"]
    weights = batch.get("mask", jnp.ones(logits.shape[0], jnp.float32)).astype(jnp.float32)
    penalty = cfg.l2 * l2_penalty(params, cfg.l2_layers) if cfg.l2 else 0.0
    sums = classification_sums(logits, labels, weights, penalty)
    if cfg.top_k:
        sums["top_k_correct"] = jnp.sum(top_k_hits(logits, labels, cfg.top_k) * weights)
    if cfg.num_classes:
        sums["confusion"] = confusion_counts(logits, labels, weights, cfg.num_classes)
    return sums


def predict_step(cfg: StepConfig, params: Any, batch_stats: Any, images: jax.Array) -> jax.Array:
    """Class probabilities, as Keras `model.predict` returns from a softmax head."""
    logits = cfg.model.apply(variables(params, batch_stats), cfg.normalization(images),
                             train=False)
    return jax.nn.softmax(logits.astype(jnp.float32))


# --- The compiled programs ---------------------------------------------------------------


def _train_and_accumulate(cfg: StepConfig, state: TrainState, sums: Sums, batch: Batch):
    state, metrics = train_step(cfg, state, batch)
    return state, accumulate(sums, metrics)


def _eval_and_accumulate(cfg: StepConfig, params: Any, batch_stats: Any, sums: Sums,
                         batch: Batch) -> Sums:
    return accumulate(sums, eval_step(cfg, params, batch_stats, batch))


@dataclass(frozen=True)
class Steps:
    """The three jitted programs of one configuration (build with `make_steps`).

    train(state, sums, batch) -> (state, sums)   the state is donated; the sums are not,
                                                  so the loop can read them one step late
    eval(params, batch_stats, sums, batch) -> sums
    predict(params, batch_stats, images) -> probabilities
    """

    config: StepConfig
    train: Callable[[TrainState, Sums, Batch], tuple[TrainState, Sums]]
    eval: Callable[[Any, Any, Sums, Batch], Sums]
    predict: Callable[[Any, Any, jax.Array], jax.Array]

    def zero_eval_sums(self) -> dict:
        """Empty evaluation sums with the extra entries this configuration's `eval` fills."""
        return zero_sums(self.config.num_classes, self.config.top_k)


def make_steps(
    *,
    model: nn.Module,
    tx: optax.GradientTransformation,
    normalization: Normalization | None = None,
    augment: AugmentConfig | None = None,
    l2: float = 0.0,
    l2_layers: str = "all",
    ema_momentum: float = 0.0,
    class_weights: tuple[float, ...] | None = None,
    num_classes: int = 0,
    top_k: int = 0,
) -> Steps:
    """Binds the configuration and jits the steps once.

    `normalization` defaults to the course's rescale (1/255); `augment.rescale`, Keras's
    `ImageDataGenerator(rescale=...)`, sets it instead, for training *and* evaluation.
    With `num_classes`, evaluation counts the confusion matrix, and top-k hits when there are
    more than `top_k` classes (with fewer, every label is in the top k)."""
    normalization = _resolve_normalization(normalization, augment)
    if class_weights is not None and num_classes and len(class_weights) != num_classes:
        raise ValueError(f"{len(class_weights)} class weights for {num_classes} classes")
    cfg = StepConfig(model=model, tx=tx, normalization=normalization, augment=augment, l2=l2,
                     l2_layers=l2_layers, ema_momentum=ema_momentum,
                     class_weights=None if class_weights is None else tuple(class_weights),
                     num_classes=num_classes, top_k=top_k if num_classes > top_k else 0)
    return Steps(
        config=cfg,
        train=jax.jit(functools.partial(_train_and_accumulate, cfg), donate_argnums=(0,)),
        eval=jax.jit(functools.partial(_eval_and_accumulate, cfg)),
        predict=jax.jit(functools.partial(predict_step, cfg)),
    )


def _resolve_normalization(normalization: Normalization | None,
                           augment: AugmentConfig | None) -> Normalization:
    rescale = augment.rescale if augment is not None else None
    if rescale and normalization is not None and normalization != Normalization(rescale):
        raise ValueError(f"augment.rescale={rescale} conflicts with normalization="
                         f"{normalization}: set the normalisation in one place")
    if normalization is not None:
        return normalization
    return Normalization(rescale) if rescale else RESCALE
