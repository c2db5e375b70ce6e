"""The experiment configuration: its sections composed into one `Config`, command-line
overrides (`--set a.b=value`), validation, and plain-dict I/O for the runner.

Pure: no I/O. Each section is a frozen dataclass beside what reads it (`ModelConfig` with the
model, `DataConfig` with the data, `AugmentConfig` with augmentation, `CallbacksConfig` with
the callbacks, `OptimConfig` with the optimizer, `DistConfig` with convjax.dist); `TrainConfig`
lives here. Every section checks its fields when built (types, `Literal` choices, ranges),
so an invalid config cannot exist, the errors come before any data is read, and each names its
full dotted key and the valid values.
The sections never import this module; it re-exports them.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, NamedTuple, TypeVar

from convjax.augment.config import AugmentConfig
from convjax.callbacks_config import CallbacksConfig
from convjax.class_weights import parse_class_weight
from convjax.config_fields import (
    ConfigError,
    check_fields,
    coerce,
    field_comments,
    field_types,
    join_key,
    parse_text,
    require,
)
from convjax.data.config import DataConfig
from convjax.dist import DistConfig
from convjax.models.cnn import ModelConfig
from convjax.optim import OptimConfig

__all__ = [
    "AugmentConfig", "CallbacksConfig", "Config", "ConfigError", "DataConfig", "DistConfig", "Leaf",
    "ModelConfig", "OptimConfig", "TrainConfig", "apply_overrides", "config_diff",
    "config_from_dict", "config_to_dict", "leaves", "validate",
]

@dataclass(frozen=True)
class TrainConfig:
    """How long and how the training loop runs."""

    config_key: ClassVar[str] = "train"
    seed: int = 0  # one seed for init, data order, dropout and augmentation
    epochs: int = 15  # passes over the training split
    batch_size: int = 128  # global batch (split over devices)
    eval_batch_size: int = 500  # batch for validation and test (no gradients: can be larger)
    ema_momentum: float = 0.0  # >0 keeps an EMA of the params in the state (Keras uses 0.99)
    verbose: Literal[0, 1, 2] = 1  # 0 silent, 1 progress bar, 2 one line per epoch (Keras fit)
    # ~1 step/s for the course CNN at batch 128 on 2 CPU cores: a backup every few minutes.
    backup_every_steps: int = 200  # also back up the run every N steps; 0 = at epoch ends only
    compilation_cache: bool = True  # persistent JAX compilation cache in $CONVJAX_CACHE/jax
    # Keras fit(class_weight=...); "balanced" is n / (k * count_c) from the training labels,
    # a mapping gives class index: weight (others 1.0). Weights the training loss only.
    class_weight: str = ""  # "" none, "balanced", or "{0: 1.0, 1: 2.0}"
    top_k: int = 5  # also report top-k accuracy at evaluation if there are > k classes; 0 = off

    def __post_init__(self) -> None:
        check_fields(self)
        require(self.seed >= 0, self, "seed", ">= 0")
        require(self.epochs >= 1, self, "epochs", ">= 1")
        require(self.batch_size >= 1, self, "batch_size", ">= 1")
        require(self.eval_batch_size >= 1, self, "eval_batch_size", ">= 1")
        require(0 <= self.ema_momentum < 1, self, "ema_momentum", "in [0, 1) (0: no EMA)")
        require(self.backup_every_steps >= 0, self, "backup_every_steps", ">= 0")
        require(self.top_k >= 0, self, "top_k", ">= 0 (0: off)")
        try:
            parse_class_weight(self.class_weight)
        except ValueError as err:
            raise ConfigError("train.class_weight", str(err)) from None


@dataclass(frozen=True)
class Config:
    """A whole experiment. Each field is a section; `--set section.key=value` overrides."""

    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    callbacks: CallbacksConfig = field(default_factory=CallbacksConfig)
    dist: DistConfig = field(default_factory=DistConfig)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.callbacks.ema.enabled and self.train.ema_momentum <= 0:
            raise ConfigError("callbacks.ema.enabled", "needs train.ema_momentum > 0 (the "
                              "EMA that SwapEMAWeights swaps in is kept by the train step)")


C = TypeVar("C")


def _unknown(key: str, here: str, known: list[str]) -> ConfigError:
    name = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {join_key(here, close[0])!r}? " if close else ""
    valid = ", ".join(join_key(here, k) for k in known)
    return ConfigError(key, f"unknown config key {key!r}; {hint}valid keys here: {valid}",
                       named=True)


def _leaf_type(cls: type, key: str) -> Any:
    """The declared type of the field at dotted `key` (a leaf, not a section)."""
    node, here = cls, ""
    for part in key.split("."):
        if not dataclasses.is_dataclass(node):
            raise ConfigError(key, f"unknown config key: {here!r} has no sub-keys")
        known = field_types(node)
        if part not in known:
            raise _unknown(key, here, list(known))
        node, here = known[part], join_key(here, part)
    if dataclasses.is_dataclass(node):
        raise ConfigError(key, f"is a section; set one of its fields: "
                               f"{', '.join(join_key(key, k) for k in field_types(node))}")
    return node


def apply_overrides(cfg: C, assignments: list[str]) -> C:
    """`cfg` with `["train.epochs=3", ...]` applied in order, then built and checked once
    (so fields that must agree, like optim.boundaries and optim.scales, can be set apart)."""
    tree = config_to_dict(cfg)
    for item in assignments:
        path, sep, text = item.partition("=")
        key = path.strip()
        if not sep or not key:
            raise ConfigError("--set", f"expects key=value, got {item!r}")
        value = parse_text(text.strip(), _leaf_type(type(cfg), key), key)
        *parents, name = key.split(".")
        node = tree
        for part in parents:
            node = node[part]
        node[name] = value
    return config_from_dict(tree, type(cfg))


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict of the config (tuples stay tuples; JSON turns them into lists)."""
    return dataclasses.asdict(cfg)


