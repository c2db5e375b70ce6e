"""convjax.config: typed sections composed into Config, `--set` overrides checked before any
data is read (issue #9 item 8), dict/JSON I/O and diffs for the runner."""

import ast
import dataclasses
import importlib
import json
import re
import sys
from pathlib import Path

import pytest

from convjax.config import (
    Config,
    OptimConfig,
    TrainConfig,
    apply_overrides,
    config_diff,
    config_from_dict,
    config_to_dict,
    leaves,
    validate,
)
from convjax.config_fields import join_key

REPO = Path(__file__).resolve().parents[1]


def test_overrides_parse_by_field_type():
    cfg = apply_overrides(Config(), [
        "train.epochs=3", "optim.learning_rate=1", "model.conv_filters=(8,16,32)",
        "model.batch_norm=true", "data.folder=/x/y", "model.dense=64", "model.pool=avg",
        "callbacks.checkpoint.save_freq=100", "callbacks.tensorboard.update_freq=batch",
        "augment.brightness_range=[0.5, 1.5]",
    ])
    assert cfg.train.epochs == 3
    assert cfg.optim.learning_rate == 1.0 and isinstance(cfg.optim.learning_rate, float)
    assert cfg.model.conv_filters == (8, 16, 32)
    assert cfg.model.batch_norm is True
    assert cfg.data.folder == "/x/y"
    assert cfg.model.dense == (64,)  # a lone value for a tuple field
    assert cfg.model.pool == "avg"
    assert cfg.callbacks.checkpoint.save_freq == 100
    assert cfg.callbacks.tensorboard.update_freq == "batch"
    assert cfg.augment.brightness_range == (0.5, 1.5)
    assert Config().train.epochs != 3  # the default is untouched (frozen copies)


def test_a_union_keeps_the_exact_type():
    # An int shift range means whole pixels in Keras, a float a fraction: 3 must stay an int.
    cfg = apply_overrides(Config(), ["augment.width_shift_range=3",
                                     "augment.height_shift_range=0.1"])
    assert type(cfg.augment.width_shift_range) is int
    assert type(cfg.augment.height_shift_range) is float


def test_augment_overrides():
    cfg = apply_overrides(Config(), ["augment.horizontal_flip=true", "augment.crop_padding=4"])
    assert cfg.augment.horizontal_flip and cfg.augment.crop_padding == 4
    assert cfg.augment.enabled


