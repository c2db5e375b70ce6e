import pytest

from convjax.callbacks.monitor import make_monitor, metric_direction


@pytest.mark.parametrize("name, direction", [
    ("loss", "min"), ("val_loss", "min"), ("val_mean_squared_error", "min"), ("mae", "min"),
    ("accuracy", "max"), ("val_accuracy", "max"), ("auc", "max"), ("val_precision", "max"),
    ("recall", "max"), ("top_k_categorical_accuracy", "max"),
])
def test_auto_direction_from_the_metric_name(name, direction):
    assert metric_direction(name) == direction


def test_unknown_metric_in_auto_mode_fails_early():
    with pytest.raises(ValueError, match="mode='min' or mode='max'"):
        make_monitor("val_widgets")
    assert make_monitor("val_widgets", mode="max").mode == "max"


def test_unknown_mode_falls_back_to_auto_with_a_warning():
    with pytest.warns(UserWarning, match="fallback to auto"):
        assert make_monitor("val_loss", mode="sideways").mode == "min"


def test_improvement_is_strict_and_uses_the_absolute_min_delta():
    low = make_monitor("loss", min_delta=-0.5)  # Keras takes abs(min_delta)
    assert low.is_improvement(1.0, None)
    assert low.is_improvement(1.0, 1.6)
    assert not low.is_improvement(1.0, 1.5)  # exactly min_delta better is not enough
    high = make_monitor("accuracy", min_delta=0.1)
    assert high.is_improvement(0.8, 0.6) and not high.is_improvement(0.7, 0.6)


def test_negative_values_compare_correctly():
    low = make_monitor("loss", min_delta=1e-4)
    assert low.is_improvement(-2.0, -1.0)
    assert not low.is_improvement(-1.0, -2.0)
    high = make_monitor("val_reward", mode="max")
    assert high.is_improvement(-1.0, -2.0) and not high.is_improvement(-3.0, -2.0)
