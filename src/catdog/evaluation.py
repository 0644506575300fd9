"""Evaluating a saved cat-vs-dog model: a report folder per split, and model comparisons.

Conventions (see :mod:`catdog.conventions`): label 0 is cat, 1 is dog; the model outputs a
logit and ``p_dog = sigmoid(logit)``. An image is **predicted dog when ``p_dog >= threshold``**,
otherwise cat. The numbers come from :mod:`catdog.metrics`; every model fact (temperature,
threshold, training manifest and history, input size) from a :class:`catdog.bundle.Bundle`.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from catdog import figures
from catdog import paths as catdog_paths
from catdog.bundle import Bundle
from catdog.conventions import CLASS_NAMES
from catdog.data import Item, labels_of, read_manifest
from catdog.images import ImageError, probe
from catdog.inference import predict_logits
from catdog.metrics import (
    apply_temperature,
    check_labels,
    check_scores,
    compare_predictions,
    compute_metrics,
    misclassified,
    percent,
    predict_labels,
    prediction_confidence,
    sigmoid,
    threshold_analysis,
)
from catdog.rendering import overlays as heatmap_overlays

# Files written by write_report; none of them may exist beforehand.
REPORT_FILES = (
    "metrics.json",
    "predictions.csv",
    "confusion_matrix.png",
    "roc.png",
    "pr.png",
    "reliability.png",
    "training_curves.png",
    "misclassified.png",
)


# --------------------------------------------------------------------------- report


def _json_default(obj: Any) -> Any:
    """Make NumPy scalars/arrays and paths JSON-serialisable for ``extra``."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} in report metadata is not JSON-serialisable")


def _write_predictions(path: Path, paths: Sequence[Any], y: np.ndarray, p: np.ndarray, threshold: float) -> None:
    """predictions.csv: one row per input, in input order."""
    y_pred = predict_labels(p, threshold)
    conf = prediction_confidence(p, threshold)
    with open(path, "x", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "p_dog", "predicted", "correct", "confidence"])
        for i, image in enumerate(paths):
            writer.writerow(
                [str(image), CLASS_NAMES[y[i]], f"{p[i]:.6f}", CLASS_NAMES[y_pred[i]], bool(y[i] == y_pred[i]), f"{conf[i]:.6f}"]
            )


