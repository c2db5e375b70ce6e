"""Which examples a split or a sample holds: seeded rules on indices, the same for every source.

Pure (numpy only). `ArraySource` and `FolderSource` both take subsets by index
(`source.subset(indices)`), so a folder is split and sampled on its file list, before any
image is decoded, and picks exactly the examples its decoded arrays would.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

import numpy as np


class Subsettable(Protocol):
    def __len__(self) -> int: ...

    def subset(self, indices: np.ndarray): ...


S = TypeVar("S", bound=Subsettable)


def sample_indices(n: int, k: int, seed: int) -> np.ndarray | None:
    """`k` of `n` indices drawn without replacement with `seed`, sorted (the original order);
    None for all of them (k <= 0 or k >= n). Random, not the first k: folders are sorted by
    class."""
    if k <= 0 or k >= n:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, k, replace=False))


def sample(source: S, k: int, seed: int) -> S:
    """`k` examples of `source` (`sample_indices`), or `source` itself for all of them."""
    picked = sample_indices(len(source), k, seed)
    return source if picked is None else source.subset(picked)


def validation_indices(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out): `fraction` of `n` indices (at least one) held out, shuffled with
    `seed`; both sorted."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(fraction * n)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def split_validation(source: S, fraction: float, seed: int) -> tuple[S, S | None]:
    """Holds out `fraction` of the examples (shuffled with `seed`) for validation.

    Unlike Keras's `validation_split` in `fit` (which takes the *last* examples unshuffled),
    the split is random, so sorted-by-class sources still get every class in both halves.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation_split must be in [0, 1), got {fraction}")
    if fraction == 0.0:
        return source, None
    kept, held_out = validation_indices(len(source), fraction, seed)
    return source.subset(kept), source.subset(held_out)
