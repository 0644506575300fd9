"""The numbers behind an evaluation: metrics, calibration, thresholds, intervals, model comparisons.

Conventions (see :mod:`catdog.conventions`): label 0 is cat, 1 is dog; the model outputs a
logit and ``p_dog = sigmoid(logit)``. An image is **predicted dog when ``p_dog >= threshold``**,
otherwise cat. Binary metrics that need a positive class (ROC AUC, average precision,
``counts``) treat dog as positive.

Pure NumPy/scikit-learn/SciPy: no TensorFlow, no matplotlib.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import optimize, special, stats
from sklearn import metrics as skm

from catdog.conventions import CLASS_NAMES

LABELS = [0, 1]


# --------------------------------------------------------------------------- logits


def sigmoid(logits: Any) -> np.ndarray:
    """p = 1 / (1 + exp(-logit)) as float64, without overflow for any finite or infinite logit."""
    return special.expit(np.asarray(logits, dtype=np.float64))



# --------------------------------------------------------------------------- validation


def check_labels(y_true: Any, name: str = "y_true") -> np.ndarray:
    """Return ``y_true`` as a 1-D int array of 0/1; ValueError otherwise (including empty)."""
    y = np.asarray(y_true)
    if y.ndim == 2 and 1 in y.shape:  # accept (n, 1) columns
        y = y.reshape(-1)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {np.shape(y_true)}")
    if y.size == 0:
        raise ValueError(f"{name} is empty: nothing to evaluate (need at least one image)")
    if y.dtype.kind not in "biuf" or not np.isin(y, LABELS).all():
        bad = sorted({str(v) for v in np.unique(y) if v not in LABELS})[:5]
        raise ValueError(f"{name} must contain only 0 (cat) and 1 (dog); found {', '.join(bad)}")
    return y.astype(np.int64)


def check_scores(values: Any, n: int, name: str, *, probability: bool) -> np.ndarray:
    """Return ``values`` as 1-D float64 of length ``n``; probabilities must lie in [0, 1]."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 2 and 1 in v.shape:  # accept Keras-style (n, 1) outputs
        v = v.reshape(-1)
    if v.ndim != 1 or v.shape[0] != n:
        raise ValueError(f"{name} must be 1-D with one value per label ({n}), got shape {np.shape(values)}")
    if not np.isfinite(v).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if probability and ((v < 0).any() or (v > 1).any()):
        raise ValueError(f"{name} must be probabilities in [0, 1]; found range [{v.min():g}, {v.max():g}]")
    return v


