"""Tests for catdog.metrics: metrics against hand-computed values, calibration, thresholds, tables."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import special

from catdog import metrics

# --------------------------------------------------------------------------- sigmoid


def test_sigmoid_is_safe_at_any_logit_and_inverts_the_logit():
    z = np.array([-1000.0, -5.0, 0.0, 5.0, 1000.0])
    with np.errstate(all="raise"):
        p = metrics.sigmoid(z)
    assert p[0] == 0.0 and p[2] == 0.5 and p[-1] == 1.0
    assert p.dtype == np.float64
    np.testing.assert_allclose(special.logit(metrics.sigmoid(z[1:-1])), z[1:-1], atol=1e-9)


# --------------------------------------------------------------------------- compute_metrics


def test_perfect_model():
    m = metrics.compute_metrics([0, 0, 1, 1], [0.0, 0.0, 1.0, 1.0])
    assert m["accuracy"] == 1.0
    assert m["roc_auc"] == 1.0 and m["average_precision"] == 1.0
    assert m["log_loss"] == pytest.approx(0.0, abs=1e-9)
    assert m["brier"] == 0.0 and m["ece"] == 0.0
    assert m["counts"] == {"tp": 2, "fp": 0, "tn": 2, "fn": 0}
    assert m["warnings"] == []


def test_all_wrong_model():
    m = metrics.compute_metrics([0, 0, 1, 1], [0.9, 0.8, 0.1, 0.2])
    assert m["accuracy"] == 0.0
    assert m["roc_auc"] == 0.0
    assert m["counts"] == {"tp": 0, "fp": 2, "tn": 0, "fn": 2}
    assert m["confusion_matrix"] == {"labels": ["cat", "dog"], "counts": [[0, 2], [2, 0]]}
    assert m["per_class"]["dog"]["precision"] == 0.0 and m["per_class"]["cat"]["recall"] == 0.0


def test_six_sample_case_by_hand():
    y = [0, 0, 0, 1, 1, 1]
    p = [0.10, 0.65, 0.70, 0.35, 0.90, 0.95]
    # threshold 0.5 -> predicted [cat, dog, dog, cat, dog, dog]
    m = metrics.compute_metrics(y, p)
    assert m["n_images"] == 6 and m["threshold"] == 0.5
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["counts"] == {"tp": 2, "fp": 2, "tn": 1, "fn": 1}
    assert m["confusion_matrix"]["counts"] == [[1, 2], [1, 2]]
    # cat: predicted cat = {0, 3}, one of them a cat; 3 cats in total
    cat = m["per_class"]["cat"]
    assert cat["precision"] == pytest.approx(1 / 2)
    assert cat["recall"] == pytest.approx(1 / 3)
    assert cat["f1"] == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))  # 0.4
    assert cat["support"] == 3
    # dog: predicted dog = {1, 2, 4, 5}, two of them dogs; 3 dogs in total
    dog = m["per_class"]["dog"]
    assert dog["precision"] == pytest.approx(2 / 4)
    assert dog["recall"] == pytest.approx(2 / 3)
    assert dog["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))  # 4/7
    assert m["macro"]["precision"] == pytest.approx(0.5)
    assert m["macro"]["recall"] == pytest.approx(0.5)
    assert m["macro"]["f1"] == pytest.approx((0.4 + 4 / 7) / 2)
    # Brier: mean squared distance of p(dog) from the label
    assert m["brier"] == pytest.approx((0.1**2 + 0.65**2 + 0.7**2 + 0.65**2 + 0.1**2 + 0.05**2) / 6)
    # log loss: mean -log(probability of the true class)
    expected_ll = -np.mean(np.log([0.9, 0.35, 0.30, 0.35, 0.90, 0.95]))
    assert m["log_loss"] == pytest.approx(expected_ll)
    # ROC AUC: of 9 (cat, dog) pairs, the dog scores higher in 7 (0.35 beats only 0.10)
    assert m["roc_auc"] == pytest.approx(7 / 9)
    # AP: ranked dog, dog, cat, cat, dog, cat -> precision at each dog 1, 1, 3/5
    assert m["average_precision"] == pytest.approx((1 + 1 + 3 / 5) / 3)
    # ECE, 15 bins of width 1/15: confidences .90 .65 .70 .65 .90 .95, correct 1 0 0 0 1 1
    #   bin [.600, .667): two wrong at .65 -> gap .65 | bin [.667, .733): one wrong at .70 -> gap .70
    #   bin [.867, .933): two right at .90 -> gap .10 | bin [.933, 1]: one right at .95 -> gap .05
    assert m["ece"] == pytest.approx((2 * 0.65 + 0.70 + 2 * 0.10 + 0.05) / 6)
    assert metrics.expected_calibration_error(y, p) == pytest.approx(0.375)
    assert m["warnings"] == []
    json.dumps(m)  # plain Python types only


def test_accuracy_interval_is_the_wilson_interval():
    k, n, z = 2963, 3001, 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low, high = metrics.accuracy_interval(k, n)
    assert low == pytest.approx(centre - half, abs=1e-9) and high == pytest.approx(centre + half, abs=1e-9)
    assert 0.982 < low < p < high < 0.991  # ~+-0.4 points at this size
    assert metrics.compute_metrics([0, 1, 1, 0], [0.2, 0.9, 0.3, 0.4])["accuracy_ci95"] == pytest.approx(
        metrics.accuracy_interval(3, 4))


def test_compare_predictions_is_mcnemars_exact_test():
    y = np.array([0] * 20 + [1] * 20)
    a, b = y.copy(), y.copy()
    b[:8] = 1  # 8 images only A gets right
    a[20] = 0  # 1 image only B gets right
    a[30], b[30] = 0, 0  # both wrong: not discordant, does not count
    result = metrics.compare_predictions(y, a, b)
    assert (result["only_a_correct"], result["only_b_correct"]) == (8, 1)
    assert result["p_value"] == pytest.approx(2 * (1 + 9) / 2**9)  # two-sided, P(X <= 1 | n=9, 1/2) doubled
    assert metrics.compare_predictions(y, a, a)["p_value"] == 1.0
    with pytest.raises(ValueError, match="lengths differ"):
        metrics.compare_predictions(y, a[:-1], b)


def test_threshold_changes_predictions():
    y, p = [0, 0, 0, 1, 1, 1], [0.10, 0.65, 0.70, 0.35, 0.90, 0.95]
    m = metrics.compute_metrics(y, p, threshold=0.8)  # predicted dog only for 0.90 and 0.95
    assert m["counts"] == {"tp": 2, "fp": 0, "tn": 3, "fn": 1}
    assert m["threshold"] == 0.8


def test_one_class_only_does_not_crash():
    m = metrics.compute_metrics([0, 0, 0], [0.1, 0.7, 0.2])
    assert m["roc_auc"] is None and m["average_precision"] is None
    assert any("only one class (cat) present" in w and "ROC AUC" in w for w in m["warnings"])
    assert m["per_class"]["dog"]["recall"] is None  # no dogs: undefined, not 0
    assert m["per_class"]["dog"]["support"] == 0
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["macro"]["recall"] == pytest.approx(2 / 3)  # undefined dog recall is skipped
    assert m["confusion_matrix"]["counts"] == [[2, 1], [0, 0]]
    json.dumps(m)

    dogs = metrics.compute_metrics([1, 1], [0.9, 0.8])
    assert dogs["roc_auc"] is None
    assert any("only one class (dog) present" in w for w in dogs["warnings"])


def test_invalid_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="empty"):
        metrics.compute_metrics([], [])
    with pytest.raises(ValueError, match="one value per label"):
        metrics.compute_metrics([0, 1, 1], [0.2, 0.8])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.compute_metrics([0, 1], [0.2, 1.3])
    with pytest.raises(ValueError, match="only 0 \\(cat\\) and 1 \\(dog\\)"):
        metrics.compute_metrics([0, 2], [0.2, 0.8])
    with pytest.raises(ValueError, match="NaN"):
        metrics.compute_metrics([0, 1], [0.2, float("nan")])


def test_keras_shaped_column_inputs_are_accepted():
    m = metrics.compute_metrics(np.array([[0], [1]]), np.array([[0.2], [0.7]], dtype=np.float32))
    assert m["accuracy"] == 1.0


# --------------------------------------------------------------------------- temperature scaling


def _overconfident(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(z), and logits 5 * z + noise: a model five times too sure."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, n)
    y = (rng.random(n) < metrics.sigmoid(z)).astype(int)
    return 5.0 * z + rng.normal(0.0, 0.5, n), y


def test_temperature_scaling_fixes_overconfidence():
    logits, y = _overconfident()
    t = metrics.fit_temperature(logits, y)
    assert 3.5 < t < 7.5  # the true factor is 5
    before = metrics.compute_metrics(y, metrics.sigmoid(logits))
    after = metrics.compute_metrics(y, metrics.apply_temperature(logits, t))
    assert after["log_loss"] < before["log_loss"] - 0.1
    assert after["ece"] < before["ece"]
    assert after["accuracy"] == before["accuracy"]  # T never changes the 0.5 decision
    with pytest.raises(ValueError):
        metrics.apply_temperature(logits, 0.0)


# --------------------------------------------------------------------------- choose_threshold


@pytest.mark.parametrize("positive", ["dog", "cat"])
@pytest.mark.parametrize("metric,target", [("precision", 0.95), ("recall", 0.98)])
def test_choose_threshold_reaches_target_and_is_best(positive, metric, target):
    logits, y = _overconfident(n=600, seed=1)
    p = metrics.apply_temperature(logits, 5.0)
    t = metrics.choose_threshold(y, p, metric=metric, target=target, positive=positive)
    other = "recall" if metric == "precision" else "precision"
    got = metrics.compute_metrics(y, p, threshold=t)["per_class"][positive]
    assert got[metric] >= target
    # brute force over every distinct cut: none meets the target with a better other metric
    cuts = np.concatenate([np.unique(p), np.nextafter(np.unique(p), 2.0)])[:, None]
    predicted = (p[None, :] >= cuts) if positive == "dog" else (p[None, :] < cuts)
    actual = y[None, :] == (1 if positive == "dog" else 0)
    hits = (predicted & actual).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = {"precision": hits / predicted.sum(axis=1), "recall": hits / actual.sum(axis=1)}
    feasible = scores[metric] >= target  # NaN (nothing predicted) is never feasible
    assert got[other] == pytest.approx(np.max(scores[other][feasible]))


def test_choose_threshold_unreachable_target_raises():
    with pytest.raises(ValueError, match="never reaches"):
        metrics.choose_threshold([1, 0, 1, 0], [0.2, 0.9, 0.1, 0.8], target=0.99)
    with pytest.raises(ValueError, match="metric"):
        metrics.choose_threshold([1, 0], [0.9, 0.1], metric="f1")


# --------------------------------------------------------------------------- selections and tables


def test_misclassified_sorted_by_confidence():
    paths = ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"]
    y = [0, 0, 1, 1, 0]
    p = [0.6, 0.95, 0.2, 0.9, 0.1]  # wrong: a (dog 60 %), b (dog 95 %), c (cat 80 %)
    wrong = metrics.misclassified(paths, y, p)
    assert [w[0] for w in wrong] == ["b.jpg", "c.jpg", "a.jpg"]
    assert wrong[0][1:3] == ("cat", "dog") and wrong[1][1:3] == ("dog", "cat")
    assert wrong[1][3] == pytest.approx(0.8)
    assert len(metrics.misclassified(paths, y, p, n=2)) == 2


def test_class_balance_table():
    table = metrics.class_balance_table({"train": {"cat": 900, "dog": 1100}, "test": {"cat": 50, "dog": 50}})
    lines = table.splitlines()
    assert lines[0] == "| split | cat | dog | total | % dog |"
    assert "| train | 900 | 1,100 | 2,000 | 55.0 |" in lines
    assert lines[-1] == "| **all** | 950 | 1,150 | 2,100 | 54.8 |"


def test_ece_bins_are_equal_width_over_zero_one():
    # confidences .55 (right) and .58 (wrong) share the 15-bin interval [8/15, 9/15):
    # one bin, accuracy .5, mean confidence .565 -> ECE .065 (separate bins would give .515)
    assert metrics.expected_calibration_error([1, 1], [0.55, 0.42]) == pytest.approx(0.065)
    bins = metrics.reliability_bins([1, 1], [0.55, 0.42])
    assert bins["count"].tolist() == [0] * 8 + [2] + [0] * 6
    assert metrics.expected_calibration_error([1, 1], [0.55, 0.42], n_bins=100) == pytest.approx(0.515)
