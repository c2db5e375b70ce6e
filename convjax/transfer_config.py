"""The configuration of a transfer-learning run: backbone, head, phases, data, loop, callbacks.

Pure: no I/O. `TransferExperimentConfig` composes the sections below with the shared
`callbacks` section; `convjax.transfer_run.run_transfer` consumes it. Like `convjax.config`'s
sections, each checks itself when built, so `--set phases.frozen.epochs=0` fails before any
data is read, naming the key. The phases run in declaration order, each as its own sub-run:

    features   backbone once over the photos, features cached on disk, a small MLP on them
    frozen     frozen backbone (inference mode) + new head; only `trainable` paths train
    finetune   from the frozen phase's result, more paths trainable at a lower rate
    scratch    the course's small CNN, no pretraining (the baseline)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from convjax.callbacks_config import CallbacksConfig
from convjax.config_fields import ConfigError, check_fields, require

BackboneName = Literal["efficientnet_lite0", "inception_v3", "tiny"]
PHASES = ("features", "frozen", "finetune", "scratch")  # the order they run in


def _check_phase(section) -> None:
    check_fields(section)
    require(section.epochs >= 1, section, "epochs", ">= 1")
    require(section.learning_rate > 0, section, "learning_rate", "> 0")


@dataclass(frozen=True)
class TransferConfig:
    """The pretrained backbone and the new head put on it."""

    config_key: ClassVar[str] = "transfer"
    backbone: BackboneName = "efficientnet_lite0"  # tiny: random, for smoke runs only
    weights: str = ""  # inception_v3: Keras's notop .h5 file; "" = RANDOM weights (warned)
    image_size: tuple[int, int] | None = None  # (height, width); None = the backbone's own
    head_hidden: tuple[int, ...] | None = None  # head's hidden Dense units; None = backbone's
    head_dropout: float = 0.2  # after each hidden layer (before the logits if none)

    def __post_init__(self) -> None:
        check_fields(self)
        require(self.image_size is None or min(self.image_size) >= 1, self, "image_size",
                "None or two ints >= 1")
        require(self.head_hidden is None or min(self.head_hidden, default=1) >= 1, self,
                "head_hidden", "None or units >= 1")
        require(0 <= self.head_dropout < 1, self, "head_dropout", "in [0, 1)")
        require(not self.weights or self.backbone == "inception_v3", self, "weights",
                "empty for this backbone (only inception_v3 reads a weights file; "
                "efficientnet_lite0's come installed)")


@dataclass(frozen=True)
class FeaturesPhase:
    """Backbone run once, features cached on disk, a small MLP trained on them."""

    config_key: ClassVar[str] = "phases.features"
    enabled: bool = True  # run this phase
    epochs: int = 20  # passes over the cached features
    learning_rate: float = 1e-3  # Adam, constant
    hidden: tuple[int, ...] = (256,)  # the MLP's hidden Dense units
    dropout: float = 0.5  # after each hidden layer
    cache_dir: str = ""  # cached features; "" = <data.cache_dir or $CONVJAX_CACHE>/features

    def __post_init__(self) -> None:
        _check_phase(self)
        require(0 <= self.dropout < 1, self, "dropout", "in [0, 1)")


@dataclass(frozen=True)
class FrozenPhase:
    """Frozen backbone (inference-mode batch norm) + new head; only `trainable` trains."""

    config_key: ClassVar[str] = "phases.frozen"
    enabled: bool = True  # run this phase
    epochs: int = 2  # passes over the photos
    learning_rate: float = 1e-3  # Adam, constant
    trainable: tuple[str, ...] = ("head",)  # path globs that train: "['head', 'backbone/x*']"

    def __post_init__(self) -> None:
        _check_phase(self)
        require(bool(self.trainable), self, "trainable", "at least one path pattern")


@dataclass(frozen=True)
class FinetunePhase:
    """Continues from the frozen phase's result with more paths trainable, at a lower rate."""

    config_key: ClassVar[str] = "phases.finetune"
    enabled: bool = True  # run this phase (needs phases.frozen.enabled)
    epochs: int = 1  # passes over the photos
    learning_rate: float = 1e-4  # Adam, constant; 10x below the frozen phase's
    trainable: tuple[str, ...] = ()  # path globs that train; () = head + backbone's top blocks

    def __post_init__(self) -> None:
        _check_phase(self)


