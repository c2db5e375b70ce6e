"""The loss and its parts: cross-entropy as sums, and the L2 penalty, the way Keras logs them.

Pure. Keras 3 logs `loss` = mean cross-entropy + the regularisation penalty (e.g. a Dense with
`kernel_regularizer=l2(1.0)` logs 4.99469 = 1.77661 + 3.21808), for training and for
`val_loss` alike, so callbacks monitoring `val_loss` compare the same numbers here as there.
Per batch Keras weights each batch's loss by its size, so the epoch's logged loss is
sum_b n_b * (mean_ce_b + penalty_b) / sum_b n_b; `classification_sums` returns the numerator
terms so that batches, devices and hosts add up exactly.

Sample (class) weights, as Keras applies them: each example's cross-entropy is multiplied by its
weight and the batch's sum still divided by the number of examples (Keras's default
"sum_over_batch_size" reduction), so the logged loss and the gradient are the weighted sum over
n. Accuracy stays unweighted: Keras weights only `compile(weighted_metrics=...)`, and the
course compiles `metrics=["accuracy"]`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

# Which kernels `l2_penalty` counts, told apart by rank: a Conv kernel is (kh, kw, cin, cout),
# a Dense kernel (in, out), whatever the layer's name.
L2_LAYERS = {"all": (2, 4), "conv": (4,), "dense": (2,)}


def l2_penalty(params: Any, layers: str = "all") -> jax.Array:
    """sum(kernel**2) over the parameters named "kernel" of the chosen `layers` ("all", "conv"
    or "dense"): Keras's kernel_regularizer=l2 on every layer, or only on those layers."""
    ranks = L2_LAYERS[layers]
    leaves = jax.tree_util.tree_leaves_with_path(params)
    kernels = [x for path, x in leaves
               if getattr(path[-1], "key", None) == "kernel" and x.ndim in ranks]
    return sum((jnp.sum(jnp.square(k.astype(jnp.float32))) for k in kernels),
               start=jnp.zeros((), jnp.float32))


def classification_sums(
    logits: jax.Array, labels: jax.Array, weights: jax.Array, penalty: jax.Array | float = 0.0,
    sample_weights: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """Per-batch sums: `loss_sum` (cross-entropy, times `sample_weights` if given, + penalty
    per example, as Keras logs it), `correct` and `count` (the `weights`: 0 for padding)."""
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    if sample_weights is not None:
        losses = losses * sample_weights.astype(jnp.float32)
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    count = jnp.sum(weights)
    return {
        "loss_sum": jnp.sum(losses * weights) + penalty * count,
        "correct": jnp.sum(correct * weights),
        "count": count,
    }
