import dataclasses

import pytest

from convjax.config import Config, apply_overrides


def test_overrides_parse_by_field_type():
    cfg = apply_overrides(Config(), [
        "train.epochs=3", "optim.learning_rate=1", "model.conv_filters=(8,16,32)",
        "model.batch_norm=true", "data.folder=/x/y", "model.dense=64",
    ])
    assert cfg.train.epochs == 3
    assert cfg.optim.learning_rate == 1.0 and isinstance(cfg.optim.learning_rate, float)
    assert cfg.model.conv_filters == (8, 16, 32)
    assert cfg.model.batch_norm is True
    assert cfg.data.folder == "/x/y"
    assert cfg.model.dense == (64,)
    assert Config().train.epochs != 3  # the default is untouched (frozen copies)


def test_augment_overrides():
    cfg = apply_overrides(Config(), ["augment.horizontal_flip=true", "augment.crop_padding=4"])
    assert cfg.augment.horizontal_flip and cfg.augment.crop_padding == 4
    assert cfg.augment.enabled


@pytest.mark.parametrize("item, message", [
    ("train.epoch=3", "unknown config key 'train.epoch'"),
    ("trian.epochs=3", "unknown config key"),
    ("train=3", "is a section"),
    ("train.epochs", "key=value"),
    ("model.batch_norm=maybe", "true/false"),
    ("train.epochs=three", "not a valid"),
])
def test_bad_overrides_are_clear(item, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(Config(), [item])


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().train.epochs = 1