def check_inputs(y_true: Any, p_dog: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (labels, p_dog) pair; empty input raises ValueError with a clear message."""
    if np.size(y_true) == 0 and np.size(p_dog) == 0:
        raise ValueError("y_true and p_dog are empty: nothing to evaluate (need at least one image)")
    y = check_labels(y_true)
    return y, check_scores(p_dog, len(y), "p_dog", probability=True)


def predict_labels(p_dog: Any, threshold: float = 0.5) -> np.ndarray:
    """0/1 predictions: dog (1) where ``p_dog >= threshold``, else cat (0)."""
    return (np.asarray(p_dog, dtype=np.float64) >= threshold).astype(np.int64)


def prediction_confidence(p_dog: Any, threshold: float = 0.5) -> np.ndarray:
    """Probability the model gives to the class it predicts: p_dog if predicted dog, else 1 - p_dog."""
    p = np.asarray(p_dog, dtype=np.float64)
    return np.where(predict_labels(p, threshold) == 1, p, 1.0 - p)


def percent(p: float | None, decimals: int = 1) -> str:
    """A probability for people: ``0.873`` -> ``"87.3%"``, never a certain ``"100.0%"`` or ``"0.0%"``.

    Values that would round to 100 % or 0 % at ``decimals`` read ``">99.9%"`` / ``"<0.1%"``
    (``">99%"`` / ``"<1%"`` with ``decimals=0``): a calibrated model is never certain, and the
    rounding should not say it is. None or NaN (no confidence, e.g. "neither") reads ``"–"``.
    """
    if p is None or not math.isfinite(float(p)):
        return "–"
    step = 10.0 ** -(decimals + 2)  # one unit of the last shown digit, as a probability
    if p > 1.0 - step:
        return f">{1.0 - step:.{decimals}%}"
    if p < step:
        return f"<{step:.{decimals}%}"
    return f"{p:.{decimals}%}"


# --------------------------------------------------------------------------- calibration error


def reliability_bins(y_true: Any, p_dog: Any, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Per-bin statistics of top-label confidence ``max(p, 1 - p)`` against accuracy.

    Bins are ``n_bins`` equal-width intervals over **[0, 1]** (Guo et al. 2017), so for a
    binary model only the upper half is ever filled; bin ``i`` is ``[i/n, (i+1)/n)``, the last
    one includes 1. Returns ``edges`` (n_bins + 1), and per bin ``count``, ``confidence``
    (mean) and ``accuracy`` (NaN for empty bins).

    Hand-written because ``sklearn.calibration.calibration_curve`` drops empty bins and does
    not return bin counts, which ECE weighting and the confidence histogram both need.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    y, p = check_inputs(y_true, p_dog)
    confidence = np.maximum(p, 1.0 - p)
    correct = ((p >= 0.5).astype(np.int64) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ids = np.clip(np.searchsorted(edges[1:-1], confidence, side="right"), 0, n_bins - 1)
    count = np.bincount(ids, minlength=n_bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(ids, weights=confidence, minlength=n_bins) / count
        accuracy = np.bincount(ids, weights=correct, minlength=n_bins) / count
    return {"edges": edges, "count": count, "confidence": mean_conf, "accuracy": accuracy}


def expected_calibration_error(y_true: Any, p_dog: Any, n_bins: int = 15) -> float:
    """ECE: sum over bins of (bin share of images) * |accuracy - mean confidence|.

    Confidence is that of the predicted class at threshold 0.5, ``max(p, 1 - p)``; bins are
    equal-width over [0, 1] (see :func:`reliability_bins`). Hand-written: scikit-learn has no ECE.
    """
    bins = reliability_bins(y_true, p_dog, n_bins)
    filled = bins["count"] > 0
    weights = bins["count"][filled] / bins["count"].sum()
    gaps = np.abs(bins["accuracy"][filled] - bins["confidence"][filled])
    return float(np.sum(weights * gaps))


# --------------------------------------------------------------------------- metrics


def _none_if_nan(value: Any) -> float | None:
    """Plain float, or None where scikit-learn reports an undefined value as NaN."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def compute_metrics(y_true: Any, p_dog: Any, threshold: float = 0.5) -> dict[str, Any]:
    """All evaluation numbers for one split, as JSON-ready Python types.

    Predicted dog means ``p_dog >= threshold``. Undefined values (ROC AUC and average
    precision with one class present, recall of an absent class, precision of a class never
    predicted) are ``None`` and explained in ``warnings``; macro averages skip them.
    """
    y, p = check_inputs(y_true, p_dog)
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold}")
    y_pred = predict_labels(p, threshold)
    warnings: list[str] = []

    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y, y_pred, labels=LABELS, zero_division=np.nan
    )
    macro = skm.precision_recall_fscore_support(y, y_pred, labels=LABELS, average="macro", zero_division=np.nan)
    per_class = {}
    for i, name in enumerate(CLASS_NAMES):
        per_class[name] = {
            "precision": _none_if_nan(precision[i]),
            "recall": _none_if_nan(recall[i]),
            "f1": _none_if_nan(f1[i]),
            "support": int(support[i]),
        }
        if support[i] == 0:
            warnings.append(f"no {name} images present: {name} recall undefined")
        if not (y_pred == i).any():
            warnings.append(f"no image predicted {name}: {name} precision undefined")

    present = [CLASS_NAMES[c] for c in LABELS if (y == c).any()]
    if len(present) == 2:
        roc_auc = float(skm.roc_auc_score(y, p))
        average_precision = float(skm.average_precision_score(y, p, pos_label=1))
    else:
        roc_auc = average_precision = None
        warnings.append(f"only one class ({present[0]}) present: ROC AUC and average precision undefined")

    cm = skm.confusion_matrix(y, y_pred, labels=LABELS)
    tn, fp, fn, tp = (int(v) for v in cm.ravel())
    return {
        "n_images": int(len(y)),
        "threshold": float(threshold),
        "accuracy": float(skm.accuracy_score(y, y_pred)),
        "accuracy_ci95": accuracy_interval(tp + tn, len(y)),
        "per_class": per_class,
        "macro": {"precision": _none_if_nan(macro[0]), "recall": _none_if_nan(macro[1]), "f1": _none_if_nan(macro[2])},
        "roc_auc": roc_auc,
        "average_precision": average_precision,
        "log_loss": float(skm.log_loss(y, p, labels=LABELS)),
        "brier": float(skm.brier_score_loss(y, p, labels=LABELS)),
        "ece": expected_calibration_error(y, p),
        "confusion_matrix": {"labels": list(CLASS_NAMES), "counts": cm.astype(int).tolist()},
        "counts": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
        "warnings": warnings,
    }


