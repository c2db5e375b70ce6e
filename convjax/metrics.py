"""Running metric sums: how step metrics add up over batches, devices and hosts.

Pure, except `sums_to_logs`, which reads the sums back to the host (the loop calls it).
A step returns sums and counts, never means, so adding them up is exact whatever the batch
split. `learning_rate` is the one non-summed entry: the rate the most recent update used, so
after an epoch it is the rate that epoch's last update trained with.

Evaluation sums may also hold `top_k_correct` and `confusion`, a (C, C) matrix of counts (row:
true class, column: predicted, padding excluded), which add up like the rest. Logs stay
scalars (loss, accuracy, top_k_accuracy); per-class accuracy and macro precision, recall and
F1 are derived from the matrix on the host (`confusion_report`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

SUM_KEYS = ("loss_sum", "correct", "count", "nonfinite")
Sums = dict[str, jax.Array]
Logs = dict[str, Any]


def zero_sums(num_classes: int = 0, top_k: int = 0) -> dict[str, np.ndarray]:
    """An epoch's sums before its first step (`learning_rate` NaN: no update yet), on the
    host: the loop places them explicitly (`sharding.place_replicated`). Evaluation sums add
    `top_k_correct` (top_k > 0) and the confusion matrix (num_classes > 0)."""
    sums = {k: np.zeros((), np.float32) for k in SUM_KEYS}
    if top_k:
        sums["top_k_correct"] = np.zeros((), np.float32)
    if num_classes:
        sums["confusion"] = np.zeros((num_classes, num_classes), np.float32)
    sums["learning_rate"] = np.full((), np.nan, np.float32)
    return sums


def accumulate(sums: Sums, metrics: dict[str, jax.Array]) -> Sums:
    """`sums` plus one step's (or one eval batch's) metrics; keys a step lacks stay, keys the
    sums lack are not kept."""
    out = {k: v + metrics[k].astype(jnp.float32) if k in metrics else v
           for k, v in sums.items() if k != "learning_rate"}
    out["learning_rate"] = metrics.get("learning_rate", sums["learning_rate"]).astype(jnp.float32)
    return out


def top_k_hits(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """1.0 where the label's logit is among the k largest: fewer than k logits exceed it
    (Keras's `in_top_k`: ties count as hits, a NaN at the label ranks last)."""
    at_label = jnp.take_along_axis(logits, labels[:, None], axis=-1)
    at_label = jnp.where(jnp.isnan(at_label), -jnp.inf, at_label)
    return (jnp.sum(logits > at_label, axis=-1) < k).astype(jnp.float32)


def confusion_counts(logits: jax.Array, labels: jax.Array, weights: jax.Array,
                     num_classes: int) -> jax.Array:
    """(C, C) counts of (true, predicted) pairs, each example counted with its weight (0 for
    padding): one small matrix product, so it sums over devices like the scalars."""
    true = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32) * weights[:, None]
    predicted = jax.nn.one_hot(jnp.argmax(logits, -1), num_classes, dtype=jnp.float32)
    return true.T @ predicted


def host_logs(host: dict[str, Any], prefix: str = "") -> Logs:
    """Keras-style logs from sums already on the host. An epoch that trained no batch has no
    loss or accuracy to report (Keras would never log 0.0 for it), so those keys are left out."""
    count = float(host["count"])
    if count == 0.0:
        return {}
    logs = {f"{prefix}loss": float(host["loss_sum"]) / count,
            f"{prefix}accuracy": float(host["correct"]) / count}
    if "top_k_correct" in host:
        logs[f"{prefix}top_k_accuracy"] = float(host["top_k_correct"]) / count
    return logs


def sums_to_logs(sums: Sums, prefix: str = "") -> Logs:
    """Device sums -> Keras logs (one host read)."""
    return host_logs(jax.device_get(sums), prefix)


# --- From the confusion matrix (host side, plain numbers for results.json) ----------------


def per_class_accuracy(confusion: np.ndarray) -> list[float | None]:
    """The fraction of each class's examples predicted right (its recall); None for a class
    with no example."""
    confusion = np.asarray(confusion, np.float64)
    totals = confusion.sum(axis=1)
    return [float(confusion[c, c] / t) if t else None for c, t in enumerate(totals)]


def macro_precision_recall_f1(confusion: np.ndarray) -> dict[str, float]:
    """Unweighted means over the classes that occur (as true or predicted labels) of
    precision tp/(tp+fp), recall tp/(tp+fn) and F1 2tp/(2tp+fp+fn), a ratio with a zero
    denominator counting 0: scikit-learn's average="macro" with zero_division=0."""
    confusion = np.asarray(confusion, np.float64)
    tp = np.diag(confusion)
    predicted, true = confusion.sum(axis=0), confusion.sum(axis=1)
    occurs = (predicted + true) > 0
    if not occurs.any():
        return {"macro_precision": 0.0, "macro_recall": 0.0, "macro_f1": 0.0}

    def ratio(num, den):
        return np.divide(num, den, out=np.zeros_like(num), where=den > 0)[occurs].mean()

    return {"macro_precision": float(ratio(tp, predicted)),
            "macro_recall": float(ratio(tp, true)),
            "macro_f1": float(ratio(2 * tp, predicted + true))}


def confusion_report(confusion: np.ndarray, prefix: str = "") -> dict[str, Any]:
    """The matrix as int lists, per-class accuracy and the macro scores, keys prefixed."""
    report = {"confusion_matrix": np.rint(confusion).astype(int).tolist(),
              "per_class_accuracy": per_class_accuracy(confusion),
              **macro_precision_recall_f1(confusion)}
    return {f"{prefix}{k}": v for k, v in report.items()}
