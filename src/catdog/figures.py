"""Figures for evaluation reports and notebooks.

Every function builds a :class:`matplotlib.figure.Figure` directly (no ``pyplot`` state, no
``matplotlib.use``), returns it, and saves a PNG at :data:`DPI` when ``path`` is given. Such
figures need no GUI backend, so they work in tests and scripts, never pile up as open pyplot
windows, and still display inline in Jupyter when returned as a cell's last value.
Where scikit-learn has a display (confusion matrix, ROC, precision-recall) it draws the plot.
"""

from __future__ import annotations

import csv
import functools
import math
import textwrap
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import font_manager
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.ft2font import FT2Font
from matplotlib.ticker import MaxNLocator, PercentFormatter
from PIL import Image
from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

from catdog.conventions import CLASS_NAMES
from catdog.datasets import Augmentation  # TensorFlow; figures are drawn where it is loaded anyway
from catdog.gradcam import METHODS, CamExplainer, cam_method, method_label
from catdog.images import load_batch, load_original
from catdog.metrics import LABELS, check_inputs, expected_calibration_error, predict_labels, reliability_bins
from catdog.metrics import apply_temperature, percent
from catdog.rendering import colormap_rgb, render

DPI = 120
CLASS_COLORS = {"cat": "#E69F00", "dog": "#0072B2"}  # Okabe-Ito: distinguishable with colour blindness
COLORBAR_LABEL = "attention (0–1)"
# Below 7x7 (MobileNetV2's map at 224 px) a map has too few cells to point at an animal: at
# 96 px it is 3x3, and the upsampled overlay is a blur over the whole photo.
MIN_FEATURE_MAP = 7
WARNING_COLOR = "#B00020"
PathLike = str | Path