def accuracy_interval(correct: int, n: int, confidence: float = 0.95) -> list[float]:
    """Wilson score interval of an accuracy of ``correct``/``n`` (scipy's binomial test).

    With 3,000 test images around 98.7% accuracy it is about +-0.4 points wide: differences
    between models smaller than that are not established by one test split.
    """
    ci = stats.binomtest(int(correct), int(n)).proportion_ci(confidence, method="wilson")
    return [float(ci.low), float(ci.high)]


def compare_predictions(y_true: Any, pred_a: Any, pred_b: Any) -> dict[str, Any]:
    """McNemar's exact test of two classifiers' predicted labels on the same images.

    Counts the images only A gets right and only B gets right; under "equally accurate" each
    discordant image is a fair coin, so the two-sided binomial p-value of that split is the test
    (sklearn has no McNemar test; scipy's ``binomtest`` does the exact part).
    """
    y, a, b = (np.asarray(v).astype(int).reshape(-1) for v in (y_true, pred_a, pred_b))
    if not (len(y) == len(a) == len(b)):
        raise ValueError(f"lengths differ: {len(y)} labels, {len(a)} and {len(b)} predictions")
    only_a = int(((a == y) & (b != y)).sum())
    only_b = int(((b == y) & (a != y)).sum())
    p = stats.binomtest(only_a, only_a + only_b).pvalue if only_a + only_b else 1.0
    return {"n_images": int(len(y)), "accuracy_a": float((a == y).mean()), "accuracy_b": float((b == y).mean()),
            "only_a_correct": only_a, "only_b_correct": only_b, "p_value": float(p)}


# --------------------------------------------------------------------------- temperature scaling