def write_report(
    out_dir: str | Path,
    *,
    paths: Sequence[Any],
    y_true: Any,
    logits: Any,
    temperature: float = 1.0,
    threshold: float = 0.5,
    history_csv: str | Path | None = None,
    overlays: Mapping[Any, np.ndarray] | None = None,
    n_gallery: int = 16,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write metrics, per-image predictions and figures for one evaluated split into ``out_dir``.

    Files: metrics.json (calibrated and uncalibrated :func:`catdog.metrics.compute_metrics`, temperature,
    ``extra``), predictions.csv (calibrated p_dog), confusion_matrix.png, roc.png, pr.png,
    reliability.png, training_curves.png (if ``history_csv``) and misclassified.png.
    Never overwrites: raises FileExistsError if ``out_dir`` already holds any of these files
    (make a fresh folder with :func:`catdog.paths.new_run_dir`).
    """
    out_dir = Path(out_dir)
    existing = [name for name in REPORT_FILES if (out_dir / name).exists()]
    if existing:
        raise FileExistsError(
            f"{out_dir} already contains {', '.join(existing)}; refusing to overwrite a report "
            "(use catdog.paths.new_run_dir for a fresh folder)"
        )
    y = check_labels(y_true)
    z = check_scores(logits, len(y), "logits", probability=False)
    if len(paths) != len(y):
        raise ValueError(f"got {len(paths)} paths for {len(y)} labels")
    extra = dict(extra or {})
    clash = {"calibrated", "uncalibrated", "temperature"} & extra.keys()
    if clash:
        raise ValueError(f"extra must not redefine {sorted(clash)}")

    p_raw = sigmoid(z)
    p_cal = apply_temperature(z, temperature)
    report = {
        "calibrated": compute_metrics(y, p_cal, threshold),
        "uncalibrated": compute_metrics(y, p_raw, threshold),
        "temperature": float(temperature),
        **extra,
    }
    text = json.dumps(report, indent=2, default=_json_default)  # fail before writing anything
    catdog_paths.write_new(out_dir / "metrics.json", text + "\n")
    _write_predictions(out_dir / "predictions.csv", paths, y, p_cal, threshold)

    y_pred = predict_labels(p_cal, threshold)
    figures.confusion_matrix_figure(y, y_pred, path=out_dir / "confusion_matrix.png")
    figures.roc_figure(y, p_cal, path=out_dir / "roc.png", threshold=threshold)
    figures.pr_figure(y, p_cal, path=out_dir / "pr.png", threshold=threshold)
    figures.reliability_figure(
        y, p_cal, path=out_dir / "reliability.png", p_uncalibrated=p_raw if temperature != 1.0 else None
    )
    if history_csv is not None:
        figures.training_curves_figure(history_csv, path=out_dir / "training_curves.png")
    wrong = misclassified(paths, y, p_cal, threshold, n=n_gallery)
    figures.gallery_figure(
        [w[0] for w in wrong],
        [f"true {t}, predicted {pr}\n{percent(c, 0)} sure · {Path(str(w)).name}" for w, t, pr, c in wrong],
        path=out_dir / "misclassified.png",
        overlays=overlays,
        suptitle=f"Misclassified images, most confident first ({len(wrong)} shown of "
        f"{int((y_pred != y).sum())} wrong out of {len(y)})",
    )
    return out_dir


# --------------------------------------------------------------------------- one call
log = logging.getLogger(__name__)


def readable_items(items: Sequence[Item]) -> tuple[list[Item], list[dict[str, str]]]:
    """``items`` whose files can be decoded, and ``{"path", "reason"}`` for each one that cannot.

    Checked before the model runs: a file deleted or damaged since the manifest was written
    is reported by name and left out, instead of ending the whole evaluation in tf.data.
    """
    kept, bad = [], []
    for item in items:
        try:
            probe(item.path)
        except ImageError as exc:
            bad.append({"path": item.path, "reason": exc.reason})
            continue
        except Exception as exc:  # noqa: BLE001 - one odd file must not end the evaluation
            bad.append({"path": item.path, "reason": f"{type(exc).__name__}: {exc}"})
            continue
        kept.append(item)
    for entry in bad:
        log.warning("skipped %s: %s", entry["path"], entry["reason"])
    return kept, bad


def _bundle(model: str | Path | Bundle | None) -> Bundle:
    """``model`` as a :class:`~catdog.bundle.Bundle` (a path is loaded; None is the shipped model)."""
    return model if isinstance(model, Bundle) else Bundle.load(model)


def _split_items(bundle: Bundle, manifest: str | Path | None, splits: Sequence[str]) -> tuple[Path, list[list[Item]]]:
    """The manifest (default: the one the model was trained on) and its items for each split, none empty."""
    manifest = Path(manifest) if manifest else bundle.require_manifest()
    items = [read_manifest(manifest, split) for split in splits]
    for split, its in zip(splits, items):
        if not its:
            raise ValueError(f"{manifest}: the {split!r} split is empty")
    return manifest, items


def evaluate(model: str | Path | Bundle | None = None, manifest: str | Path | None = None, *, split: str = "test",
             out_parent: str | Path = "runs/evaluations", out_dir: str | Path | None = None,
             name: str | None = None, heatmaps: bool = True, n_gallery: int = 16,
             image_size: int | None = None) -> Path:
    """Evaluate a saved model (a path or a :class:`~catdog.bundle.Bundle`) on one split; returns a NEW report folder.

    Defaults: the shipped model and the manifest it was trained on. The folder gets
    ``metrics.json`` (calibrated with the model card's temperature, and uncalibrated),
    ``predictions.csv`` and the figures of :func:`write_report`; the misclassification
    gallery shows Grad-CAM overlays when ``heatmaps``. With ``out_dir`` that exact folder is
    used (it must not hold a report yet); otherwise a fresh one is made under ``out_parent``.
    ``image_size`` evaluates the same weights at another input size (default: the trained one).
    """
    bundle = _bundle(model)
    if image_size:
        bundle = bundle.at_input_size(image_size)
    manifest, (items,) = _split_items(bundle, manifest, [split])
    items, unreadable = readable_items(items)
    if not items:
        raise ValueError(f"{manifest}: no file of the {split!r} split can be read ({len(unreadable)} unreadable, "
                         f"e.g. {unreadable[0]['path']}: {unreadable[0]['reason']})")
    temperature, threshold = bundle.temperature, bundle.threshold
    y, logits = labels_of(items), predict_logits(bundle.model, items)
    p = bundle.calibrated(logits)
    extra: dict[str, Any] = {"model": str(bundle.path), "manifest": str(manifest), "split": split,
                             "image_size": bundle.image_size,
                             "n_unreadable": len(unreadable), "unreadable": unreadable}
    if split == "test":
        val_items, _ = readable_items(read_manifest(manifest, "validation"))
        if val_items and len(set(labels_of(val_items))) == 2:
            p_val = bundle.calibrated(predict_logits(bundle.model, val_items))
            extra["threshold_analysis"] = threshold_analysis(labels_of(val_items), p_val, y, p)
    overlays = None
    if heatmaps:
        wrong = [w[0] for w in misclassified([i.path for i in items], y, p, threshold, n=n_gallery)]
        overlays = heatmap_overlays(bundle.explainer, wrong) if wrong else None
    target = Path(out_dir) if out_dir else catdog_paths.new_run_dir(out_parent, name)
    return write_report(target, paths=[i.path for i in items], y_true=y, logits=logits, temperature=temperature,
                        threshold=threshold, history_csv=bundle.history, overlays=overlays, n_gallery=n_gallery,
                        extra=extra)


def _comparison_row(model: str, split: str, y: np.ndarray, p: np.ndarray, threshold: float,
                    first_pred: np.ndarray) -> dict[str, Any]:
    """One model on one split: metrics, interval, errors, McNemar against the first model's predictions."""
    pred = predict_labels(p, threshold)
    m = compute_metrics(y, p, threshold)
    return {"model": model, "split": split, "accuracy": m["accuracy"], "accuracy_ci95": m["accuracy_ci95"],
            "errors": int((pred != y).sum()), "log_loss": m["log_loss"], "roc_auc": m["roc_auc"], "ece": m["ece"],
            "vs_first": compare_predictions(y, first_pred, pred)}


def compare_models(models: Sequence[str | Path | Bundle], manifest: str | Path | None = None, *,
                   splits: Sequence[str] = ("validation", "test"), out_parent: str | Path = "runs/comparisons",
                   out_dir: str | Path | None = None, name: str | None = None) -> Path:
    """Compare saved models (paths or bundles) on the same images; returns a NEW folder with ``comparison.json``/``.md``.

    Per split and model: the metrics (calibrated with each model's own card), the accuracy's 95%
    interval, and McNemar's exact test against the first model, so a difference can be told
    from split noise. With several models, also their ensemble (mean calibrated logit,
    threshold 0.5) and the images every model gets wrong (listed, and shown in
    ``wrong_by_all_<split>.png``): the hard core no model here fixes. Default manifest: the first model's.
    """
    if not models:
        raise ValueError("no models to compare")
    if out_dir and (Path(out_dir) / "comparison.json").exists():  # fail before the slow part
        raise FileExistsError(f"{out_dir} already holds a comparison; refusing to overwrite it")
    bundles = [_bundle(m) for m in models]
    manifest, split_items = _split_items(bundles[0], manifest, splits)
    items = dict(zip(splits, split_items))
    rows, first_pred = [], {}
    scaled: dict[str, list[np.ndarray]] = {split: [] for split in splits}  # logit / T per model
    wrong: dict[str, list[np.ndarray]] = {split: [] for split in splits}
    for bundle in bundles:
        for split, its in items.items():
            y, z = labels_of(its), predict_logits(bundle.model, its) / bundle.temperature
            p = sigmoid(z)
            pred = predict_labels(p, bundle.threshold)
            rows.append(_comparison_row(str(bundle.path), split, y, p, bundle.threshold,
                                        first_pred.setdefault(split, pred)))
            scaled[split].append(z)
            wrong[split].append(pred != y)
    report: dict[str, Any] = {"manifest": str(manifest), "splits": list(splits), "rows": rows}
    target = Path(out_dir) if out_dir else catdog_paths.new_run_dir(out_parent, name)
    target.mkdir(parents=True, exist_ok=True)
    if len(bundles) > 1:
        report["wrong_by_all"] = {}
        for split, its in items.items():
            y, z = labels_of(its), np.mean(scaled[split], axis=0)
            rows.append(_comparison_row(f"ensemble of {len(bundles)} (mean calibrated logit)", split, y,
                                        sigmoid(z), 0.5, first_pred[split]))
            hard = np.flatnonzero(np.all(wrong[split], axis=0))
            report["wrong_by_all"][split] = [its[i].path for i in hard]
            figures.gallery_figure([its[i].path for i in hard],
                                   [f"true {its[i].label} · mean p(dog) {percent(sigmoid(z[i]), 0)}\n"
                                    f"{Path(its[i].path).name}" for i in hard],
                                   path=target / f"wrong_by_all_{split}.png", ncols=6,
                                   suptitle=f"{split}: {len(hard)} images every model gets wrong")
    catdog_paths.write_new(target / "comparison.json", json.dumps(report, indent=2) + "\n")
    (target / "comparison.md").write_text(_comparison_markdown(report))
    return target


def _comparison_markdown(report: dict[str, Any]) -> str:
    lines = [f"Manifest: `{report['manifest']}`", "",
             "| model | split | accuracy (95% interval) | errors | log loss | ROC AUC | "
             "vs first: only first right / only this right (McNemar p) |", "|---|---|---|---:|---:|---:|---|"]
    for r in report["rows"]:
        v, (lo, hi) = r["vs_first"], r["accuracy_ci95"]
        auc = "–" if r["roc_auc"] is None else f"{r['roc_auc']:.4f}"  # one class only: undefined
        lines.append(f"| {r['model']} | {r['split']} | {r['accuracy']:.2%} ({lo:.2%}–{hi:.2%}) | {r['errors']} | "
                     f"{r['log_loss']:.4f} | {auc} | "
                     f"{v['only_a_correct']} / {v['only_b_correct']} (p = {v['p_value']:.2g}) |")
    for split, hard in report.get("wrong_by_all", {}).items():
        lines += ["", f"{split}: {len(hard)} images every model gets wrong (`wrong_by_all_{split}.png`)"]
        lines += [f"- `{path}`" for path in hard]
    return "\n".join(lines) + "\n"
