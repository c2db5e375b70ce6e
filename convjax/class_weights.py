"""Keras's `fit(class_weight=...)`: the `train.class_weight` text and the per-class weights
the train step looks each label up in.

Pure. `train.class_weight` is "" (no weighting), "balanced" (scikit-learn's formula, which
Keras users reach for: weight_c = n / (k * count_c) over the k classes present in the training
labels, so every class carries the same total weight) or a mapping "{0: 1.0, 1: 2.0}" of class
index to weight; classes a mapping leaves out weigh 1.0, as in Keras 3. The weights scale each
example's training loss (see `losses.classification_sums`); evaluation is never weighted
(Keras applies `class_weight` "during training only").
"""

from __future__ import annotations

import ast
import math
import numbers

import numpy as np

from convjax.config_fields import ConfigError

BALANCED = "balanced"
KEY = "train.class_weight"
_EXPECTED = "'' (none), 'balanced' or a mapping of class index to weight like '{0: 1.0, 1: 2.0}'"


def parse_class_weight(text: str) -> dict[int, float] | str | None:
    """None for "", "balanced" as is, a mapping as {int: float}; ValueError otherwise."""
    text = text.strip()
    if not text:
        return None
    if text == BALANCED:
        return BALANCED
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise ValueError(f"expected {_EXPECTED}, got {text!r}") from None
    if not isinstance(value, dict) or not value:
        raise ValueError(f"expected {_EXPECTED}, got {text!r}")
    for key, weight in value.items():
        if isinstance(key, bool) or not isinstance(key, int) or key < 0:
            raise ValueError(f"keys must be class indices (ints >= 0), got {key!r}")
        if (isinstance(weight, bool) or not isinstance(weight, numbers.Real)
                or not math.isfinite(weight) or weight < 0):
            raise ValueError(f"weights must be finite numbers >= 0, got {weight!r} for class "
                             f"{key}")
    return {int(k): float(w) for k, w in value.items()}


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> tuple[float, ...]:
    """n / (k * count_c) for the k classes present (scikit-learn's "balanced"); a class with
    no training example is never looked up and gets 1.0."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes)
    present = int(np.count_nonzero(counts))
    return tuple(float(len(labels) / (present * c)) if c else 1.0 for c in counts)


def class_weight_vector(text: str, labels: np.ndarray, num_classes: int
                        ) -> tuple[float, ...] | None:
    """The weight of each class 0..num_classes-1 (None: unweighted), from the config text and
    the training labels; a mapping naming a class the data lacks is an error."""
    try:
        spec = parse_class_weight(text)
    except ValueError as err:
        raise ConfigError(KEY, str(err)) from None
    if spec is None:
        return None
    if spec == BALANCED:
        return balanced_class_weights(labels, num_classes)
    unknown = sorted(k for k in spec if k >= num_classes)
    if unknown:
        raise ConfigError(KEY, f"class indices {unknown} are not classes of the data, which "
                               f"has {num_classes} (0 to {num_classes - 1})")
    return tuple(spec.get(c, 1.0) for c in range(num_classes))
