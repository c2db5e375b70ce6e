"""Running metric sums: how step metrics add up over batches, devices and hosts.

Pure, except `sums_to_logs`, which reads the sums back to the host (the loop calls it).
A step returns sums and counts, never means, so adding them up is exact whatever the batch
split. `learning_rate` is the one non-summed entry: the rate the most recent update used, so
after an epoch it is the rate that epoch's last update trained with.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

SUM_KEYS = ("loss_sum", "correct", "count", "nonfinite")
Sums = dict[str, jax.Array]
Logs = dict[str, Any]


def zero_sums() -> dict[str, np.ndarray]:
    """An epoch's sums before its first step (`learning_rate` NaN: no update yet), on the
    host: the loop places them explicitly (`sharding.place_replicated`)."""
    sums = {k: np.zeros((), np.float32) for k in SUM_KEYS}
    sums["learning_rate"] = np.full((), np.nan, np.float32)
    return sums


def accumulate(sums: Sums, metrics: dict[str, jax.Array]) -> Sums:
    """`sums` plus one step's (or one eval batch's) metrics; keys a step lacks stay."""
    out = {k: sums[k] + metrics[k].astype(jnp.float32) if k in metrics else sums[k]
           for k in SUM_KEYS}
    out["learning_rate"] = metrics.get("learning_rate", sums["learning_rate"]).astype(jnp.float32)
    return out


def host_logs(host: dict[str, Any], prefix: str = "") -> Logs:
    """Keras-style logs from sums already on the host. An epoch that trained no batch has no
    loss or accuracy to report (Keras would never log 0.0 for it), so those keys are left out."""
    count = float(host["count"])
    if count == 0.0:
        return {}
    return {f"{prefix}loss": float(host["loss_sum"]) / count,
            f"{prefix}accuracy": float(host["correct"]) / count}


def sums_to_logs(sums: Sums, prefix: str = "") -> Logs:
    """Device sums -> Keras logs (one host read)."""
    return host_logs(jax.device_get(sums), prefix)