def _nll(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean binary cross-entropy of sigmoid(logits), computed stably from logits."""
    return float(np.mean(np.logaddexp(0.0, logits) - y * logits))


def fit_temperature(logits: Any, y_true: Any, bounds: tuple[float, float] = (0.02, 50.0)) -> float:
    """Scalar T > 0 minimising the NLL of ``sigmoid(logits / T)`` on validation data.

    Optimises log T with bounded Brent search (scipy ``minimize_scalar``); T > 1 softens an
    over-confident model, T < 1 sharpens an under-confident one. Ranking, ROC and the 0.5
    decision are unchanged by T.
    """
    y = check_labels(y_true)
    z = check_scores(logits, len(y), "logits", probability=False)
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    result = optimize.minimize_scalar(
        lambda log_t: _nll(z / math.exp(log_t), y), bounds=(lo, hi), method="bounded", options={"xatol": 1e-6}
    )
    return float(math.exp(result.x))


def apply_temperature(logits: Any, temperature: float) -> np.ndarray:
    """Calibrated p_dog = sigmoid(logits / T)."""
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive finite number, got {temperature}")
    return sigmoid(np.asarray(logits, dtype=np.float64) / temperature)


# --------------------------------------------------------------------------- threshold


def choose_threshold(
    y_true: Any,
    p_dog: Any,
    *,
    metric: str = "precision",
    target: float = 0.99,
    positive: str = "dog",
) -> float:
    """Threshold t on p_dog (predict dog iff ``p_dog >= t``) meeting ``target`` on validation data.

    Among thresholds where ``metric`` ("precision" or "recall") of class ``positive`` is at
    least ``target``, returns the one with the best other metric (ties: the better ``metric``).
    ValueError if no threshold reaches the target.
    """
    if metric not in ("precision", "recall"):
        raise ValueError(f"metric must be 'precision' or 'recall', got {metric!r}")
    if positive not in CLASS_NAMES:
        raise ValueError(f"positive must be one of {CLASS_NAMES}, got {positive!r}")
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target must be in (0, 1], got {target}")
    y, p = check_inputs(y_true, p_dog)
    is_positive = y == CLASS_NAMES.index(positive)
    if not is_positive.any():
        raise ValueError(f"no {positive} images in y_true: cannot choose a threshold for {positive}")
    # For cat, score with -p rather than 1 - p: same ordering, and -(-p) == p exactly, so the
    # threshold converts back without floating-point round-off.
    score = p if positive == "dog" else -p
    precision, recall, thresholds = skm.precision_recall_curve(is_positive, score, pos_label=True)
    precision, recall = precision[:-1], recall[:-1]  # last point (recall 0) has no threshold
    primary, other = (precision, recall) if metric == "precision" else (recall, precision)
    ok = np.flatnonzero(primary >= target)
    if ok.size == 0:
        raise ValueError(
            f"{positive} {metric} never reaches {target:g} on these {len(y)} images "
            f"(best {primary.max():.4f}); lower the target or use more validation data"
        )
    best = ok[np.lexsort((primary[ok], other[ok]))[-1]]
    if positive == "dog":
        return float(thresholds[best])
    # Predicted cat is p_dog <= c here, and must become p_dog < t: take the next float above c.
    return float(np.nextafter(-thresholds[best], np.inf))


# --------------------------------------------------------------------------- selections and tables


def misclassified(
    paths: Sequence[Any], y_true: Any, p_dog: Any, threshold: float = 0.5, n: int = 16
) -> list[tuple[Any, str, str, float]]:
    """Up to ``n`` wrong predictions as ``(path, true_name, pred_name, confidence)``.

    ``confidence`` is the probability given to the (wrong) predicted class; most confident first.
    """
    y, p = check_inputs(y_true, p_dog)
    if len(paths) != len(y):
        raise ValueError(f"got {len(paths)} paths for {len(y)} labels")
    y_pred = predict_labels(p, threshold)
    conf = prediction_confidence(p, threshold)
    wrong = np.flatnonzero(y_pred != y)
    order = wrong[np.argsort(-conf[wrong], kind="stable")][: max(n, 0)]
    return [(paths[i], CLASS_NAMES[y[i]], CLASS_NAMES[y_pred[i]], float(conf[i])) for i in order]


def class_balance_table(counts: Mapping[str, Mapping[str, int]]) -> str:
    """Markdown table of images per split and class, with totals and the dog share.

    ``counts`` is ``{"train": {"cat": 9000, "dog": 9000}, "validation": {...}, ...}``.
    """
    classes = list(CLASS_NAMES) + sorted({c for row in counts.values() for c in row} - set(CLASS_NAMES))
    lines = [
        "| split | " + " | ".join(classes) + " | total | % dog |",
        "|---|" + "---:|" * (len(classes) + 2),
    ]
    totals = dict.fromkeys(classes, 0)
    for split, row in counts.items():
        values = [int(row.get(c, 0)) for c in classes]
        for c, v in zip(classes, values):
            totals[c] += v
        lines.append(_balance_row(split, values, int(row.get("dog", 0))))
    if len(counts) > 1:
        lines.append(_balance_row("**all**", list(totals.values()), totals["dog"]))
    return "\n".join(lines)


def _balance_row(name: str, values: list[int], dogs: int) -> str:
    """One markdown row: counts, total and percentage of dogs."""
    total = sum(values)
    share = f"{100 * dogs / total:.1f}" if total else "–"
    return f"| {name} | " + " | ".join(f"{v:,}" for v in values) + f" | {total:,} | {share} |"


def threshold_analysis(y_val: Any, p_val: Any, y_test: Any, p_test: Any,
                       targets: Sequence[tuple[str, str, float]] = (("dog", "precision", 0.995),
                                                                     ("cat", "precision", 0.995))) -> list[dict]:
    """Pick thresholds on validation for each (class, metric, target) and report what they do on test."""
    rows = []
    for positive, metric, target in targets:
        try:
            t = choose_threshold(y_val, p_val, metric=metric, target=target, positive=positive)
        except ValueError as exc:
            rows.append({"positive": positive, "metric": metric, "target": target, "error": str(exc)})
            continue
        test = compute_metrics(y_test, p_test, threshold=t)
        rows.append({"positive": positive, "metric": metric, "target": target, "threshold": t,
                     "test_precision": test["per_class"][positive]["precision"],
                     "test_recall": test["per_class"][positive]["recall"], "test_accuracy": test["accuracy"]})
    return rows

