"""The course's CIFAR-10 CNN: two Conv-Conv-MaxPool-Dropout blocks and a Dense(512) head.

    Conv2D(32,3,same,relu) Conv2D(32,3,same,relu) MaxPool(2) Dropout(0.25)
    Conv2D(64,3,same,relu) Conv2D(64,3,same,relu) MaxPool(2) Dropout(0.25)
    Flatten Dense(512,relu) Dropout(0.5) Dense(10)        Adam(1e-3), batch 128

Command (offline, from the shared JPEG folders; without CONVJAX_DATA it uses tfds cifar10):
    CONVJAX_DATA=../shared/data/cifar10-jpg.tar.gz python -m experiments.cifar10_cnn \
        --workdir runs/cifar10_cnn

Expected: see the README's "Results" table (test accuracy, epochs and wall time, measured).
"""

from __future__ import annotations

import dataclasses

from convjax.cli import main
from convjax.config import Config, DataConfig, ModelConfig, TrainConfig


def config() -> Config:
    return Config(
        model=ModelConfig(conv_filters=(32, 64), convs_per_block=2, dropout=0.25,
                          dense=(512,), dense_dropout=0.5),
        data=DataConfig(source="tfds", name="cifar10", validation_split=0.1),
        train=TrainConfig(epochs=8, batch_size=128),
    )


def smoke() -> Config:
    """A few hundred images and one epoch: checks the whole path in seconds."""
    cfg = config()
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, train_limit=512, test_limit=256),
        train=dataclasses.replace(cfg.train, epochs=1, batch_size=64, eval_batch_size=128),
    )


if __name__ == "__main__":
    main(config, smoke, __doc__)
