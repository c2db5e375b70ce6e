"""What each phase of a transfer run trains: its model, initial train state and steps.

Pure (given the loaded backbone variables and, for fine-tuning, the frozen phase's result).
`convjax.transfer_run` loads the data and weights, runs `fit` and writes the results; this
module only decides what is trained with what:

    features   Head MLP on cached features (the features need no normalisation)
    frozen     Classifier(backbone, Head); `phases.frozen.trainable` paths train
    finetune   the same Classifier from the frozen result, fresh Adam state, more paths train
    scratch    the course's CNN at `phases.scratch.image_size`, pixels rescaled by 1/255

Every optimizer is Adam at the phase's constant rate (the course's transfer recipe), built
by `convjax.optim` so that callbacks (ReduceLROnPlateau) can scale it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import optax

from convjax.backbones import Backbone
from convjax.models.cnn import CNN, ModelConfig
from convjax.normalize import IDENTITY, RESCALE
from convjax.optim import OptimConfig, make_optimizer, make_schedule
from convjax.steps import Steps, make_steps
from convjax.train_state import TrainState, init_train_state, state_from_variables
from convjax.transfer import Classifier, Head, init_classifier, make_partitioned_optimizer
from convjax.transfer_config import PHASES, TransferExperimentConfig

# The course's from-scratch baseline: Conv16-Pool-Conv32-Pool-Conv64-Pool-Dense512.
SCRATCH_CNN = ModelConfig(conv_filters=(16, 32, 64), convs_per_block=1, dropout=0.0,
                          dense=(512,), dense_dropout=0.0)  # "auto" layers: per backend


@dataclass(frozen=True)
class PhasePlan:
    """What one phase trains."""

    model: nn.Module
    state: TrainState
    steps: Steps
    input_shape: tuple[int, ...]  # one example, without the batch axis


def adam(learning_rate: float) -> optax.GradientTransformation:
    """Adam at a constant rate, through `make_optimizer` (so the rate lives in the state)."""
    optim = OptimConfig(learning_rate=learning_rate)
    return make_optimizer(optim, make_schedule(optim, 1, 1))


def phase_keys(cfg: TransferExperimentConfig, phase: str) -> tuple[jax.Array, jax.Array]:
    """(init key, state key) of `phase`: one seed, a different stream per phase."""
    key = jax.random.fold_in(jax.random.key(cfg.train.seed), PHASES.index(phase))
    init_key, state_key = jax.random.split(key)
    return init_key, state_key


def classifier(cfg: TransferExperimentConfig, bb: Backbone, num_classes: int) -> Classifier:
    hidden = bb.head_hidden if cfg.transfer.head_hidden is None else cfg.transfer.head_hidden
    return Classifier(bb.model, Head(num_classes, hidden, cfg.transfer.head_dropout))


def features_plan(cfg: TransferExperimentConfig, feature_shape: tuple[int, ...],
                  num_classes: int) -> PhasePlan:
    phase = cfg.phases.features
    head = Head(num_classes, phase.hidden, phase.dropout)
    tx = adam(phase.learning_rate)
    init_key, _ = phase_keys(cfg, "features")
    state = init_train_state(head, tx, init_key, feature_shape)
    return PhasePlan(head, state, make_steps(model=head, tx=tx, normalization=IDENTITY),
                     feature_shape)


def frozen_plan(cfg: TransferExperimentConfig, bb: Backbone, image_shape: tuple[int, ...],
                num_classes: int) -> PhasePlan:
    """The pretrained backbone, a fresh head; only `phases.frozen.trainable` trains."""
    model = classifier(cfg, bb, num_classes)
    init_key, state_key = phase_keys(cfg, "frozen")
    variables = init_classifier(model, init_key, image_shape, bb.variables)
    return _partitioned(model, variables, cfg.phases.frozen.learning_rate,
                        cfg.phases.frozen.trainable, state_key, bb, image_shape)


def finetune_plan(cfg: TransferExperimentConfig, bb: Backbone, image_shape: tuple[int, ...],
                  num_classes: int, frozen_result: dict[str, Any]) -> PhasePlan:
    """The frozen phase's weights (`{"params", "batch_stats"}`), a fresh Adam state, more
    paths trainable (default: the head and the backbone's top blocks)."""
    phase = cfg.phases.finetune
    trainable = phase.trainable or ("head", *bb.finetune_paths)
    _, state_key = phase_keys(cfg, "finetune")
    return _partitioned(classifier(cfg, bb, num_classes), frozen_result, phase.learning_rate,
                        trainable, state_key, bb, image_shape)


def _partitioned(model: Classifier, variables: dict[str, Any], learning_rate: float,
                 trainable: tuple[str, ...], key: jax.Array, bb: Backbone,
                 image_shape: tuple[int, ...]) -> PhasePlan:
    tx = make_partitioned_optimizer(adam(learning_rate), variables["params"], trainable)
    state = state_from_variables(variables, tx, key)
    steps = make_steps(model=model, tx=tx, normalization=bb.preprocess)
    return PhasePlan(model, state, steps, image_shape)


def scratch_plan(cfg: TransferExperimentConfig, image_shape: tuple[int, ...],
                 num_classes: int) -> PhasePlan:
    model = CNN(dataclasses.replace(SCRATCH_CNN, num_classes=num_classes))
    tx = adam(cfg.phases.scratch.learning_rate)
    init_key, _ = phase_keys(cfg, "scratch")
    state = init_train_state(model, tx, init_key, image_shape)
    return PhasePlan(model, state, make_steps(model=model, tx=tx, normalization=RESCALE),
                     image_shape)