@dataclass(frozen=True)
class ScratchPhase:
    """The course's CNN (Conv16-Pool-Conv32-Pool-Conv64-Pool-Dense512), no pretraining."""

    config_key: ClassVar[str] = "phases.scratch"
    enabled: bool = True  # run this phase
    epochs: int = 10  # passes over the photos
    learning_rate: float = 1e-3  # Adam, constant
    image_size: tuple[int, int] = (150, 150)  # the course's input size for this model

    def __post_init__(self) -> None:
        _check_phase(self)
        require(min(self.image_size) >= 1, self, "image_size", "two ints >= 1")


@dataclass(frozen=True)
class PhasesConfig:
    """Which workflows run (in this order, each as <workdir>/<phase>/) and how long."""

    config_key: ClassVar[str] = "phases"
    features: FeaturesPhase = field(default_factory=FeaturesPhase)
    frozen: FrozenPhase = field(default_factory=FrozenPhase)
    finetune: FinetunePhase = field(default_factory=FinetunePhase)
    scratch: ScratchPhase = field(default_factory=ScratchPhase)

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.enabled():
            raise ConfigError("phases", "enable at least one phase (phases.<name>.enabled)")
        if self.finetune.enabled and not self.frozen.enabled:
            raise ConfigError("phases.finetune.enabled", "needs phases.frozen.enabled "
                              "(fine-tuning continues from the frozen phase's result)")

    def enabled(self) -> list[str]:
        return [name for name in PHASES if getattr(self, name).enabled]


@dataclass(frozen=True)
class TransferDataConfig:
    """The photos: <folder>/train/<class>/ trains, <folder>/validation/<class>/ validates."""

    config_key: ClassVar[str] = "data"
    folder: str = ""  # image folder or .tar.gz archive; "" = $CONVJAX_DATA
    limit: int = 0  # use N photos per split, drawn with train.seed (0 = all); quick runs
    cache_dir: str = ""  # decoded-image cache; "" = $CONVJAX_CACHE or ~/.cache/convjax

    def __post_init__(self) -> None:
        check_fields(self)
        require(self.limit >= 0, self, "limit", ">= 0 (0: all)")


@dataclass(frozen=True)
class TransferTrainConfig:
    """How each phase's training loop runs (the epochs are per phase)."""

    config_key: ClassVar[str] = "train"
    seed: int = 0  # one seed for init, data order, dropout and the photo sample
    batch_size: int = 32  # global batch (split over devices)
    # Memory grows with it: a batch of 500 at 224x224 needs 4.5 GiB of XLA temporaries for
    # EfficientNet-Lite0 (the old experiment's 7 GB peak); 32 needs 0.3 GiB, as training does.
    eval_batch_size: int = 32  # validation and feature-extraction batch
    verbose: Literal[0, 1, 2] = 1  # 0 silent, 1 progress bar, 2 one line per epoch (Keras fit)
    backup_every_steps: int = 50  # also back up every N steps; 0 = at epoch ends only
    compilation_cache: bool = True  # persistent JAX compilation cache in $CONVJAX_CACHE/jax

    def __post_init__(self) -> None:
        check_fields(self)
        require(self.seed >= 0, self, "seed", ">= 0")
        require(self.batch_size >= 1, self, "batch_size", ">= 1")
        require(self.eval_batch_size >= 1, self, "eval_batch_size", ">= 1")
        require(self.backup_every_steps >= 0, self, "backup_every_steps", ">= 0")


@dataclass(frozen=True)
class TransferExperimentConfig:
    """A whole transfer run. Each field is a section; `--set section.key=value` overrides."""

    transfer: TransferConfig = field(default_factory=TransferConfig)
    phases: PhasesConfig = field(default_factory=PhasesConfig)
    data: TransferDataConfig = field(default_factory=TransferDataConfig)
    train: TransferTrainConfig = field(default_factory=TransferTrainConfig)
    callbacks: CallbacksConfig = field(default_factory=CallbacksConfig)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.callbacks.ema.enabled:
            raise ConfigError("callbacks.ema.enabled", "a transfer run keeps no EMA weights")
