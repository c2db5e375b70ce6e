"""End to end: `train_and_evaluate` on a tiny image folder, and the experiment's CLI."""

import csv
import json
import os
import subprocess
import sys

import numpy as np

from convjax.class_weights import balanced_class_weights
from convjax.config import Config, DataConfig, ModelConfig, TrainConfig
from convjax.data.datasets import load_splits
from convjax.train import train_and_evaluate
from helpers import write_image_folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_config(folder, cache) -> Config:
    return Config(
        model=ModelConfig(conv_filters=(4,), dense=(8,), num_classes=2),
        data=DataConfig(source="folder", folder=str(folder), image_size=(8, 8),
                        validation_split=0.25, cache_dir=str(cache)),
        train=TrainConfig(epochs=2, batch_size=4, eval_batch_size=8, verbose=0),
    )


def _tiny_dataset(root):
    write_image_folder(root / "train", per_class=8)
    write_image_folder(root / "test", per_class=3)
    return root


def _saved_model_accuracy(run, test_dir) -> float:
    import jax
    import orbax.checkpoint as ocp

    from convjax.data.folder import load_image_folder
    from convjax.loop import predict
    from convjax.models import CNN
    from convjax.sharding import make_mesh
    from convjax.steps import make_steps

    saved = json.loads((run / "results.json").read_text())
    step_dir = next((run / "final").iterdir())
    tree = jax.device_get(ocp.StandardCheckpointer().restore((step_dir / "state").absolute()))
    model_cfg = ModelConfig(conv_filters=(4,), dense=(8,), num_classes=2)
    steps = make_steps(model=CNN(model_cfg), tx=None)
    test = load_image_folder(test_dir, (8, 8), "rgb", saved["config"]["data"]["cache_dir"])
    probs = predict(tree["params"], tree["batch_stats"], test.images, steps,
                    mesh=make_mesh(jax.devices()[:1]))
    return float((probs.argmax(-1) == test.labels).mean())


def test_the_class_count_comes_from_the_data(tmp_path):
    import dataclasses

    import pytest

    root = tmp_path / "data"
    write_image_folder(root / "train", per_class=4, classes=("a", "b", "c"))
    for extra in sorted((root / "train" / "a").iterdir())[:2]:
        extra.unlink()  # unbalanced training labels (2, 4, 4); the test split is balanced
    write_image_folder(root / "test", per_class=2, classes=("a", "b", "c"))
    cfg = _tiny_config(root, tmp_path / "cache")
    with pytest.raises(ValueError, match="num_classes=2 but the data has 3 classes"):
        train_and_evaluate(cfg, tmp_path / "refused")
    assert not (tmp_path / "refused" / "history.csv").exists()  # refused before training
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=0),
                              train=dataclasses.replace(cfg.train, epochs=1,
                                                        class_weight="{3: 2.0}"))
    with pytest.raises(ValueError, match=r"train\.class_weight: class indices \[3\]"):
        train_and_evaluate(cfg, tmp_path / "refused_weights")
    assert not (tmp_path / "refused_weights" / "history.csv").exists()
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, class_weight="balanced",
                                                             top_k=2))
    results = train_and_evaluate(cfg, tmp_path / "run")
    assert results["history"]["loss"][0] < 5.0  # finite: a 3-way head, not NaN
    # "balanced" from the training split's labels; top-2 of 3 classes is counted.
    train, _, _ = load_splits(cfg.data, cfg.train.seed)
    assert results["class_weights"] == pytest.approx(balanced_class_weights(train.labels, 3))
    assert len(set(results["class_weights"])) > 1  # not the test split's (1.0, 1.0, 1.0)
    assert "val_top_k_accuracy" in results["history"] and 0 <= results["test_top_k_accuracy"] <= 1


