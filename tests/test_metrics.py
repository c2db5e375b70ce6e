import jax.numpy as jnp
import numpy as np
import pytest

from convjax.metrics import (
    accumulate,
    confusion_counts,
    confusion_report,
    host_logs,
    macro_precision_recall_f1,
    per_class_accuracy,
    top_k_hits,
    zero_sums,
)

LOGITS = jnp.array([[3.0, 2.0, 1.0, 0.0],   # label 1: second largest
                    [0.0, 1.0, 2.0, 3.0],   # label 0: smallest
                    [1.0, 1.0, 1.0, 0.0],   # label 2: tied for the largest
                    [0.0, 0.0, 0.0, jnp.nan]])  # label 3: NaN logit
LABELS = jnp.array([1, 0, 2, 3])


def test_top_k_hits_by_hand_ties_count_and_a_nan_label_ranks_last():
    np.testing.assert_array_equal(top_k_hits(LOGITS, LABELS, 1), [0, 0, 1, 0])
    np.testing.assert_array_equal(top_k_hits(LOGITS, LABELS, 2), [1, 0, 1, 0])
    np.testing.assert_array_equal(top_k_hits(LOGITS, LABELS, 3), [1, 0, 1, 0])
    np.testing.assert_array_equal(top_k_hits(LOGITS, LABELS, 4), [1, 1, 1, 1])


def test_confusion_counts_rows_are_true_columns_predicted_padding_excluded():
    logits = jnp.array([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0],
                        [2.0, 0.0, 0.0]])
    labels = jnp.array([0, 1, 2, 2, 1])
    mask = jnp.array([1.0, 1.0, 1.0, 1.0, 0.0])  # the last example is padding
    expected = [[1, 0, 0],
                [0, 1, 0],
                [0, 1, 1]]
    np.testing.assert_array_equal(confusion_counts(logits, labels, mask, 3), expected)


def test_macro_precision_recall_f1_by_hand():
    # Rows true, columns predicted. Per class (tp, fp, fn) -> precision, recall, F1:
    #   0: (2, 1, 1) -> 2/3, 2/3, 2*2/(4+1+1) = 2/3
    #   1: (1, 2, 1) -> 1/3, 1/2, 2*1/(2+2+1) = 2/5
    #   2: (0, 0, 1) -> 0 (never predicted: zero division counts 0), 0, 0
    #   3: never occurs, as true or predicted label: left out of the means (scikit-learn)
    confusion = np.array([[2, 1, 0, 0],
                          [1, 1, 0, 0],
                          [0, 1, 0, 0],
                          [0, 0, 0, 0]], np.float32)
    scores = macro_precision_recall_f1(confusion)
    assert scores["macro_precision"] == pytest.approx((2 / 3 + 1 / 3 + 0) / 3)
    assert scores["macro_recall"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 2 / 5 + 0) / 3)
    assert per_class_accuracy(confusion) == pytest.approx([2 / 3, 1 / 2, 0.0, None])


def test_confusion_report_is_plain_json_with_prefixed_keys():
    report = confusion_report(np.array([[3.0, 1.0], [0.0, 2.0]]), prefix="test_")
    assert report["test_confusion_matrix"] == [[3, 1], [0, 2]]
    assert isinstance(report["test_confusion_matrix"][0][0], int)
    assert set(report) == {"test_confusion_matrix", "test_per_class_accuracy",
                           "test_macro_precision", "test_macro_recall", "test_macro_f1"}


def test_eval_sums_carry_the_extras_and_logs_stay_scalars():
    sums = zero_sums(num_classes=3, top_k=2)
    assert sums["confusion"].shape == (3, 3) and sums["top_k_correct"].shape == ()
    assert set(zero_sums()) == {"loss_sum", "correct", "count", "nonfinite", "learning_rate"}
    step = {"loss_sum": jnp.float32(2.0), "correct": jnp.float32(1.0), "count": jnp.float32(4),
            "top_k_correct": jnp.float32(3.0), "confusion": jnp.eye(3)}
    sums = accumulate(accumulate(sums, step), step)
    np.testing.assert_array_equal(sums["confusion"], 2 * np.eye(3))
    logs = host_logs({k: np.asarray(v) for k, v in sums.items()}, "val_")
    assert logs == {"val_loss": 0.5, "val_accuracy": 0.25, "val_top_k_accuracy": 0.75}
    # Sums without the extras ignore them (the train epoch's sums, a restored backup).
    assert set(accumulate(zero_sums(), step)) == set(zero_sums())