def _finish(fig: Figure, path: PathLike | None) -> Figure:
    """Save ``fig`` as PNG when ``path`` is given (creating parent folders) and return it."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=DPI, format="png", facecolor="white")
    return fig


def _message(ax: Any, text: str) -> None:
    """Write a centred note on an otherwise empty axes (used when a plot is undefined)."""
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=11, color="0.3", transform=ax.transAxes)


def _one_class(y: np.ndarray) -> str | None:
    """Name of the only class present, or None when both are."""
    present = np.unique(y)
    return CLASS_NAMES[int(present[0])] if len(present) == 1 else None


# --------------------------------------------------------------------------- classification plots


def confusion_matrix_figure(y_true: Any, y_pred: Any, path: PathLike | None = None) -> Figure:
    """Two panels: raw counts and row-normalised shares (rows = true class, columns = predicted)."""
    y = np.asarray(y_true).astype(int).ravel()
    yp = np.asarray(y_pred).astype(int).ravel()
    if y.size == 0 or y.shape != yp.shape:
        raise ValueError(f"y_true and y_pred must be non-empty and equally long, got {y.shape} and {yp.shape}")
    fig = Figure(figsize=(10, 4.4), layout="constrained")
    ax_counts, ax_norm = fig.subplots(1, 2)
    common = dict(labels=LABELS, display_labels=list(CLASS_NAMES), cmap="Blues", colorbar=False,
                  text_kw={"fontsize": 14})
    ConfusionMatrixDisplay.from_predictions(y, yp, ax=ax_counts, values_format=",d", **common)
    ConfusionMatrixDisplay.from_predictions(
        y, yp, ax=ax_norm, normalize="true", values_format=".1%", im_kw={"vmin": 0, "vmax": 1}, **common
    )
    ax_counts.set_title("Counts")
    ax_norm.set_title("Share of each true class (row-normalised)")
    for ax in (ax_counts, ax_norm):
        ax.set_xlabel("Predicted class")
        ax.set_ylabel("True class")
    fig.suptitle(f"Confusion matrix: {y.size:,} images, accuracy {np.mean(y == yp):.1%}", fontsize=13)
    return _finish(fig, path)


def _operating_point(y: np.ndarray, p: np.ndarray, threshold: float) -> tuple[float, float, float]:
    """(false positive rate, recall, precision) for dog at ``threshold``; NaN where undefined."""
    pred = predict_labels(p, threshold) == 1
    fpr = pred[y == 0].mean() if (y == 0).any() else math.nan
    tpr = pred[y == 1].mean() if (y == 1).any() else math.nan
    precision = (y[pred] == 1).mean() if pred.any() else math.nan
    return float(fpr), float(tpr), float(precision)


def roc_figure(y_true: Any, p_dog: Any, path: PathLike | None = None, *, threshold: float | None = 0.5) -> Figure:
    """ROC curve for dog as positive class, AUC in the legend, chance diagonal, operating point."""
    y, p = check_inputs(y_true, p_dog)
    fig = Figure(figsize=(5.6, 5.2), layout="constrained")
    ax = fig.subplots()
    only = _one_class(y)
    if only:
        _message(ax, f"ROC curve undefined:\nonly {only} images present")
    else:
        RocCurveDisplay.from_predictions(y, p, pos_label=1, name="model", ax=ax, plot_chance_level=True)
        if threshold is not None:
            fpr, tpr, _ = _operating_point(y, p, threshold)
            ax.plot(fpr, tpr, "o", color="crimson", ms=8,
                    label=f"threshold {threshold:.2f}: TPR {tpr:.1%}, FPR {fpr:.1%}")
        ax.legend(loc="lower right")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("False positive rate (cats predicted dog)")
    ax.set_ylabel("True positive rate (dogs predicted dog)")
    ax.set_title(f"ROC curve, dog as positive class ({y.size:,} images)")
    return _finish(fig, path)


def pr_figure(y_true: Any, p_dog: Any, path: PathLike | None = None, *, threshold: float | None = 0.5) -> Figure:
    """Precision-recall curve for dog, average precision in the legend, chance level, operating point."""
    y, p = check_inputs(y_true, p_dog)
    fig = Figure(figsize=(5.6, 5.2), layout="constrained")
    ax = fig.subplots()
    only = _one_class(y)
    if only:
        _message(ax, f"Precision-recall curve undefined:\nonly {only} images present")
    else:
        PrecisionRecallDisplay.from_predictions(y, p, pos_label=1, name="model", ax=ax, plot_chance_level=True)
        if threshold is not None:
            _, recall, precision = _operating_point(y, p, threshold)
            ax.plot(recall, precision, "o", color="crimson", ms=8,
                    label=f"threshold {threshold:.2f}: precision {precision:.1%}, recall {recall:.1%}")
        ax.legend(loc="lower left")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("Recall (share of dogs predicted dog)")
    ax.set_ylabel("Precision (share of dog predictions that are dogs)")
    ax.set_title(f"Precision-recall, dog as positive class ({y.size:,} images)")
    return _finish(fig, path)


def reliability_figure(
    y_true: Any,
    p_dog: Any,
    n_bins: int = 15,
    path: PathLike | None = None,
    *,
    p_uncalibrated: Any | None = None,
) -> Figure:
    """Reliability diagram (confidence of the predicted class vs accuracy) over a confidence histogram.

    Drawn from :func:`catdog.metrics.reliability_bins`, the same bins as the ECE in the
    title, rather than ``CalibrationDisplay``, which plots p(dog) per bin: the diagram then
    shows exactly what the ECE measures. ``p_uncalibrated`` adds the pre-calibration curve.
    """
    y, p = check_inputs(y_true, p_dog)
    series = [("calibrated" if p_uncalibrated is not None else "model", p, "#0072B2", "o")]
    if p_uncalibrated is not None:
        series.append(("uncalibrated", check_inputs(y, p_uncalibrated)[1], "#D55E00", "s"))

    fig = Figure(figsize=(6.4, 7), layout="constrained")
    ax, ax_hist = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1.3])
    lo = float(np.linspace(0, 1, n_bins + 1)[n_bins // 2])  # lower edge of the bin holding 0.5
    ax.plot([lo, 1], [lo, 1], "--", color="0.4", label="perfectly calibrated")
    eces, lowest = [], lo
    for k, (name, probs, color, marker) in enumerate(series):
        bins = reliability_bins(y, probs, n_bins)
        ece = expected_calibration_error(y, probs, n_bins)
        eces.append(ece)
        filled = bins["count"] > 0
        ax.plot(bins["confidence"][filled], bins["accuracy"][filled], marker=marker, color=color,
                label=f"{name} (ECE {ece:.3f})")
        lowest = min(lowest, float(np.nanmin(bins["accuracy"])))
        width = np.diff(bins["edges"])
        share = bins["count"] / bins["count"].sum()
        if k == 0:
            bars = ax_hist.bar(bins["edges"][:-1], share, width=width, align="edge", color=color, alpha=0.6,
                               edgecolor="white", label=name)
            ax_hist.bar_label(bars, labels=[f"{c:,}" if c else "" for c in bins["count"]], fontsize=7, padding=1)
        else:
            ax_hist.stairs(share, bins["edges"], color=color, linewidth=1.5, label=name)
    ax.set_xlim(lo, 1.0)
    ax.set_ylim(max(0.0, lowest - 0.05), 1.01)
    ax.set_ylabel("Accuracy in bin")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    ax.set_title(f"{n_bins} equal-width confidence bins over [0, 1]; points = mean confidence vs accuracy",
                 fontsize=9, color="0.3")
    ax_hist.set_ylim(0, ax_hist.get_ylim()[1] * 1.2)
    ax_hist.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax_hist.set_ylabel("Images (numbers = count)")
    ax_hist.set_xlabel("Confidence of the predicted class (cat or dog)")
    if len(series) > 1:
        ax_hist.legend(loc="upper left", fontsize=8)
    title = f"Reliability diagram: ECE {eces[0]:.3f}"
    if len(eces) > 1:
        title += f" (uncalibrated {eces[1]:.3f})"
    fig.suptitle(f"{title}, {y.size:,} images", fontsize=13)
    return _finish(fig, path)


# --------------------------------------------------------------------------- training history


def _read_history(history: Any) -> dict[str, list[Any]]:
    """History as ``{column: values}`` from a CSV path, a pandas DataFrame or a dict of lists."""
    if isinstance(history, (str, Path)):
        with open(history, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        columns = list(rows[0]) if rows else []
        return {c: [row.get(c) for row in rows] for c in columns}
    if hasattr(history, "to_dict"):  # pandas DataFrame, without making pandas a dependency
        return {str(k): list(v) for k, v in history.to_dict(orient="list").items()}
    return {str(k): list(v) for k, v in dict(history).items()}


def _floats(values: Sequence[Any]) -> np.ndarray:
    """Numbers from CSV strings or objects; blanks and junk become NaN."""
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            pass
    return out


def training_curves_figure(history_csv_or_dataframe: Any, path: PathLike | None = None) -> Figure:
    """Accuracy and loss per epoch, train vs validation, with the start of fine-tuning marked.

    Expects columns ``epoch, phase, accuracy, loss, val_accuracy, val_loss`` (epoch global and
    0-based, phase "head" or "finetune"); any of them may be missing.
    """
    data = _read_history(history_csv_or_dataframe)
    n = max((len(v) for v in data.values()), default=0)
    epoch = _floats(data["epoch"]) if "epoch" in data else np.arange(n, dtype=float)
    phase = [str(v).strip().lower() for v in data.get("phase", [])]
    fig = Figure(figsize=(12, 4.6), layout="constrained")
    axes = fig.subplots(1, 2)
    finetune_start = None
    if "finetune" in phase and phase.index("finetune") > 0:
        finetune_start = epoch[phase.index("finetune")] - 0.5

    for ax, metric in zip(axes, ("accuracy", "loss")):
        best = np.nanargmax if metric == "accuracy" else np.nanargmin
        drawn = False
        for column, name, color, marker in ((metric, "train", "#0072B2", "o"),
                                            (f"val_{metric}", "validation", "#D55E00", "s")):
            values = _floats(data[column]) if column in data else np.full(n, np.nan)
            ok = np.isfinite(values) & np.isfinite(epoch)
            if not ok.any():
                continue
            if name == "validation":
                i = best(np.where(ok, values, np.nan))
                label = f"{name} (best {values[i]:.3f} at epoch {epoch[i]:g})"
            else:
                label = f"{name} (last {values[ok][-1]:.3f})"
            ax.plot(epoch[ok], values[ok], marker=marker, ms=4, color=color, label=label)
            drawn = True
        if finetune_start is not None:
            ax.axvspan(finetune_start, np.nanmax(epoch) + 0.5, color="0.93", zorder=0)
            ax.axvline(finetune_start, color="0.35", linestyle=":")
            ax.text(finetune_start, 0.98, " fine-tuning starts", transform=ax.get_xaxis_transform(),
                    va="top", ha="left", fontsize=9, color="0.25")
        if drawn:  # legend below the panel, so it never hides curves or the fine-tuning label
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
        else:
            _message(ax, f"no {metric} recorded in the history")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.set_xlabel("Epoch")
        ax.set_ylabel(metric.capitalize())
        ax.set_title(metric.capitalize())
    counts = {name: phase.count(name) for name in ("head", "finetune")}
    detail = f" (head {counts['head']}, fine-tune {counts['finetune']})" if phase else ""
    fig.suptitle(f"Training curves: {n} epochs{detail}", fontsize=13)
    return _finish(fig, path)


# --------------------------------------------------------------------------- image grids


def gallery_figure(
    paths: Sequence[PathLike],
    titles: Sequence[str],
    path: PathLike | None = None,
    overlays: Mapping[Any, np.ndarray] | None = None,
    ncols: int = 4,
    *,
    suptitle: str | None = None,
    max_side: int = 384,
) -> Figure:
    """Grid of images with a title each; ``overlays[p]`` (RGB uint8, e.g. Grad-CAM) replaces photo ``p``.

    Files that cannot be read show a grey placeholder with the reason instead of raising.
    """
    if len(titles) != len(paths):
        raise ValueError(f"got {len(titles)} titles for {len(paths)} images")
    lookup = {str(Path(k)): v for k, v in (overlays or {}).items()}
    # Only the originals are shown: the model input load_batch also decodes is kept at 1 px (cheap).
    batch = load_batch([p for p in paths if str(Path(p)) not in lookup], 1, originals=True, max_side=max_side)
    lookup.update((str(p), image) for p, image in zip(batch.paths, batch.originals))
    reasons = {str(p): reason for p, reason in batch.errors}
    n = len(paths)
    cols = max(1, min(ncols, n))
    rows = max(1, math.ceil(n / cols))
    fig = Figure(figsize=(3.1 * cols, 3.2 * rows + (0.5 if suptitle else 0)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    if n == 0:
        _message(axes[0], "no images to show")
        axes[0].set_axis_off()
    for ax, image_path, title in zip(axes, paths, titles):
        ax.set_title(printable(title), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        key = str(Path(image_path))
        if key in lookup:
            ax.imshow(lookup[key])
            ax.set_axis_off()
        else:
            ax.set_facecolor("0.9")
            _message(ax, "cannot show image\n" + textwrap.fill(reasons[key], 30))
    for ax in axes[n:]:
        ax.set_axis_off()
    if suptitle:
        fig.suptitle(suptitle, fontsize=12)
    return _finish(fig, path)


def _label_indices(labels: Sequence[Any]) -> np.ndarray:
    """Labels as 0/1 whether given as ints or class names."""
    return np.array([CLASS_NAMES.index(v) if isinstance(v, str) else int(v) for v in labels], dtype=int)


def sample_grid_figure(
    paths: Sequence[PathLike], labels: Sequence[Any], n: int = 16, seed: int = 0, path: PathLike | None = None
) -> Figure:
    """A random sample of ``n`` images, half per class where possible, titled with class names (cats first)."""
    y = _label_indices(labels)
    if len(y) != len(paths):
        raise ValueError(f"got {len(labels)} labels for {len(paths)} paths")
    rng = np.random.default_rng(seed)
    pools = [rng.permutation(np.flatnonzero(y == c)) for c in LABELS]
    take = [min(n // 2, len(pool)) for pool in pools]
    short = n - sum(take)  # fill from the other class when one is small
    for c in LABELS:
        extra = min(short, len(pools[c]) - take[c])
        take[c] += extra
        short -= extra
    chosen = [i for c in LABELS for i in pools[c][: take[c]]]
    titles = [f"{CLASS_NAMES[y[i]]} · {Path(str(paths[i])).name}" for i in chosen]
    suptitle = f"Random sample (seed {seed}): {take[0]} cats, {take[1]} dogs of {len(y):,} images"
    return gallery_figure([paths[i] for i in chosen], titles, path=path, suptitle=suptitle)


def class_balance_figure(counts: Mapping[str, Mapping[str, int]], path: PathLike | None = None) -> Figure:
    """Grouped bars: images per split (x) and class (colour), with the count on each bar.

    The same numbers as text: :func:`catdog.metrics.class_balance_table`.
    """
    splits = list(counts)
    classes = list(CLASS_NAMES) + sorted({c for row in counts.values() for c in row} - set(CLASS_NAMES))
    fig = Figure(figsize=(max(5.5, 2.2 * len(splits) + 1.5), 4.6), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(splits))
    width = 0.8 / len(classes)
    for k, name in enumerate(classes):
        values = [int(counts[s].get(name, 0)) for s in splits]
        bars = ax.bar(x + (k - (len(classes) - 1) / 2) * width, values, width, label=name,
                      color=CLASS_COLORS.get(name))
        ax.bar_label(bars, labels=[f"{v:,}" for v in values], padding=2, fontsize=9)
    totals = [sum(int(v) for v in counts[s].values()) for s in splits]
    ax.set_xticks(x, [f"{s}\n({t:,} images)" for s, t in zip(splits, totals)])
    ax.set_ylim(0, ax.get_ylim()[1] * 1.12)  # room for the numbers above the bars
    ax.set_xlabel("Split")
    ax.set_ylabel("Images")
    ax.legend(title="class")
    ax.set_title("Images per split and class", fontsize=13)
    return _finish(fig, path)


# --------------------------------------------------------------------------- notebook display helpers
# Display-only figures used by the notebooks (augmentation preview, heatmap tables).


def image_table_figure(
    images: Sequence[Sequence[np.ndarray | None]],
    col_titles: Sequence[str],
    row_titles: Sequence[str] | None = None,
    path: PathLike | None = None,
    *,
    suptitle: str | None = None,
    cell_size: float = 2.4,
    gray_cmap: str = "gray",
    colormap: str | None = None,
    feature_map: tuple[int, int] | None = None,
) -> Figure:
    """A table of images: ``images[r][c]`` (RGB uint8/float 0..255 or a 2-D map, shown with ``gray_cmap``).

    ``None`` leaves a cell empty. Column titles go on the first row; row titles on the left.
    Heatmap tables pass the rendering's ``colormap`` (one colour bar for the figure) and the
    explainer's ``feature_map`` size (a warning on the figure when it is too coarse).
    """
    rows = len(images)
    cols = max(len(col_titles), max((len(r) for r in images), default=0), 1)
    fig = Figure(figsize=(cell_size * cols + (1.2 if row_titles else 0), cell_size * max(rows, 1) + 0.6),
                 layout="constrained")
    axes = np.asarray(fig.subplots(max(rows, 1), cols, squeeze=False))
    if rows == 0:
        _message(axes[0, 0], "no images to show")
    for r in range(max(rows, 1)):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            image = images[r][c] if r < rows and c < len(images[r]) else None
            if image is not None:
                image = np.asarray(image)
                if image.ndim == 2:
                    ax.imshow(image, cmap=gray_cmap, vmin=0, vmax=255 if image.dtype == np.uint8 else 1)
                else:
                    ax.imshow(np.clip(image, 0, 255).astype(np.uint8))
            if r == 0 and c < len(col_titles):
                ax.set_title(col_titles[c], fontsize=10)
            if c == 0 and row_titles is not None and r < len(row_titles):
                ax.set_ylabel("\n".join(textwrap.fill(line, 24) for line in str(row_titles[r]).splitlines()),
                              fontsize=9)
    if suptitle:
        fig.suptitle(suptitle, fontsize=12)
    _heatmap_extras(fig, list(axes.ravel()), colormap, feature_map)
    return _finish(fig, path)


def augmentation_figure(
    paths: Sequence[PathLike],
    augmentation: Any = None,
    image_size: int = 224,
    n_variants: int = 5,
    seed: int = 0,
    path: PathLike | None = None,
) -> Figure:
    """Each photo as the model sees it (resized to ``image_size``), then ``n_variants`` random augmentations.

    ``augmentation`` is a :class:`catdog.datasets.Augmentation`, a dict of its fields, or
    None for the training default; the variants come from its Keras layers
    (:meth:`~catdog.datasets.Augmentation.layers`), exactly what training applies.
    """
    if augmentation is None:
        augmentation = Augmentation()
    elif isinstance(augmentation, Mapping):
        augmentation = Augmentation(**augmentation)
    layers = augmentation.layers(seed=seed)
    batch = load_batch(paths, image_size)  # unreadable photos are left out
    rows, titles = [], []
    for image_path, image in zip(batch.paths, batch.inputs.astype(np.float32)):
        variants = np.asarray(layers(np.repeat(image[None], n_variants, axis=0), training=True))
        rows.append([image, *variants])
        titles.append(f"{image_path.parent.name}/{image_path.name}")
    active = ", ".join(k if v is True else f"{k} {v}" for k, v in augmentation.as_dict().items() if v) or "none"
    return image_table_figure(rows, ["as the model sees it", *[f"augmented #{i + 1}" for i in range(n_variants)]],
                              titles, path, suptitle=f"Training augmentation at {image_size} px ({active})")


def explained_figure(rows: Sequence[Mapping[str, Any]], path: PathLike | None = None, *,
                     suptitle: str | None = None, max_side: int = 512) -> Figure:
    """Original | gray map | colour heatmap | overlay for each result row of :func:`catdog.explain.explain_paths`.

    Rows with an ``error`` are listed in the title instead of drawn.
    """
    ok = [r for r in rows if not r.get("error")]
    bad = [Path(str(r["path"])).name for r in rows if r.get("error")]
    table, titles = [], []
    for r in ok:
        cells = [load_original(r["path"], max_side)]
        for kind in ("gray", "heatmap", "overlay"):
            with Image.open(r[kind]) as im:
                im.thumbnail((max_side, max_side))
                cells.append(np.asarray(im))
        table.append(cells)
        name = f"{Path(str(r['path'])).parent.name}/{Path(str(r['path'])).name}"
        titles.append(f"{name}\npredicted {r.get('predicted', '?')} ({percent(r.get('confidence'), 0)})")
    title = suptitle or "Heatmaps"
    if bad:
        title += f"\n(skipped, unreadable: {', '.join(bad)})"
    method = method_label(ok[0]["method"]) if ok and ok[0].get("method") else "attention"
    return image_table_figure(table, ["original", f"{method} map (gray)", "heatmap", "overlay"], titles, path,
                              suptitle=title)


# ---------------------------------------------------------------- heatmaps
@functools.lru_cache(maxsize=8)
def _font_codepoints(font_file: str) -> frozenset[int]:
    return frozenset(FT2Font(font_file).get_charmap())


def _drawable(char: str) -> str:
    """``char`` if the title font has a glyph for it, else its ASCII form (``é`` -> ``e``, ``猫`` -> ``\\u732b``)."""
    font_file = font_manager.findfont(font_manager.FontProperties())
    if ord(char) < 128 or ord(char) in _font_codepoints(font_file):
        return char
    ascii_form = unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode()
    return ascii_form or (f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}")


def printable(text: str) -> str:
    """``text`` as a title matplotlib draws without boxes.

    Undecodable file-name bytes (Python's surrogate escapes; Matplotlib refuses to draw them)
    become U+FFFD, and characters the font has no glyph for (e.g. Chinese names with
    DejaVu Sans) their ASCII form instead of an empty box.
    """
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return "".join(_drawable(c) for c in text)


def _short_name(path: Path) -> str:
    """``parent/name`` of a photo, printable."""
    return printable(f"{path.parent.name}/{path.name}")


def coarse_map_note(feature_map: tuple[int, int] | None) -> str | None:
    """The warning a heatmap figure shows when the explained feature map is smaller than 7x7, else None."""
    if feature_map is None or min(feature_map) >= MIN_FEATURE_MAP:
        return None
    height, width = feature_map
    return f"feature map {height}×{width}: too coarse to localise; use a larger image_size"


def _heatmap_extras(fig: Figure, axes: list[Any], colormap: str | None,
                    feature_map: tuple[int, int] | None) -> None:
    """One colour bar for the whole figure, in the rendering's colours, and the coarse-map warning if due."""
    if colormap is not None:
        cmap = ListedColormap(colormap_rgb(colormap) / 255.0, name=colormap)
        bar = fig.colorbar(ScalarMappable(norm=Normalize(0.0, 1.0), cmap=cmap), ax=axes, shrink=0.8,
                           fraction=0.03, pad=0.01)
        bar.set_label(COLORBAR_LABEL)
    note = coarse_map_note(feature_map)
    if note:
        fig.supxlabel(note, color=WARNING_COLOR, fontsize=11, fontweight="bold")


def panel_figure(original: np.ndarray, heatmap: np.ndarray, overlay: np.ndarray, title: str,
                 path: PathLike | None = None, *, colormap: str = "jet",
                 feature_map: tuple[int, int] | None = None) -> Figure:
    """Three panels - original | heatmap | overlay - under ``title``; saved as PNG when ``path`` is given.

    ``colormap`` is the one ``heatmap`` was rendered with (for the colour bar); ``feature_map``
    the explainer's :attr:`~catdog.gradcam.CamExplainer.feature_map_size` (a warning when coarse).
    """
    fig = Figure(figsize=(10.5, 3.9), layout="constrained")
    axes = list(fig.subplots(1, 3))
    for ax, image, name in zip(axes, (original, heatmap, overlay), ("original", "heatmap", "overlay")):
        ax.imshow(image)
        ax.set_title(name, fontsize=10)
        ax.set_axis_off()
    fig.suptitle(printable(title), fontsize=12)
    _heatmap_extras(fig, axes, colormap, feature_map)
    return _finish(fig, path)


def _method_column(explainer: CamExplainer, method: str) -> str:
    """A method's label; top-k methods (Score-CAM) also say how many channels this explainer masks with."""
    label = method_label(method)
    return f"{label} (top {explainer.top_k})" if cam_method(method).masked_passes else label


def compare_methods_figure(explainer: CamExplainer, image_paths: Sequence[PathLike],
                           methods: Sequence[str] | None = None, target: str = "predicted", colormap: str = "jet",
                           alpha: float = 0.4, path: PathLike | None = None) -> Figure:
    """Overlays of every heatmap method side by side (one row per image): original | Grad-CAM | Grad-CAM++ | Score-CAM."""
    methods = list(methods or METHODS)
    columns = ["original", *(_method_column(explainer, m) for m in methods)]
    batch = load_batch(image_paths, explainer.image_size[0], originals=True)
    if not batch.paths:
        return image_table_figure([], columns, path=path, suptitle="no readable images")
    table = [[o] for o in batch.originals]
    logits = None
    for method in methods:
        maps, z = explainer.explain_with_logits(batch.inputs, target, method)
        logits = z if logits is None else logits
        for row, original, cam in zip(table, batch.originals, maps):
            row.append(render(original, cam, colormap, alpha)[2])
    titles = [f"{_short_name(p)}\npredicted {CLASS_NAMES[int(z >= 0)]}" for p, z in zip(batch.paths, logits)]
    return image_table_figure(table, columns, titles, path, suptitle=f"Heatmap methods compared (target: {target})",
                              colormap=colormap, feature_map=explainer.feature_map_size)


def both_classes_figure(explainer: CamExplainer, image_paths: Sequence[PathLike], method: str = "gradcam",
                        colormap: str = "jet", alpha: float = 0.4, temperature: float = 1.0,
                        path: PathLike | None = None) -> Figure:
    """The cat map and the dog map of the most ambiguous of ``image_paths`` (prediction closest to 50 %).

    With a photo holding both animals, the two maps should light up different regions.
    ``temperature`` (the model's calibration, :attr:`catdog.bundle.Bundle.temperature`) sets
    the probabilities in the column titles.
    """
    columns = ["original", "cat map", "dog map"]
    batch = load_batch(image_paths, explainer.image_size[0], originals=True)
    if not batch.paths:
        return image_table_figure([], columns, path=path, suptitle="no readable images")
    logits = explainer.predict_logits(batch.inputs)
    i = int(np.argmin(np.abs(logits)))
    maps = explainer.explain_both(batch.inputs[i][None], method)
    p_dog = float(apply_temperature(logits[i], temperature))
    original = batch.originals[i]
    row = [original, *(render(original, maps[c][0], colormap, alpha)[2] for c in CLASS_NAMES)]
    return image_table_figure(
        [row], ["original", f"explains 'cat' (p {percent(1 - p_dog, 0)})", f"explains 'dog' (p {percent(p_dog, 0)})"],
        [_short_name(batch.paths[i])], path,
        suptitle=f"Both classes' {method_label(method)} maps" + (" for the most ambiguous image" if len(logits) > 1 else ""),
        cell_size=3.2,
        colormap=colormap, feature_map=explainer.feature_map_size)
