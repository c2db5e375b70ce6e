import jax
import numpy as np
import pytest
from fake_loop import attach, make_control, set_weight, tiny_fit, weight

from convjax.callbacks import EarlyStopping


def run_scripted(stopper, values, monitor="loss", stop_at=None):
    """Keras's test pattern: mark the weights with the epoch, end the epoch with the value.
    Returns the number of epochs run."""
    control = make_control()
    cbs = attach([stopper], control)
    cbs.call("on_train_begin", {})
    epochs = 0
    for epoch, value in enumerate(values):
        epochs += 1
        set_weight(control, epoch)
        cbs.call("on_epoch_end", epoch, {monitor: value})
        if epoch == stop_at:
            control.stop_training = True  # another callback asked to stop
        if control.stop_training:
            break
    cbs.call("on_train_end", {})
    return epochs, control


@pytest.mark.parametrize("patience", [0, 1, 2, 3])
def test_keras_patience_vector(patience):
    losses = [10.0, 9.0, 8.0, 9.0, 8.9, 8.8, 8.7, 8.6, 8.5]
    stopper = EarlyStopping(monitor="loss", patience=patience)
    run_scripted(stopper, losses)
    assert stopper.stopped_epoch == max(patience, 1) + 2


def test_restores_the_best_weights_when_it_stops():
    stopper = EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    epochs, control = run_scripted(stopper, [0.2, 0.15, 0.1, 0.11, 0.12], "val_loss")
    assert epochs == 5 and weight(control) == 2


def test_baseline_never_beaten_trains_patience_epochs_and_restores_the_best():
    stopper = EarlyStopping(patience=5, baseline=0.5, restore_best_weights=True)
    epochs, control = run_scripted(stopper, [0.9, 0.8, 0.7, 0.71, 0.72, 0.73], "val_loss")
    assert epochs == 5 and weight(control) == 2


def test_restores_the_best_weights_when_another_callback_stops():
    stopper = EarlyStopping(patience=5, baseline=0.5, restore_best_weights=True)
    values = [0.9, 0.8, 0.7, 0.71, 0.72, 0.73]
    epochs, control = run_scripted(stopper, values, "val_loss", stop_at=3)
    assert epochs == 4 and weight(control) == 2


def test_restores_the_best_weights_when_the_epochs_run_out():
    stopper = EarlyStopping(monitor="val_accuracy", patience=10, restore_best_weights=True)
    epochs, control = run_scripted(stopper, [0.5, 0.7, 0.6], "val_accuracy")
    assert epochs == 3 and weight(control) == 1


def test_start_from_epoch_and_missing_metric_are_skipped():
    stopper = EarlyStopping(monitor="loss", patience=0, start_from_epoch=3)
    epochs, _ = run_scripted(stopper, [5.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    assert epochs == 5  # epoch 3 sets the best, epoch 4 is the first without improvement
    with pytest.warns(UserWarning, match="not available"):
        epochs, _ = run_scripted(EarlyStopping(monitor="val_loss"), [1.0, 2.0], "loss")
    assert epochs == 2


def test_min_delta_needs_a_strictly_larger_step():
    stopper = EarlyStopping(monitor="loss", min_delta=0.5, patience=1)
    epochs, _ = run_scripted(stopper, [10.0, 9.5, 9.0, 8.0])
    assert epochs == 2  # 9.5 is exactly min_delta better: not an improvement


def test_state_round_trips_and_reuse_resets_it():
    stopper = EarlyStopping(patience=3, restore_best_weights=True)
    run_scripted(stopper, [0.9, 0.8, 0.85], "val_loss")
    saved = stopper.state_dict()
    assert saved["wait"] == 1 and saved["best"] == 0.8 and saved["best_epoch"] == 1
    other = EarlyStopping(patience=3, restore_best_weights=True)
    other.load_state_dict(saved)
    np.testing.assert_array_equal(other.best_weights[0]["dense"]["bias"], [1, 1, 1])
    cbs = attach([stopper])
    cbs.call("on_train_begin", {})
    assert stopper.best is None and stopper.wait == 0 and stopper.best_weights is None


def test_in_fit_stops_and_restores_the_best_epoch_weights():
    # val_loss cannot improve by 10: epoch 0 is the best, training stops at epoch 2.
    stopper = EarlyStopping(min_delta=10.0, patience=2, restore_best_weights=True)
    state, history = tiny_fit([stopper], epochs=6)
    assert history.epoch == [0, 1, 2] and stopper.stopped_epoch == 2
    assert stopper.best_epoch == 0
    for got, best in zip(jax.tree.leaves(state.params), jax.tree.leaves(stopper.best_weights[0])):
        np.testing.assert_array_equal(got, best)
    assert int(state.step) == 3 * 6  # the optimizer state keeps going; only weights go back