def test_train_and_evaluate_writes_tensorboard_csv_checkpoint(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = _tiny_dataset(tmp_path / "data")
    results = train_and_evaluate(_tiny_config(data, tmp_path / "cache"), tmp_path / "run")
    run = tmp_path / "run"
    assert results["epochs_run"] == 2 and results["train_eval_loss"] > 0
    # The reported test accuracy is the saved model's, counted over all 6 test images.
    assert _saved_model_accuracy(run, data / "test") == results["test_accuracy"]
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert set(rows[0]) == {"epoch", "accuracy", "learning_rate", "loss", "val_accuracy",
                            "val_loss"}
    train_events = EventAccumulator(str(run / "tensorboard" / "train")).Reload()
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"} <= set(
        train_events.Tags()["scalars"])
    assert [e.step for e in train_events.Scalars("epoch_loss")] == [0, 1]
    val_events = EventAccumulator(str(run / "tensorboard" / "validation")).Reload()
    assert "epoch_loss" in val_events.Tags()["scalars"]
    checkpoints = list((run / "final").iterdir())
    assert [c.name for c in checkpoints] == ["6"]  # 12 training images / batch 4 * 2 epochs
    saved = json.loads((run / "results.json").read_text())
    assert saved["test_accuracy"] == results["test_accuracy"]
    # The test confusion matrix and what follows from it; what "auto" ran as here.
    matrix = np.array(saved["test_confusion_matrix"])
    assert matrix.shape == (2, 2) and matrix.sum() == 6  # 6 test images
    assert np.trace(matrix) / 6 == saved["test_accuracy"]
    assert len(saved["test_per_class_accuracy"]) == 2 and saved["class_names"] == ["cat", "dog"]
    assert {"test_macro_precision", "test_macro_recall", "test_macro_f1"} <= set(saved)
    assert "test_top_k_accuracy" not in saved  # 2 classes: top-5 says nothing
    assert saved["resolved_impls"] == {"backend": "cpu", "conv_impl": "xla",
                                       "pool_impl": "reshape"}
    assert saved["class_weights"] is None
    # The last validation's matrix too: 4 validation images (a quarter of 16).
    val_matrix = np.array(saved["val_confusion_matrix"])
    assert val_matrix.shape == (2, 2) and val_matrix.sum() == 4
    assert np.trace(val_matrix) / 4 == saved["history"]["val_accuracy"][-1]
    assert {"val_per_class_accuracy", "val_macro_f1"} <= set(saved)
    # Confusion images: validation's at each epoch, the test set's once at the last epoch,
    # also after a second call on the finished run.
    assert [e.step for e in val_events.Images("epoch_confusion_matrix")] == [0, 1]
    assert train_and_evaluate(_tiny_config(data, tmp_path / "cache"), run) == saved
    assert len(list((run / "tensorboard" / "test").iterdir())) == 1
    test_events = EventAccumulator(str(run / "tensorboard" / "test")).Reload()
    assert [e.step for e in test_events.Images("epoch_confusion_matrix")] == [1]


def test_cli_rejects_unknown_config_key(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.cifar10_cnn", "--workdir", str(tmp_path),
         "--set", "train.epoch=3"], cwd=REPO, capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert "unknown config key 'train.epoch'" in proc.stderr


def test_cli_smoke_on_image_folder(tmp_path):
    data = write_image_folder(tmp_path / "data" / "train", per_class=40, size=(32, 32),
                              classes=tuple("abcdefghij"))
    write_image_folder(tmp_path / "data" / "test", per_class=4, size=(32, 32),
                       classes=tuple("abcdefghij"))
    env = {**os.environ, "CONVJAX_DATA": str(data.parent), "CONVJAX_CACHE": str(tmp_path / "c")}
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.cifar10_cnn", "--smoke", "--workdir",
         str(tmp_path / "run"), "--set", "train.verbose=2", "--set", "model.dense=(16,)"],
        cwd=REPO, capture_output=True, text=True, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "test accuracy" in proc.stdout and "Epoch 1/1" in proc.stdout
    assert json.loads((tmp_path / "run" / "results.json").read_text())["epochs_run"] == 1


def test_a_full_disk_at_the_end_loses_no_result(tmp_path, monkeypatch, capsys):
    import errno
    import warnings

    from convjax import checkpoint

    def full_disk(directory, state, meta):
        # As Orbax would: a temporary directory is created, then the write fails.
        (directory / "6.orbax-checkpoint-tmp-1234").mkdir(parents=True)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_state", full_disk)
    data = _tiny_dataset(tmp_path / "data")
    cfg = _tiny_config(data, tmp_path / "cache")
    cfg = cfg.__class__(**{**cfg.__dict__, "train": cfg.train.__class__(
        **{**cfg.train.__dict__, "verbose": 1})})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = train_and_evaluate(cfg, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["test_accuracy"] == results["test_accuracy"]
    assert f"test accuracy {results['test_accuracy']:.4f}" in capsys.readouterr().out
    assert list((tmp_path / "run" / "final").iterdir()) == []  # no temporary left behind
    assert any("could not be saved" in str(w.message) for w in caught)


def test_slow_data_preparation_shows_progress_unless_verbose_is_0(tmp_path, capsys,
                                                                  monkeypatch):
    import dataclasses
    import itertools

    import convjax.data.progress as progress

    data = _tiny_dataset(tmp_path / "data")
    ticks = itertools.count(0.0, 3.0)
    monkeypatch.setattr(progress, "clock", lambda: next(ticks))  # 3 s a reading: all slow
    for verbose in (0, 1):
        cfg = _tiny_config(data, tmp_path / f"cache{verbose}")
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=1,
                                                                 verbose=verbose))
        train_and_evaluate(cfg, tmp_path / f"run{verbose}")
        err = capsys.readouterr().err
        shown = [line for line in err.splitlines() if line.startswith("decoding")]
        if verbose:  # each split read (decoded or from the cache) as it goes on the device
            assert {line.split(":")[0] for line in shown} == {
                "decoding train", "decoding validation", "decoding test",
                "decoding train (evaluation sample)"}
            assert "decoding train: 12/12 images in 6 s" in shown
        else:
            assert shown == [], err
