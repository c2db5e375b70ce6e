"""Typed experiment configuration: frozen dataclasses plus `--set a.b=value` overrides.

Pure: no I/O. An experiment is a function returning a `Config`; the command line may override
any field by its dotted path, and an unknown path is an error that lists the valid ones.
"""

from __future__ import annotations

import ast
import dataclasses
import typing
from dataclasses import dataclass, field

from convjax.augment import AugmentConfig


@dataclass(frozen=True)
class ModelConfig:
    conv_filters: tuple[int, ...] = (32, 64)  # filters of each conv block (one entry per block)
    convs_per_block: int = 2  # Conv+ReLU layers before each pooling
    kernel_size: int = 3  # square kernels, as in the course
    padding: str = "SAME"  # "SAME" keeps the spatial size, "VALID" shrinks it by kernel-1
    pool: str = "max"  # "max", "avg" or "none" (2x2, stride 2)
    batch_norm: bool = False  # BatchNorm after every conv (Keras epsilon 1e-3, momentum 0.99)
    dropout: float = 0.25  # after each conv block; 0 disables
    dense: tuple[int, ...] = (512,)  # hidden Dense layers of the head
    dense_dropout: float = 0.5  # after each hidden Dense layer
    num_classes: int = 10
    l2: float = 0.0  # Keras kernel_regularizer=l2(l2): adds l2 * sum(kernel**2) to the loss
    # Faster formulations on XLA:CPU that compute the same function (README, "Training speed").
    conv_impl: str = "xla"  # "xla" (lax.conv) or "im2col" (patches @ kernel)
    pool_impl: str = "xla"  # "xla" (reduce_window) or "reshape" (max over a 2x2 reshape)


@dataclass(frozen=True)
class OptimConfig:
    name: str = "adam"  # "sgd" (with momentum), "adam" or "adamw"
    learning_rate: float = 1e-3  # peak learning rate
    momentum: float = 0.9  # SGD only
    nesterov: bool = False  # SGD only
    weight_decay: float = 1e-4  # AdamW only (decoupled)
    schedule: str = "constant"  # constant, cosine, warmup_cosine, piecewise, exponential
    warmup_epochs: float = 1.0  # warmup_cosine only
    decay_rate: float = 0.9  # exponential: multiply the rate by this every epoch
    boundaries: tuple[float, ...] = ()  # piecewise: epochs at which the rate changes
    scales: tuple[float, ...] = ()  # piecewise: multiply the rate by these at the boundaries


@dataclass(frozen=True)
class DataConfig:
    source: str = "tfds"  # "tfds" (tensorflow-datasets) or "folder" (<root>/{train,test}/<class>)
    name: str = "cifar10"  # tfds dataset name (cifar10, cifar100)
    folder: str = ""  # image-folder root or .tar.gz archive; env CONVJAX_DATA overrides "tfds"
    tfds_dir: str = ""  # tfds data_dir; "" = tfds's default (~/tensorflow_datasets)
    image_size: tuple[int, int] = (32, 32)  # (height, width) images are resized to
    color_mode: str = "rgb"  # "rgb" or "grayscale"
    validation_split: float = 0.1  # fraction of the training split held out for validation
    train_limit: int = 0  # use only the first N training examples (0 = all); for quick runs
    test_limit: int = 0  # likewise for the test split
    cache_dir: str = ""  # decoded-image cache; "" = $CONVJAX_CACHE or ~/.cache/convjax


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0  # one seed for init, data order, dropout and augmentation
    epochs: int = 15
    batch_size: int = 128  # global batch (split over devices)
    eval_batch_size: int = 500
    ema_momentum: float = 0.0  # >0 keeps an EMA of the params in the state (Keras uses 0.99)
    verbose: int = 1  # 0 silent, 1 progress bar, 2 one line per epoch (as Keras fit)


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


def _field_types(cls: type) -> dict[str, typing.Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _parse(text: str, typ: typing.Any, path: str) -> typing.Any:
    """Parses a command-line value into the field's declared type."""
    if typ is str:
        return text
    if typ is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"--set {path}={text}: expected true/false")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as err:
        raise ValueError(f"--set {path}={text}: not a valid {typ}") from err
    if typ is float and isinstance(value, int):
        value = float(value)
    if typing.get_origin(typ) is tuple:
        value = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    return value


def override(cfg: typing.Any, path: str, text: str, _prefix: str = "") -> typing.Any:
    """Returns a copy of `cfg` with the dotted field `path` set from the string `text`."""
    head, _, rest = path.partition(".")
    full = _prefix + path
    types = _field_types(type(cfg))
    if head not in types:
        valid = ", ".join(_prefix + name for name in sorted(types))
        raise ValueError(f"unknown config key {full!r}; valid keys here: {valid}")
    child = getattr(cfg, head)
    if rest:
        if not dataclasses.is_dataclass(child):
            raise ValueError(f"unknown config key {full!r}: {head!r} has no sub-keys")
        return dataclasses.replace(cfg, **{head: override(child, rest, text, f"{_prefix}{head}.")})
    if dataclasses.is_dataclass(child):
        raise ValueError(f"config key {full!r} is a section; set one of its fields")
    return dataclasses.replace(cfg, **{head: _parse(text, types[head], full)})


def apply_overrides(cfg: Config, assignments: list[str]) -> Config:
    """Applies `["train.epochs=3", ...]` in order."""
    for item in assignments:
        path, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {item!r}")
        cfg = override(cfg, path.strip(), text.strip())
    return cfg
