"""One process of the runs that test_multihost.py starts (not a test).

    python -m convjax.launch --processes 2 --devices-per-process 2 -- \
        python multihost_worker.py WORKDIR FOLDER [--sigterm-at STEP]

Runs the tiny experiment `config(FOLDER)` in WORKDIR through the runner (joined by
`convjax.launch`'s environment). --sigterm-at N: every process sends itself SIGTERM when
global step N ends, as if the launcher had forwarded one; the run backs up and exits 143.
"""

from __future__ import annotations

import os
import signal
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

from convjax.callbacks import Callback  # noqa: E402
from convjax.callbacks_config import CallbacksConfig, ModelCheckpointConfig  # noqa: E402
from convjax.config import Config, DataConfig, ModelConfig, TrainConfig  # noqa: E402

# As in conftest.py: the classic threefry compiles conv initialisers in well under a second.
jax.config.update("jax_threefry_partitionable", False)


def config(folder: str) -> Config:
    """3 epochs of 4 steps (18 images, batch 4), validation, a backup every 3 steps, a
    ModelCheckpoint each epoch keeping the latest 2 and the best."""
    return Config(
        model=ModelConfig(conv_filters=(4,), convs_per_block=1, dropout=0.1, dense=(8,),
                          dense_dropout=0.1),
        data=DataConfig(source="folder", folder=folder, image_size=(8, 8),
                        validation_split=0.25, cache_dir=f"{folder}/cache"),
        train=TrainConfig(epochs=3, batch_size=4, eval_batch_size=8, backup_every_steps=3,
                          verbose=1),  # the compilation cache: $CONVJAX_CACHE
        callbacks=CallbacksConfig(checkpoint=ModelCheckpointConfig(enabled=True, max_to_keep=2)),
    )


class SigtermAt(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if self.loop.global_batch == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str]) -> int:
    from convjax.train import Interrupted, train_and_evaluate

    workdir, folder = argv[0], argv[1]
    extra = [SigtermAt(int(argv[3]))] if argv[2:3] == ["--sigterm-at"] else []
    try:
        train_and_evaluate(config(folder), workdir, extra_callbacks=extra)
    except Interrupted as stopped:
        print(stopped, flush=True)
        return stopped.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
