"""make_callbacks: each enabled `callbacks.*` section becomes its Keras callback, with the
section's arguments and files under the workdir; a disabled one adds nothing."""

import dataclasses
import inspect

import pytest
from fake_loop import tiny_fit
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from convjax.callbacks import (
    CSVLogger,
    EarlyStopping,
    ModelCheckpoint,
    ReduceLROnPlateau,
    SwapEMAWeights,
    TensorBoard,
    TerminateOnNaN,
)
from convjax.callbacks.from_config import make_callbacks
from convjax.callbacks_config import CallbacksConfig, TensorBoardConfig
from convjax.config import Config, apply_overrides
from convjax.config_fields import ConfigError

CLASSES = {"terminate_on_nan": TerminateOnNaN, "ema": SwapEMAWeights,
           "early_stopping": EarlyStopping, "reduce_lr": ReduceLROnPlateau,
           "checkpoint": ModelCheckpoint, "csv": CSVLogger, "tensorboard": TensorBoard}
PATH_ARGS = {"checkpoint": {"filepath"}}  # resolved under the workdir, not passed as is


def only(name: str, **fields) -> CallbacksConfig:
    """Every section disabled except `name`, enabled with `fields`."""
    cfg = CallbacksConfig()
    sections = {f.name: dataclasses.replace(getattr(cfg, f.name), enabled=False)
                for f in dataclasses.fields(cfg)}
    sections[name] = dataclasses.replace(sections[name], **{"enabled": True, **fields})
    return CallbacksConfig(**sections)


def test_defaults_are_the_runners_recorders_and_terminate_on_nan(tmp_path):
    made = make_callbacks(CallbacksConfig(), tmp_path / "run", model_summary="the model")
    assert [type(cb) for cb in made] == [TerminateOnNaN, CSVLogger, TensorBoard]
    csv, board = made[1], made[2]
    assert csv.filename == tmp_path / "run" / "history.csv"
    assert board.log_dir == tmp_path / "run" / "tensorboard"
    assert board.model_summary == "the model"
    assert not (tmp_path / "run").exists()  # construction only: nothing written yet


def test_all_disabled_gives_none(tmp_path):
    assert make_callbacks(only("csv", enabled=False), tmp_path) == []


def test_order_puts_the_ema_swap_before_the_callbacks_that_read_weights(tmp_path):
    cfg = CallbacksConfig(**{name: dataclasses.replace(getattr(CallbacksConfig(), name),
                                                      enabled=True) for name in CLASSES})
    assert [type(cb) for cb in make_callbacks(cfg, tmp_path)] == list(CLASSES.values())


@pytest.mark.parametrize("name, fields, expect", [
    ("early_stopping",
     dict(monitor="val_accuracy", min_delta=0.01, patience=3, baseline=0.5,
          restore_best_weights=True, start_from_epoch=2),
     lambda cb: (cb.monitor.name, cb.monitor.mode, cb.monitor.min_delta, cb.patience,
                 cb.baseline, cb.restore_best_weights, cb.start_from_epoch)
     == ("val_accuracy", "max", 0.01, 3, 0.5, True, 2)),
    ("reduce_lr", dict(factor=0.5, patience=2, cooldown=1, min_lr=1e-5, mode="min"),
     lambda cb: (cb.factor, cb.patience, cb.cooldown, cb.min_lr, cb.monitor.mode)
     == (0.5, 2, 1, 1e-5, "min")),
    ("checkpoint",
     dict(filepath="best", monitor="val_accuracy", save_best_only=True, save_freq=10,
          save_weights_only=True, max_to_keep=2, initial_value_threshold=0.3),
     lambda cb: (cb.monitor_name, cb.save_best_only, cb.save_freq, cb.save_weights_only,
                 cb.max_to_keep, cb.best) == ("val_accuracy", True, 10, True, 2, 0.3)),
    ("tensorboard", dict(histogram_freq=2, write_images=True, update_freq=5,
                         write_graph=False, write_steps_per_second=True, profile_batch=(2, 4)),
     lambda cb: (cb.histogram_freq, cb.write_images, cb.update_freq, cb.write_graph,
                 cb.write_steps_per_second, cb.profile_batch) == (2, True, 5, False, True, (2, 4))),
    ("terminate_on_nan", dict(raise_error=True, check_every=7),
     lambda cb: (cb.raise_error, cb.batch_logs_every) == (True, 7)),
    ("ema", dict(swap_on_epoch=True), lambda cb: cb.swap_on_epoch is True),
    ("csv", dict(separator=";", append=True), lambda cb: (cb.sep, cb.append) == (";", True)),
])
def test_each_section_builds_its_callback_with_its_arguments(tmp_path, name, fields, expect):
    made = make_callbacks(only(name, **fields), tmp_path)
    assert [type(cb) for cb in made] == [CLASSES[name]]
    assert expect(made[0])


def test_the_checkpoint_path_is_under_the_workdir(tmp_path):
    (cb,) = make_callbacks(only("checkpoint", filepath="ep{epoch:02d}"), tmp_path)
    assert cb.filepath == str(tmp_path / "checkpoints" / "ep{epoch:02d}")


@pytest.mark.parametrize("name", list(CLASSES))
def test_sections_carry_the_callbacks_own_names_and_defaults(name):
    section = getattr(CallbacksConfig(), name)
    params = inspect.signature(CLASSES[name].__init__).parameters
    for field in dataclasses.fields(section):
        if field.name == "enabled" or field.name in PATH_ARGS.get(name, ()):
            continue
        assert field.name in params, f"{name}.{field.name} is not a {CLASSES[name].__name__} arg"
        assert getattr(section, field.name) == params[field.name].default, field.name


def test_hparams_go_to_tensorboard_flattened(tmp_path):
    (board,) = make_callbacks(only("tensorboard"), tmp_path, hparams={"train": {"epochs": 3}})
    assert board.hparams == {"train.epochs": 3}
    (board,) = make_callbacks(only("tensorboard"), tmp_path)
    assert board.hparams is None


def test_confusion_images_are_on_by_default_and_off_with_a_set(tmp_path):
    (board,) = make_callbacks(only("tensorboard"), tmp_path, class_names=("cat", "dog"))
    assert board.confusion_matrix is True and board.class_names == ["cat", "dog"]
    cfg = apply_overrides(Config(), ["callbacks.tensorboard.confusion_matrix=false"])
    (board,) = [cb for cb in make_callbacks(cfg.callbacks, tmp_path)
                if isinstance(cb, TensorBoard)]
    assert board.confusion_matrix is False


def test_a_config_driven_tensorboard_writes_histograms(tmp_path):
    tiny_fit(make_callbacks(only("tensorboard", histogram_freq=1), tmp_path), epochs=2)
    train = EventAccumulator(str(tmp_path / "tensorboard" / "train"), {"histograms": 0})
    train.Reload()
    assert "conv0_0/kernel/histogram" in train.Tags()["histograms"]
    assert [e.step for e in train.Histograms("conv0_0/kernel/histogram")] == [0, 1]


@pytest.mark.parametrize("profile_batch", [0, 3, (0, 0), (2, 2), (2, 5)])
def test_profile_batch_as_keras_takes_it(profile_batch):
    assert TensorBoardConfig(profile_batch=profile_batch).profile_batch == profile_batch


@pytest.mark.parametrize("profile_batch", [-1, (0, 3), (4, 2), (-1, 2)])
def test_profile_batch_outside_keras_rules_is_a_config_error(profile_batch):
    with pytest.raises(ConfigError, match="callbacks.tensorboard.profile_batch"):
        TensorBoardConfig(profile_batch=profile_batch)
