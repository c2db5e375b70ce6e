"""The `callbacks` section of the experiment config: which Keras callbacks the runner adds.

Pure. Each subsection is a frozen dataclass with Keras's parameter names and defaults plus
`enabled`, checked when built (so a bad monitor or save_freq fails before any data is read);
`convjax.callbacks.from_config.make_callbacks` builds the enabled ones. This module sits
outside `convjax/callbacks/` because that package's `__init__` imports every callback (Orbax,
tensorboardX): a config must load in a moment and import nothing that imports it back.
Not here: the progress bar (`train.verbose`), the backup (`train.backup_every_steps`) and
History, which the runner always adds.

EMA: the average itself is part of training (`train.ema_momentum` > 0 keeps it in the state;
Keras passes it as `optimizer(use_ema=True, ema_momentum=...)`); `callbacks.ema` only decides
how it is used (SwapEMAWeights), so enabling it needs `train.ema_momentum` > 0 (checked by
`convjax.config.Config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, ClassVar, Literal

from convjax.config_fields import ConfigError, check_fields, key_of, require

Mode = Literal["auto", "min", "max"]


def _check_monitor(section: Any) -> None:
    """With mode 'auto' the metric's name must say which way is better (e.g. "val_loss")."""
    if section.enabled and section.mode == "auto":
        # Imported here, when a section is built: importing the callbacks package loads
        # every callback, which a config must not need in order to load.
        from convjax.callbacks.monitor import metric_direction

        try:
            metric_direction(section.monitor)
        except ValueError as err:
            raise ConfigError(key_of(section, "monitor"), str(err)) from None


@dataclass(frozen=True)
class EarlyStoppingConfig:
    """Keras EarlyStopping: stop when `monitor` stops improving."""

    config_key: ClassVar[str] = "callbacks.early_stopping"
    enabled: bool = False  # add EarlyStopping to the run's callbacks
    monitor: str = "val_loss"  # a key of the epoch logs
    min_delta: float = 0.0  # smaller changes do not count as improvement
    patience: int = 0  # epochs without improvement before stopping
    verbose: int = 0  # 1 prints when it stops
    mode: Mode = "auto"  # auto: from the metric's name
    baseline: float | None = None  # stop unless the metric beats this within `patience`
    restore_best_weights: bool = False  # end with the best epoch's weights
    start_from_epoch: int = 0  # epochs to wait before watching

    def __post_init__(self) -> None:
        check_fields(self)
        require(self.patience >= 0, self, "patience", ">= 0")
        require(self.start_from_epoch >= 0, self, "start_from_epoch", ">= 0")
        _check_monitor(self)


@dataclass(frozen=True)
class ReduceLROnPlateauConfig:
    """Keras ReduceLROnPlateau: scale the learning rate down when `monitor` plateaus."""

    config_key: ClassVar[str] = "callbacks.reduce_lr"
    enabled: bool = False  # add ReduceLROnPlateau to the run's callbacks
    monitor: str = "val_loss"  # a key of the epoch logs
    factor: float = 0.1  # new rate = rate * factor
    patience: int = 10  # epochs without improvement before reducing
    verbose: int = 0  # 1 prints each reduction
    mode: Mode = "auto"  # auto: from the metric's name
    min_delta: float = 1e-4  # smaller changes do not count as improvement
    cooldown: int = 0  # epochs to wait after a reduction
    min_lr: float = 0.0  # never below this rate

    def __post_init__(self) -> None:
        check_fields(self)
        require(0 < self.factor < 1, self, "factor", "in (0, 1)")
        require(self.patience >= 0, self, "patience", ">= 0")
        require(self.cooldown >= 0, self, "cooldown", ">= 0")
        require(self.min_lr >= 0, self, "min_lr", ">= 0")
        _check_monitor(self)


@dataclass(frozen=True)
class ModelCheckpointConfig:
    """Keras ModelCheckpoint, saving Orbax checkpoints under <workdir>/checkpoints."""

    config_key: ClassVar[str] = "callbacks.checkpoint"
    enabled: bool = False  # add ModelCheckpoint to the run's callbacks
    filepath: str = "epoch{epoch:03d}"  # under <workdir>/checkpoints; {epoch}, {val_loss:.2f}..
    monitor: str = "val_loss"  # the metric that decides the best checkpoint
    verbose: int = 0  # 1 prints each save
    save_best_only: bool = False  # save only when `monitor` improves
    save_weights_only: bool = False  # params and batch stats only, not the optimizer state
    mode: Mode = "auto"  # auto: from the metric's name
    save_freq: Literal["epoch"] | int = "epoch"  # "epoch" or every N batches
    initial_value_threshold: float | None = None  # best value to beat at the start
    max_to_keep: int | None = None  # convjax: delete older ones (never the latest or best)

    def __post_init__(self) -> None:
        check_fields(self)
        path = PurePosixPath(self.filepath)
        # Kept inside the run; a bare number would look like the runner's final checkpoint.
        require(bool(self.filepath) and not path.is_absolute() and ".." not in path.parts
                and not self.filepath.isdigit(), self, "filepath",
                "a relative path inside <workdir>/checkpoints, not a bare number")
        require(self.save_freq == "epoch" or self.save_freq >= 1, self, "save_freq",
                "'epoch' or an int >= 1")
        require(self.max_to_keep is None or self.max_to_keep >= 1, self, "max_to_keep",
                "None or >= 1")
        _check_monitor(self)


