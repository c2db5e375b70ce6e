"""Every callback section of the config, reached with `--set`, has its effect in a real run
(train_and_evaluate on a tiny image folder)."""

import math

import pytest

from convjax.config import Config, apply_overrides
from convjax.train import train_and_evaluate
from helpers import write_image_folder

BASE = ["data.source=folder", "data.image_size=(8,8)", "data.validation_split=0.25",
        "model.conv_filters=(4,)", "model.dense=(8,)", "train.epochs=4", "train.batch_size=4",
        "train.eval_batch_size=8", "train.verbose=0", "train.compilation_cache=false"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_image_folder(root / "train", per_class=8)
    write_image_folder(root / "test", per_class=3)
    return root


def run(folder, workdir, *sets):
    cfg = apply_overrides(Config(), [*BASE, f"data.folder={folder}",
                                     f"data.cache_dir={folder}/cache", *sets])
    return train_and_evaluate(cfg, workdir)


def test_early_stopping_checkpoints_tensorboard_and_hparams(folder, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    results = run(folder, tmp_path / "w",
                  # No epoch improves the loss by 100: patience 1 stops after epoch 2 of 4.
                  "callbacks.early_stopping.enabled=true", "callbacks.early_stopping.monitor=loss",
                  "callbacks.early_stopping.min_delta=100", "callbacks.early_stopping.patience=1",
                  # The highest loss is the best here (mode max): epoch 1's checkpoint stays
                  # beside the latest even with max_to_keep=1.
                  "callbacks.checkpoint.enabled=true", "callbacks.checkpoint.monitor=loss",
                  "callbacks.checkpoint.mode=max", "callbacks.checkpoint.max_to_keep=1",
                  "callbacks.tensorboard.histogram_freq=1", "callbacks.tensorboard.profile_batch=2")
    assert results["epochs_run"] == 2
    kept = sorted(p.name for p in (tmp_path / "w" / "checkpoints").iterdir() if p.is_dir())
    assert kept == ["epoch001", "epoch002"], kept  # best (epoch 1) and latest (epoch 2)
    train_log = EventAccumulator(str(tmp_path / "w" / "tensorboard" / "train"))
    train_log.Reload()
    assert any(tag.endswith("histogram") for tag in train_log.Tags()["histograms"])
    assert list((tmp_path / "w" / "tensorboard" / "train").rglob("*.xplane.pb"))
    session = EventAccumulator(str(tmp_path / "w" / "tensorboard"))
    session.Reload()
    assert session.PluginTagToContent("hparams")  # the run's config in the HPARAMS tab


def test_reduce_lr_on_plateau_lowers_the_rate(folder, tmp_path):
    results = run(folder, tmp_path / "w", "callbacks.reduce_lr.enabled=true",
                  "callbacks.reduce_lr.monitor=loss", "callbacks.reduce_lr.min_delta=100",
                  "callbacks.reduce_lr.patience=0", "callbacks.reduce_lr.factor=0.5")
    rates = results["history"]["learning_rate"]
    # Epoch 0 sets the best; every later epoch fails to improve and halves the rate for the
    # next one (the logged rate is the one each epoch trained with).
    assert rates == pytest.approx([1e-3, 1e-3, 5e-4, 2.5e-4])


def test_terminate_on_nan_stops_a_diverging_run(folder, tmp_path):
    # A rate of 1e30 makes the first update finite but the next losses infinite.
    results = run(folder, tmp_path / "w", "optim.learning_rate=1e30")
    assert results["epochs_run"] == 1 and math.isnan(results["history"]["loss"][0])
    again = run(folder, tmp_path / "off", "optim.learning_rate=1e30",
                "callbacks.terminate_on_nan.enabled=false")
    assert again["epochs_run"] == 4


def test_csv_off_and_ema_swap(folder, tmp_path):
    results = run(folder, tmp_path / "w", "callbacks.csv.enabled=false",
                  "callbacks.ema.enabled=true", "train.ema_momentum=0.9")
    assert not (tmp_path / "w" / "history.csv").exists()
    assert results["epochs_run"] == 4
