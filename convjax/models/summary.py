"""A Keras-style `model.summary()` for any Flax module.

Pure. Flax's own `Module.tabulate` prints inputs, outputs and a per-collection breakdown in a
rich table; the course's readers compare against Keras's three columns, so we print those.
Pooling and flatten are functions here, not modules, so (unlike Keras) they get no row; they
have no parameters, so the totals are the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


@dataclass(frozen=True)
class LayerRow:
    name: str  # submodule path, e.g. "conv0_0"
    kind: str  # module class, e.g. "Conv2D"
    output_shape: tuple  # without the batch axis, as Keras prints it
    params: int  # trainable parameters (the "params" collection)
    non_trainable: int  # other collections, e.g. BatchNorm moving mean/variance


def count_params(tree) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))


def _subtree(variables: dict, path: tuple[str, ...]) -> tuple[int, int]:
    trainable, other = 0, 0
    for collection, tree in variables.items():
        node = tree
        for key in path:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if collection == "params":
            trainable += count_params(node)
        else:
            other += count_params(node)
    return trainable, other


def layer_table(model: nn.Module, input_shape: tuple[int, ...]) -> list[LayerRow]:
    """One row per direct submodule, in call order. `input_shape` excludes the batch axis.

    Runs the model abstractly (`jax.eval_shape`, no FLOPs) and records each submodule call
    with `nn.intercept_methods`, Flax's public hook for observing module calls.
    """
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    calls: list[tuple[str, str, tuple]] = []

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module = context.module
        if context.method_name == "__call__" and len(module.path) == 1:
            calls.append((module.path[0], type(module).__name__, tuple(out.shape[1:])))
        return out

    def init_and_trace():
        with nn.intercept_methods(record):
            return model.init(jax.random.key(0), jnp.zeros(x.shape, x.dtype), train=False)

    variables = dict(jax.eval_shape(init_and_trace))
    rows = []
    for name, kind, shape in calls:
        trainable, other = _subtree(variables, (name,))
        rows.append(LayerRow(name, kind, shape, trainable, other))
    return rows


def summary(model: nn.Module, input_shape: tuple[int, ...]) -> str:
    """The text Keras prints: layer, output shape, parameter count, then totals."""
    rows = layer_table(model, input_shape)
    lines = [f"{'Layer (type)':<32}{'Output Shape':<24}{'Param #':>12}", "=" * 68]
    for r in rows:
        label = f"{r.name} ({r.kind})"
        lines.append(f"{label:<32}{str(r.output_shape):<24}{r.params + r.non_trainable:>12,}")
    trainable = sum(r.params for r in rows)
    other = sum(r.non_trainable for r in rows)
    lines += [
        "=" * 68,
        f"Total params: {trainable + other:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {other:,}",
    ]
    return "\n".join(lines)