def config_from_dict(tree: dict[str, Any], cls: type[C] = Config, _prefix: str = "") -> C:
    """The config from a nested dict (e.g. JSON). Strict: an unknown key is an error naming
    it; values are checked against the field types (lists become tuples). A missing key takes
    its default, so a stored config still loads after a field was added."""
    if not isinstance(tree, dict):
        raise ConfigError(_prefix or "config", f"expected a mapping, got {tree!r}")
    known = field_types(cls)
    for name in tree:
        if name not in known:
            raise _unknown(join_key(_prefix, name), _prefix, list(known))
    kwargs = {}
    for name, value in tree.items():
        key, typ = join_key(_prefix, name), known[name]
        if dataclasses.is_dataclass(typ):
            kwargs[name] = config_from_dict(value, typ, key)
        else:
            kwargs[name] = coerce(value, typ, key)
    return cls(**kwargs)


def validate(cfg: Config) -> Config:
    """Checks the whole config again, as the runner would load it back from JSON; returns it.
    Sections check themselves when built, so this catches what bypassed that (a field set
    with object.__setattr__, a value JSON cannot hold)."""
    return config_from_dict(config_to_dict(cfg), type(cfg))


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in tree.items():
        key = join_key(prefix, name)
        flat.update(_flatten(value, key) if isinstance(value, dict) else {key: value})
    return flat


def config_diff(a: Any, b: Any) -> list[str]:
    """The leaves that differ, as `["train.epochs: 8 -> 10"]`, in declaration order."""
    flat_a, flat_b = _flatten(config_to_dict(a)), _flatten(config_to_dict(b))
    keys = list(flat_a) + [k for k in flat_b if k not in flat_a]
    missing = "<absent>"
    return [f"{k}: {flat_a.get(k, missing)!r} -> {flat_b.get(k, missing)!r}"
            for k in keys if flat_a.get(k, missing) != flat_b.get(k, missing)]


class Leaf(NamedTuple):
    """One settable key of a config, for `--help`."""

    key: str  # dotted, e.g. "train.epochs"
    type: Any  # the declared type (a Literal lists the choices)
    value: Any  # its value in the config described
    comment: str  # the field's trailing comment in the source
    section: Any  # the dataclass instance holding it


def leaves(cfg: Any, _prefix: str = "") -> list[Leaf]:
    """Every settable key of `cfg`, depth first, in declaration order."""
    found = []
    comments = field_comments(type(cfg))
    for name, typ in field_types(type(cfg)).items():
        key, value = join_key(_prefix, name), getattr(cfg, name)
        if dataclasses.is_dataclass(typ):
            found += leaves(value, key)
        else:
            found.append(Leaf(key, typ, value, comments.get(name, ""), cfg))
    return found
