"""Tests for catdog.evaluation: metrics against hand-computed values, calibration, thresholds, reports."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from catdog import evaluation as ev
from catdog.paths import data_mirror

# --------------------------------------------------------------------------- sigmoid / logit


def test_sigmoid_and_logit_are_safe_and_inverse():
    z = np.array([-1000.0, -5.0, 0.0, 5.0, 1000.0])
    with np.errstate(all="raise"):
        p = ev.sigmoid(z)
        back = ev.logit(np.array([0.0, 0.25, 0.5, 1.0]))
    assert p[0] == 0.0 and p[2] == 0.5 and p[-1] == 1.0
    assert np.isfinite(back).all() and back[0] < -20 and back[-1] > 20
    assert back[1] == pytest.approx(math.log(0.25 / 0.75))
    np.testing.assert_allclose(ev.logit(ev.sigmoid(z[1:-1])), z[1:-1], atol=1e-9)


# --------------------------------------------------------------------------- compute_metrics


def test_perfect_model():
    m = ev.compute_metrics([0, 0, 1, 1], [0.0, 0.0, 1.0, 1.0])
    assert m["accuracy"] == 1.0
    assert m["roc_auc"] == 1.0 and m["average_precision"] == 1.0
    assert m["log_loss"] == pytest.approx(0.0, abs=1e-9)
    assert m["brier"] == 0.0 and m["ece"] == 0.0
    assert m["counts"] == {"tp": 2, "fp": 0, "tn": 2, "fn": 0}
    assert m["warnings"] == []


def test_all_wrong_model():
    m = ev.compute_metrics([0, 0, 1, 1], [0.9, 0.8, 0.1, 0.2])
    assert m["accuracy"] == 0.0
    assert m["roc_auc"] == 0.0
    assert m["counts"] == {"tp": 0, "fp": 2, "tn": 0, "fn": 2}
    assert m["confusion_matrix"] == {"labels": ["cat", "dog"], "counts": [[0, 2], [2, 0]]}
    assert m["per_class"]["dog"]["precision"] == 0.0 and m["per_class"]["cat"]["recall"] == 0.0


def test_six_sample_case_by_hand():
    y = [0, 0, 0, 1, 1, 1]
    p = [0.10, 0.65, 0.70, 0.35, 0.90, 0.95]
    # threshold 0.5 -> predicted [cat, dog, dog, cat, dog, dog]
    m = ev.compute_metrics(y, p)
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
    assert ev.expected_calibration_error(y, p) == pytest.approx(0.375)
    assert m["warnings"] == []
    json.dumps(m)  # plain Python types only


def test_accuracy_interval_is_the_wilson_interval():
    k, n, z = 2963, 3001, 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low, high = ev.accuracy_interval(k, n)
    assert low == pytest.approx(centre - half, abs=1e-9) and high == pytest.approx(centre + half, abs=1e-9)
    assert 0.982 < low < p < high < 0.991  # ~+-0.4 points at this size
    assert ev.compute_metrics([0, 1, 1, 0], [0.2, 0.9, 0.3, 0.4])["accuracy_ci95"] == pytest.approx(
        ev.accuracy_interval(3, 4))


def test_compare_predictions_is_mcnemars_exact_test():
    y = np.array([0] * 20 + [1] * 20)
    a, b = y.copy(), y.copy()
    b[:8] = 1  # 8 images only A gets right
    a[20] = 0  # 1 image only B gets right
    a[30], b[30] = 0, 0  # both wrong: not discordant, does not count
    result = ev.compare_predictions(y, a, b)
    assert (result["only_a_correct"], result["only_b_correct"]) == (8, 1)
    assert result["p_value"] == pytest.approx(2 * (1 + 9) / 2**9)  # two-sided, P(X <= 1 | n=9, 1/2) doubled
    assert ev.compare_predictions(y, a, a)["p_value"] == 1.0
    with pytest.raises(ValueError, match="lengths differ"):
        ev.compare_predictions(y, a[:-1], b)


def test_threshold_changes_predictions():
    y, p = [0, 0, 0, 1, 1, 1], [0.10, 0.65, 0.70, 0.35, 0.90, 0.95]
    m = ev.compute_metrics(y, p, threshold=0.8)  # predicted dog only for 0.90 and 0.95
    assert m["counts"] == {"tp": 2, "fp": 0, "tn": 3, "fn": 1}
    assert m["threshold"] == 0.8


def test_one_class_only_does_not_crash():
    m = ev.compute_metrics([0, 0, 0], [0.1, 0.7, 0.2])
    assert m["roc_auc"] is None and m["average_precision"] is None
    assert any("only one class (cat) present" in w and "ROC AUC" in w for w in m["warnings"])
    assert m["per_class"]["dog"]["recall"] is None  # no dogs: undefined, not 0
    assert m["per_class"]["dog"]["support"] == 0
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["macro"]["recall"] == pytest.approx(2 / 3)  # undefined dog recall is skipped
    assert m["confusion_matrix"]["counts"] == [[2, 1], [0, 0]]
    json.dumps(m)

    dogs = ev.compute_metrics([1, 1], [0.9, 0.8])
    assert dogs["roc_auc"] is None
    assert any("only one class (dog) present" in w for w in dogs["warnings"])


def test_invalid_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="empty"):
        ev.compute_metrics([], [])
    with pytest.raises(ValueError, match="one value per label"):
        ev.compute_metrics([0, 1, 1], [0.2, 0.8])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ev.compute_metrics([0, 1], [0.2, 1.3])
    with pytest.raises(ValueError, match="only 0 \\(cat\\) and 1 \\(dog\\)"):
        ev.compute_metrics([0, 2], [0.2, 0.8])
    with pytest.raises(ValueError, match="NaN"):
        ev.compute_metrics([0, 1], [0.2, float("nan")])


def test_keras_shaped_column_inputs_are_accepted():
    m = ev.compute_metrics(np.array([[0], [1]]), np.array([[0.2], [0.7]], dtype=np.float32))
    assert m["accuracy"] == 1.0


# --------------------------------------------------------------------------- temperature scaling


def _overconfident(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(z), and logits 5 * z + noise: a model five times too sure."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, n)
    y = (rng.random(n) < ev.sigmoid(z)).astype(int)
    return 5.0 * z + rng.normal(0.0, 0.5, n), y


def test_temperature_scaling_fixes_overconfidence():
    logits, y = _overconfident()
    t = ev.fit_temperature(logits, y)
    assert 3.5 < t < 7.5  # the true factor is 5
    before = ev.compute_metrics(y, ev.sigmoid(logits))
    after = ev.compute_metrics(y, ev.apply_temperature(logits, t))
    assert after["log_loss"] < before["log_loss"] - 0.1
    assert after["ece"] < before["ece"]
    assert after["accuracy"] == before["accuracy"]  # T never changes the 0.5 decision
    with pytest.raises(ValueError):
        ev.apply_temperature(logits, 0.0)


# --------------------------------------------------------------------------- choose_threshold


@pytest.mark.parametrize("positive", ["dog", "cat"])
@pytest.mark.parametrize("metric,target", [("precision", 0.95), ("recall", 0.98)])
def test_choose_threshold_reaches_target_and_is_best(positive, metric, target):
    logits, y = _overconfident(n=600, seed=1)
    p = ev.apply_temperature(logits, 5.0)
    t = ev.choose_threshold(y, p, metric=metric, target=target, positive=positive)
    other = "recall" if metric == "precision" else "precision"
    got = ev.compute_metrics(y, p, threshold=t)["per_class"][positive]
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
        ev.choose_threshold([1, 0, 1, 0], [0.2, 0.9, 0.1, 0.8], target=0.99)
    with pytest.raises(ValueError, match="metric"):
        ev.choose_threshold([1, 0], [0.9, 0.1], metric="f1")


# --------------------------------------------------------------------------- selections and tables


def test_misclassified_sorted_by_confidence():
    paths = ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"]
    y = [0, 0, 1, 1, 0]
    p = [0.6, 0.95, 0.2, 0.9, 0.1]  # wrong: a (dog 60 %), b (dog 95 %), c (cat 80 %)
    wrong = ev.misclassified(paths, y, p)
    assert [w[0] for w in wrong] == ["b.jpg", "c.jpg", "a.jpg"]
    assert wrong[0][1:3] == ("cat", "dog") and wrong[1][1:3] == ("dog", "cat")
    assert wrong[1][3] == pytest.approx(0.8)
    assert len(ev.misclassified(paths, y, p, n=2)) == 2


def test_class_balance_table():
    table = ev.class_balance_table({"train": {"cat": 900, "dog": 1100}, "test": {"cat": 50, "dog": 50}})
    lines = table.splitlines()
    assert lines[0] == "| split | cat | dog | total | % dog |"
    assert "| train | 900 | 1,100 | 2,000 | 55.0 |" in lines
    assert lines[-1] == "| **all** | 950 | 1,150 | 2,100 | 54.8 |"


# --------------------------------------------------------------------------- write_report


def _real_photos(n_per_class: int = 6) -> list[Path]:
    root = data_mirror()
    if root is None or not (root / "Cat").is_dir():
        pytest.skip("shared PetImages not available")
    return [
        p
        for cls in ("Cat", "Dog")
        for p in sorted((root / cls).glob("*.jpg"), key=lambda q: int(q.stem) if q.stem.isdigit() else 0)[:n_per_class]
    ]


def test_write_report(tmp_path):
    photos = _real_photos()
    y = np.array([0] * 6 + [1] * 6)
    logits = np.array([-4.0, -2.5, 3.0, -1.0, 1.5, -6.0, 5.0, 2.0, -3.5, -0.5, 4.0, 7.0])  # 4 wrong
    history = tmp_path / "history.csv"
    history.write_text(
        "epoch,phase,accuracy,loss,val_accuracy,val_loss,learning_rate\n"
        + "".join(
            f"{e},{'head' if e < 3 else 'finetune'},{0.8 + 0.03 * e},{0.5 - 0.05 * e},{0.82 + 0.02 * e},"
            f"{0.45 - 0.03 * e},0.001\n"
            for e in range(6)
        )
    )
    overlay = {str(photos[2]): np.zeros((40, 60, 3), dtype=np.uint8)}
    out = tmp_path / "run"
    result = ev.write_report(
        out, paths=photos, y_true=y, logits=logits, temperature=2.0, history_csv=history,
        overlays=overlay, extra={"model": "test", "split": "test"},
    )
    assert result == out
    for name in ev.REPORT_FILES:
        assert (out / name).stat().st_size > 0, name

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["temperature"] == 2.0 and metrics["model"] == "test"
    assert metrics["calibrated"]["accuracy"] == pytest.approx(8 / 12)
    assert metrics["uncalibrated"]["accuracy"] == pytest.approx(8 / 12)
    assert metrics["calibrated"]["log_loss"] != pytest.approx(metrics["uncalibrated"]["log_loss"])

    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "label", "p_dog", "predicted", "correct", "confidence"]
    assert [r["path"] for r in rows] == [str(p) for p in photos]
    assert [r["label"] for r in rows] == ["cat"] * 6 + ["dog"] * 6
    p_cal = ev.apply_temperature(logits, 2.0)
    np.testing.assert_allclose([float(r["p_dog"]) for r in rows], p_cal, atol=1e-6)
    assert [r["predicted"] for r in rows] == ["dog" if q >= 0.5 else "cat" for q in p_cal]
    assert [r["correct"] for r in rows].count("False") == 4
    np.testing.assert_allclose([float(r["confidence"]) for r in rows], np.maximum(p_cal, 1 - p_cal), atol=1e-6)

    before = (out / "metrics.json").read_bytes()
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        ev.write_report(out, paths=photos, y_true=y, logits=-logits)
    assert (out / "metrics.json").read_bytes() == before


def test_write_report_without_history_and_with_bad_inputs(tmp_path):
    out = tmp_path / "r"
    ev.write_report(out, paths=["missing-1.jpg", "missing-2.jpg"], y_true=[0, 1], logits=[2.0, -2.0])
    assert (out / "misclassified.png").stat().st_size > 0  # unreadable files become placeholders
    assert not (out / "training_curves.png").exists()
    with pytest.raises(ValueError, match="paths"):
        ev.write_report(tmp_path / "r2", paths=["a.jpg"], y_true=[0, 1], logits=[2.0, -2.0])
    with pytest.raises(ValueError, match="extra"):
        ev.write_report(tmp_path / "r3", paths=["a.jpg"], y_true=[0], logits=[2.0], extra={"temperature": 3})


def test_ece_bins_are_equal_width_over_zero_one():
    # confidences .55 (right) and .58 (wrong) share the 15-bin interval [8/15, 9/15):
    # one bin, accuracy .5, mean confidence .565 -> ECE .065 (separate bins would give .515)
    assert ev.expected_calibration_error([1, 1], [0.55, 0.42]) == pytest.approx(0.065)
    bins = ev.reliability_bins([1, 1], [0.55, 0.42])
    assert bins["count"].tolist() == [0] * 8 + [2] + [0] * 6
    assert ev.expected_calibration_error([1, 1], [0.55, 0.42], n_bins=100) == pytest.approx(0.515)
