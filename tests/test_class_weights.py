import re

import numpy as np
import pytest

from convjax.class_weights import class_weight_vector, parse_class_weight
from convjax.config import Config, TrainConfig, apply_overrides


def test_parse_the_three_forms():
    assert parse_class_weight("") is None
    assert parse_class_weight("balanced") == "balanced"
    assert parse_class_weight("{0: 1, 2: 2.5}") == {0: 1.0, 2: 2.5}


def test_balanced_is_n_over_k_times_count_by_hand():
    labels = np.array([0, 0, 0, 1, 2, 2])  # n 6, k 3: 6/(3*3), 6/(3*1), 6/(3*2)
    assert class_weight_vector("balanced", labels, 3) == pytest.approx((2 / 3, 2.0, 1.0))
    # A class absent from the training labels is not counted in k and is never looked up.
    assert class_weight_vector("balanced", np.array([0, 0, 0, 1]), 3) == pytest.approx(
        (4 / 6, 2.0, 1.0))


def test_a_mapping_fills_missing_classes_with_one_and_checks_the_class_count():
    assert class_weight_vector("{1: 3.0}", np.array([0, 1]), 3) == (1.0, 3.0, 1.0)
    assert class_weight_vector("", np.array([0, 1]), 3) is None
    with pytest.raises(ValueError, match=r"^train\.class_weight: class indices \[3\] are not"):
        class_weight_vector("{0: 1.0, 3: 2.0}", np.array([0, 1]), 3)


@pytest.mark.parametrize("text, message", [
    ("balance", "expected '' (none), 'balanced' or a mapping"),
    ("[1.0, 2.0]", "expected '' (none), 'balanced' or a mapping"),
    ("{}", "expected '' (none), 'balanced' or a mapping"),
    ("{-1: 1.0}", "keys must be class indices (ints >= 0), got -1"),
    ("{1.0: 1.0}", "keys must be class indices (ints >= 0), got 1.0"),
    ("{0: -2}", "weights must be finite numbers >= 0, got -2 for class 0"),
    ("{0: 'x'}", "weights must be finite numbers >= 0, got 'x' for class 0"),
])
def test_bad_class_weights_fail_when_the_config_is_built_naming_the_key(text, message):
    with pytest.raises(ValueError, match=r"^train\.class_weight: " + re.escape(message)):
        apply_overrides(Config(), [f"train.class_weight={text}"])
    with pytest.raises(ValueError, match=r"^train\.class_weight: "):
        TrainConfig(class_weight=text)


def test_a_mapping_from_the_command_line():
    cfg = apply_overrides(Config(), ["train.class_weight={0: 1.0, 1: 2.0}"])
    assert cfg.train.class_weight == "{0: 1.0, 1: 2.0}"