@dataclass(frozen=True)
class TensorBoardConfig:
    """Keras TensorBoard, writing <workdir>/tensorboard/{train,validation} (profiler traces in
    train/plugins/profile, for the Profile tab; the runner adds test/, the test confusion
    matrix)."""

    config_key: ClassVar[str] = "callbacks.tensorboard"
    enabled: bool = True  # add TensorBoard to the run's callbacks
    histogram_freq: int = 0  # weight histograms every N epochs (0: never)
    write_graph: bool = True  # the model summary as text
    write_images: bool = False  # weights as images (with histogram_freq)
    write_steps_per_second: bool = False  # training speed as a scalar
    update_freq: Literal["epoch", "batch"] | int = "epoch"  # batch scalars every N batches
    profile_batch: int | tuple[int, int] = 0  # trace batch N or (start, stop), from 1; 0: off
    confusion_matrix: bool = True  # convjax: confusion matrix images (validation, test)

    def __post_init__(self) -> None:
        check_fields(self)
        require(self.histogram_freq >= 0, self, "histogram_freq", ">= 0")
        require(isinstance(self.update_freq, str) or self.update_freq >= 1, self,
                "update_freq", "'epoch', 'batch' or an int >= 1")
        start, stop = (self.profile_batch if isinstance(self.profile_batch, tuple)
                       else (self.profile_batch,) * 2)
        require((start, stop) == (0, 0) or 1 <= start <= stop, self, "profile_batch",
                "0 (off), a batch N >= 1 or (start, stop) with 1 <= start <= stop")


@dataclass(frozen=True)
class TerminateOnNaNConfig:
    """Keras TerminateOnNaN: stop when the loss is NaN or infinite."""

    config_key: ClassVar[str] = "callbacks.terminate_on_nan"
    enabled: bool = True  # add TerminateOnNaN to the run's callbacks
    raise_error: bool = False  # raise at once instead of stopping at the epoch's end
    check_every: int = 0  # convjax: also check every N batches (each a host sync); 0 = epochs

    def __post_init__(self) -> None:
        check_fields(self)
        require(self.check_every >= 0, self, "check_every", ">= 0")


@dataclass(frozen=True)
class SwapEMAWeightsConfig:
    """Keras SwapEMAWeights: validate with the EMA weights (needs train.ema_momentum > 0)."""

    config_key: ClassVar[str] = "callbacks.ema"
    enabled: bool = False  # add SwapEMAWeights to the run's callbacks
    swap_on_epoch: bool = False  # EMA weights also during on_epoch_end (checkpoints see them)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class CSVLoggerConfig:
    """Keras CSVLogger, writing <workdir>/history.csv (one row per epoch)."""

    config_key: ClassVar[str] = "callbacks.csv"
    enabled: bool = True  # add CSVLogger to the run's callbacks
    separator: str = ","  # between columns
    append: bool = False  # keep an existing file's rows (a resumed run always continues it)

    def __post_init__(self) -> None:
        check_fields(self)
        require(len(self.separator) == 1, self, "separator", "one character")


@dataclass(frozen=True)
class CallbacksConfig:
    """Which Keras callbacks the runner adds, each with Keras's arguments."""

    config_key: ClassVar[str] = "callbacks"
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    reduce_lr: ReduceLROnPlateauConfig = field(default_factory=ReduceLROnPlateauConfig)
    checkpoint: ModelCheckpointConfig = field(default_factory=ModelCheckpointConfig)
    tensorboard: TensorBoardConfig = field(default_factory=TensorBoardConfig)
    terminate_on_nan: TerminateOnNaNConfig = field(default_factory=TerminateOnNaNConfig)
    ema: SwapEMAWeightsConfig = field(default_factory=SwapEMAWeightsConfig)
    csv: CSVLoggerConfig = field(default_factory=CSVLoggerConfig)

    def __post_init__(self) -> None:
        check_fields(self)
