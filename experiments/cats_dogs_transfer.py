"""Cats vs Dogs by transfer learning: the course's three workflows plus a from-scratch baseline.

    features  backbone run once, features cached on disk, a small MLP(256) trained on them
    frozen    pretrained backbone (inference mode) + new head; only the head trains
    finetune  from the frozen result, unfreeze the top blocks, continue at a 10x lower rate
    scratch   the course's small CNN (Conv16-Pool-Conv32-Pool-Conv64-Pool-Dense512) at 150x150

Command (offline, shared photos: 2,000 training and 1,000 validation images):
    python -m experiments.cats_dogs_transfer --workdir runs/transfer \\
        --set data.folder=../shared/data/cats_vs_dogs-small.tar.gz
    (or CONVJAX_DATA=../shared/data/cats_vs_dogs-small.tar.gz; --help lists every key)

    The README's table: --set phases.frozen.epochs=1 --set phases.scratch.epochs=5
    InceptionV3 (the course's mixed7 features at 150x150, Flatten-Dense(1024)-Dropout head):
        --workdir runs/transfer_inception --set transfer.backbone=inception_v3 \\
        --set transfer.weights=inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5
        (without transfer.weights it runs on RANDOM weights and says so: no download here)
    A quick look at the real photos, 64 per split: --set data.limit=64 (about 1.5 min here,
    peak RSS 2.1 GB; it was 7.0 GB before validation batches were bounded by the split)

Writes <workdir>/results.json (each phase's validation accuracy and seconds per epoch without
compilation or validation), and <workdir>/<phase>/ for each phase (history.csv, tensorboard/,
backup/, final/). Running the command again continues an interrupted run (the phase it was
in; finished phases are skipped) or reports a finished one.

Expected (README table, EfficientNet-Lite0, 2-core CPU, with frozen 1 and scratch 5 epochs):
validation accuracy features 0.988 after 20 epochs (3.4 s/epoch), frozen 0.982 after 1 epoch
(218 s/epoch), fine-tune 0.981 (193 s/epoch), scratch 0.715 after 5 epochs (97 s/epoch);
about 20 min in all (measured with the earlier command, same recipe; one seed).
`--smoke`: the tiny random backbone on 32 photos per split at 32x32, every phase, seconds.
"""

from __future__ import annotations

import dataclasses

from convjax.cli import Runner, main
from convjax.transfer_config import (
    FeaturesPhase,
    FinetunePhase,
    FrozenPhase,
    PhasesConfig,
    ScratchPhase,
    TransferConfig,
    TransferDataConfig,
    TransferExperimentConfig,
    TransferTrainConfig,
)


def config() -> TransferExperimentConfig:
    return TransferExperimentConfig(
        transfer=TransferConfig(backbone="efficientnet_lite0"),
        phases=PhasesConfig(
            features=FeaturesPhase(epochs=20, learning_rate=1e-3, hidden=(256,), dropout=0.5),
            frozen=FrozenPhase(epochs=2, learning_rate=1e-3, trainable=("head",)),
            finetune=FinetunePhase(epochs=1, learning_rate=1e-4),
            scratch=ScratchPhase(epochs=10, learning_rate=1e-3, image_size=(150, 150)),
        ),
        data=TransferDataConfig(folder=""),  # CONVJAX_DATA or --set data.folder=...
        train=TransferTrainConfig(seed=0, batch_size=32, eval_batch_size=32),
    )


def smoke() -> TransferExperimentConfig:
    """Every phase in seconds: the tiny random backbone, 32 photos per split, 32x32 pixels."""
    cfg = config()
    phases = cfg.phases
    return dataclasses.replace(
        cfg,
        transfer=dataclasses.replace(cfg.transfer, backbone="tiny", image_size=(32, 32)),
        phases=PhasesConfig(
            features=dataclasses.replace(phases.features, epochs=2, hidden=(8,)),
            frozen=dataclasses.replace(phases.frozen, epochs=1),
            finetune=dataclasses.replace(phases.finetune, epochs=1),
            scratch=dataclasses.replace(phases.scratch, epochs=1, image_size=(32, 32)),
        ),
        data=dataclasses.replace(cfg.data, limit=32),
        train=dataclasses.replace(cfg.train, batch_size=8, eval_batch_size=16),
    )


def runner() -> Runner:
    from convjax.transfer_run import run_transfer  # imported once the config is checked

    return run_transfer


if __name__ == "__main__":
    main(config, smoke, __doc__, load_runner=runner)