@pytest.mark.parametrize("item, message", [
    ("train.epochs=2.5", "train.epochs: expected int, got 2.5"),
    ("train.batch_size=0", "train.batch_size: must be >= 1, got 0"),
    ("train.epochs=0", "train.epochs: must be >= 1, got 0"),
    ("train.epochs=-1", "train.epochs: must be >= 1, got -1"),
    ("optim.name=lion", "optim.name: must be one of 'sgd', 'adam', 'adamw'; got 'lion'"),
    ("optim.schedule=linear", "optim.schedule: must be one of 'constant', 'cosine', "
     "'warmup_cosine', 'piecewise', 'exponential'; got 'linear'"),
    ("model.pool=median", "model.pool: must be one of 'max', 'avg', 'none'; got 'median'"),
])
def test_issue9_bad_values_fail_at_parse_time_naming_key_and_choices(item, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        apply_overrides(Config(), [item])


@pytest.mark.parametrize("item", [
    "model.dropout=1", "model.kernel_size=0", "model.conv_filters=(8,0)", "model.num_classes=-1",
    "data.validation_split=1", "data.image_size=(0,8)", "data.image_size=(8,8,3)",
    "data.color_mode=cmyk", "optim.learning_rate=0", "optim.learning_rate=nan",
    "optim.momentum=1", "train.eval_batch_size=0", "train.ema_momentum=1", "train.verbose=3",
    "train.seed=-1", "train.backup_every_steps=-1", "augment.rotation_range=-1",
    "augment.fill_mode=mirror", "callbacks.reduce_lr.factor=1",
    "callbacks.checkpoint.save_freq=0", "callbacks.checkpoint.filepath=../elsewhere",
    "callbacks.tensorboard.update_freq=0", "callbacks.early_stopping.patience=-1",
    "callbacks.csv.separator=;;", "train.top_k=-1", "train.class_weight=heavy",
    "optim.clipnorm=-1", "optim.global_clipnorm=-1", "optim.gradient_accumulation_steps=0",
    "model.dtype=float16", "model.param_dtype=float64", "model.conv_impl=fft",
    "model.pool_impl=fft",
])
def test_every_section_checks_its_ranges_and_names_the_key(item):
    key = item.split("=")[0]
    with pytest.raises(ValueError, match=rf"^{re.escape(key)}: "):
        apply_overrides(Config(), [item])


def test_sections_name_their_full_key_when_built_directly():
    with pytest.raises(ValueError, match=r"^optim\.name: must be one of"):
        OptimConfig(name="lion")
    with pytest.raises(ValueError, match=r"^train\.epochs: expected int, got 2\.5"):
        TrainConfig(epochs=2.5)


@pytest.mark.parametrize("item, message", [
    ("train.epoch=3", "unknown config key 'train.epoch'; did you mean 'train.epochs'?"),
    ("trian.epochs=3", "unknown config key 'trian.epochs'; valid keys here: model, optim"),
    ("train.epochs.x=3", "'train.epochs' has no sub-keys"),
    ("train=3", "train: is a section"),
    ("train.epochs", "key=value"),
    ("model.batch_norm=maybe", "model.batch_norm: expected true/false, got 'maybe'"),
    ("train.epochs=three", "train.epochs: 'three' is not a valid int"),
])
def test_bad_overrides_are_clear(item, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        apply_overrides(Config(), [item])


def test_fields_that_must_agree_can_be_set_one_at_a_time():
    # Checked once all overrides are in: after the first, boundaries and scales disagree.
    cfg = apply_overrides(Config(), ["optim.schedule=piecewise", "optim.boundaries=(5, 8)",
                                     "optim.scales=(0.1, 0.1)"])
    assert cfg.optim.boundaries == (5.0, 8.0)
    with pytest.raises(ValueError, match=r"^optim\.scales: must be the same length"):
        apply_overrides(Config(), ["optim.boundaries=(5, 8)"])


def test_ema_callback_needs_the_ema_in_the_state():
    with pytest.raises(ValueError, match=r"^callbacks\.ema\.enabled: needs train\.ema_momentum"):
        apply_overrides(Config(), ["callbacks.ema.enabled=true"])
    cfg = apply_overrides(Config(), ["callbacks.ema.enabled=true", "train.ema_momentum=0.99"])
    assert cfg.callbacks.ema.enabled


def test_a_monitor_whose_direction_is_unknown_fails_only_when_enabled():
    apply_overrides(Config(), ["callbacks.early_stopping.monitor=top5"])  # disabled: unused
    with pytest.raises(ValueError, match=r"^callbacks\.early_stopping\.monitor: cannot tell"):
        apply_overrides(Config(), ["callbacks.early_stopping.enabled=true",
                                   "callbacks.early_stopping.monitor=top5"])
    apply_overrides(Config(), ["callbacks.early_stopping.enabled=true",
                               "callbacks.early_stopping.monitor=top5",
                               "callbacks.early_stopping.mode=max"])


NON_DEFAULT = [
    "model.conv_filters=(8,16)", "model.num_classes=3", "data.image_size=(8,8)",
    "augment.zoom_range=(0.8,1.2)", "augment.brightness_range=(0.5,1.5)",
    "optim.schedule=piecewise", "optim.boundaries=(2,)", "optim.scales=(0.1,)",
    "callbacks.tensorboard.profile_batch=(2,4)", "callbacks.checkpoint.max_to_keep=2",
    "callbacks.early_stopping.baseline=0.5", "train.epochs=8",
]


def test_json_round_trip_is_exact_and_keeps_tuples():
    cfg = apply_overrides(Config(), NON_DEFAULT)
    back = config_from_dict(json.loads(json.dumps(config_to_dict(cfg))))
    assert back == cfg
    assert isinstance(back.model.conv_filters, tuple)
    assert back.callbacks.tensorboard.profile_batch == (2, 4)


def test_config_from_dict_is_strict():
    with pytest.raises(ValueError, match=r"^unknown config key 'train\.epochz'"):
        config_from_dict({"train": {"epochz": 1}})
    with pytest.raises(ValueError, match=r"^unknown config key 'callbacks\.csv\.sep'"):
        config_from_dict({"callbacks": {"csv": {"sep": ";"}}})
    with pytest.raises(ValueError, match=r"^train\.epochs: expected int, got '3'"):
        config_from_dict({"train": {"epochs": "3"}})
    with pytest.raises(ValueError, match=r"^train: expected a mapping"):
        config_from_dict({"train": 3})
    # A key absent from an old stored config takes its default.
    assert config_from_dict({"train": {"epochs": 2}}) == apply_overrides(Config(),
                                                                        ["train.epochs=2"])


def test_config_diff_lists_the_changed_keys():
    a = apply_overrides(Config(), ["train.epochs=8"])
    b = apply_overrides(Config(), ["train.epochs=10", "model.pool=avg"])
    assert config_diff(a, b) == ["model.pool: 'max' -> 'avg'", "train.epochs: 8 -> 10"]
    assert config_diff(a, a) == []


def test_validate_catches_what_bypassed_the_sections():
    cfg = Config()
    object.__setattr__(cfg.train, "epochs", 0)
    with pytest.raises(ValueError, match=r"^train\.epochs: must be >= 1"):
        validate(cfg)
    assert validate(Config()) == Config()


def test_each_section_knows_its_place_and_every_key_is_documented():
    for leaf in leaves(Config()):
        name = leaf.key.rsplit(".", 1)[-1]
        assert join_key(type(leaf.section).config_key, name) == leaf.key
        assert leaf.comment, f"{leaf.key} has no comment: --help would show nothing"


def test_configs_are_frozen_and_hashable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().train.epochs = 1
    assert hash(apply_overrides(Config(), NON_DEFAULT))  # usable as a jit static argument


SECTIONS = ["convjax/models/cnn.py", "convjax/data/config.py", "convjax/augment/config.py",
            "convjax/callbacks_config.py", "convjax/config_fields.py"]


@pytest.mark.parametrize("path", SECTIONS)
def test_sections_never_import_convjax_config(path):
    tree = ast.parse((REPO / path).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "convjax.config" not in imported


@pytest.mark.parametrize("module", ["convjax.config", "convjax.optim", "convjax.data",
                                    "convjax.train_state", "convjax.callbacks.from_config",
                                    "convjax.cli"])
def test_no_import_cycle_whichever_module_comes_first(module):
    # A cycle only shows when its module is imported first: forget every convjax module
    # (third-party ones stay loaded, so this takes a moment), import, then put them back.
    ours = {k: v for k, v in sys.modules.items() if k == "convjax" or k.startswith("convjax.")}
    try:
        for name in ours:
            del sys.modules[name]
        importlib.import_module(module)
    finally:
        for name in [k for k in sys.modules if k == "convjax" or k.startswith("convjax.")]:
            del sys.modules[name]
        sys.modules.update(ours)
