"""Helpers the notebooks call: resolving parameter defaults, building configs, picking sample
images, tabulating results and the upload widget. They keep the notebooks thin: a notebook cell
is a call into catdog plus display. Where a run folder keeps what is :class:`catdog.runs.RunLayout`.

Tables for display round their numbers (4 decimals; accuracies and confidences as percentages,
:func:`catdog.metrics.percent`) and name heatmap methods by their labels; a table with no rows
is a sentence saying so. Files on disk keep the raw values.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catdog import paths
from catdog.card import ModelCard
from catdog.conventions import CLASS_NAMES
from catdog.metrics import percent
from catdog.runs import INTERACTIVE_RUN, RunLayout, say

if TYPE_CHECKING:  # the real imports are inside the functions: `import catdog.notebook` loads no TensorFlow
    import pandas as pd
    from IPython.display import Markdown

    from catdog.bundle import Bundle
    from catdog.predict import Predictor
    from catdog.training import TrainConfig

NO_SKIPPED = "No files were skipped: every file is a readable cat or dog photo."
DECIMALS = 4
PERCENT_COLUMNS = {"confidence": 1, "fraction": 0, "share_salient_beats_random": 0}  # column -> decimals
ACCURACY_METRICS = ("accuracy", "per_class.cat.recall", "per_class.dog.recall")  # shown as 98.73%


def resolve_path(value: str | Path | None) -> Path | None:
    """A notebook path parameter: ``""``/None -> None; relative paths are relative to the repo root."""
    if value is None or str(value) == "":
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else (paths.REPO_ROOT / path).resolve()


def resolve_run_dir(run_dir: str | Path | None) -> Path:
    """The run folder a notebook writes to (created): ``""`` -> ``runs/interactive``."""
    path = resolve_path(run_dir) or INTERACTIVE_RUN
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """The dataset folder: ``""`` -> catdog's default (``data/PetImages``, filled by ``fetch_data()``).

    Returned fully resolved (a linked mirror is followed), so scan caches keyed on real
    paths are reused.
    """
    path = resolve_path(data_dir)
    if path is None:
        from catdog.fetch import fetch_data

        path = fetch_data()
    if not path.is_dir():
        raise FileNotFoundError(f"data folder not found: {path}")
    return path.resolve()


def resolve_model_path(run_dir: str | Path, model_path: str | Path | None = "") -> Path:
    """The model a notebook uses: ``model_path`` if given, else the run's ``model/model.keras``, else the shipped model."""
    given = resolve_path(model_path)
    if given is not None:
        if not given.is_file():
            raise FileNotFoundError(f"model file not found: {given}")
        return given
    own = RunLayout(run_dir).model
    if own.is_file():
        return own
    shipped = paths.default_model_path()
    if shipped.is_file():
        return shipped
    raise FileNotFoundError(f"no model: {own} does not exist (run 02_train.ipynb) and the shipped model "
                            f"{shipped} is missing; set model_path")


def resolve_manifest(run_dir: str | Path, manifest: str | Path | None = "",
                     model: str | Path | Bundle | None = None) -> Path:
    """The data manifest: ``manifest`` if given, else the model's own (``model``: a path or a
    :class:`~catdog.bundle.Bundle`), else the run's ``data/manifest.csv``."""
    given = resolve_path(manifest)
    candidates = [given] if given is not None else []
    if given is None and model is not None:
        from catdog.bundle import Bundle

        bundle = model if isinstance(model, Bundle) else Bundle.load(model)
        candidates.append(bundle.manifest)
    if given is None:
        candidates.append(RunLayout(run_dir).manifest)
    for candidate in candidates:
        if candidate is not None and candidate.is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates if c is not None)
    raise FileNotFoundError(f"manifest not found (tried {tried}); run 01_data.ipynb or set manifest")


def train_config(**params: Any) -> TrainConfig:
    """A :class:`~catdog.training.TrainConfig` from the training parameters of ``02_train``.

    :meth:`~catdog.training.TrainConfig.from_params` parses them (``weights`` ``"none"``,
    ``init_model`` ``""``, partial ``augmentation``; unknown keys are refused); a relative
    ``init_model`` is relative to the repo root, like every notebook path.
    """
    from catdog.training import TrainConfig

    if params.get("init_model"):
        params["init_model"] = str(resolve_path(params["init_model"]))
    return TrainConfig.from_params(**params)


def sample_items(manifest: str | Path, split: str = "test", n: int = 8, seed: int = 42) -> list:
    """``n`` items of ``split``, half cats and half dogs where possible (alternating), chosen with ``seed``."""
    import numpy as np

    from catdog.data import read_manifest

    items = read_manifest(manifest, split)
    rng = np.random.default_rng(seed)
    pools = [[items[j] for j in rng.permutation(len(items)) if items[j].label == c] for c in CLASS_NAMES]
    out = [item for pair in itertools.zip_longest(*pools) for item in pair if item is not None]
    return out[:max(int(n), 0)]


def card_summary(card: ModelCard | Mapping[str, Any]) -> list[dict[str, Any]]:
    """The model card as ``{"field", "value"}`` rows for a table (numbers rounded, accuracy as a percentage)."""
    if isinstance(card, ModelCard):
        card = card.to_dict()
    rows = [{"field": k, "value": card.get(k)} for k in ("backbone", "image_size", "temperature", "threshold",
                                                          "total_seconds", "created") if k in card]
    for split, n in (card.get("split_sizes") or {}).items():
        rows.append({"field": f"images: {split}", "value": n})
    for phase, info in (card.get("phases") or {}).items():
        if phase == "init_model":  # continued from an earlier model: name it, not its whole card
            rows.append({"field": "continued from", "value": info.get("path")})
            continue
        rows.append({"field": f"phase {phase}", "value": ", ".join(f"{k} {_rounded(v)}" for k, v in info.items())})
    for split, block in (card.get("metrics") or {}).items():
        for k in ("accuracy", "log_loss", "roc_auc", "ece"):
            if block.get(k) is not None:
                rows.append({"field": f"{split} {k}", "value": metric_text(k, block[k])})
    return [{**row, "value": _rounded(row["value"])} for row in rows]


def metrics_table(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``metrics.json`` as rows ``metric, calibrated, uncalibrated`` (macro F1 and per-class recall included)."""
    cal, raw = metrics.get("calibrated", {}), metrics.get("uncalibrated", {})

    def get(block: Mapping[str, Any], key: str) -> Any:
        value: Any = block
        for part in key.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        return value

    keys = ["n_images", "accuracy", "accuracy_ci95", "roc_auc", "average_precision", "log_loss", "brier", "ece",
            "macro.f1", "per_class.cat.recall", "per_class.dog.recall"]
    return [{"metric": k, "calibrated": get(cal, k), "uncalibrated": get(raw, k)} for k in keys
            if get(cal, k) is not None or get(raw, k) is not None]


def metric_text(key: str, value: Any) -> Any:
    """A metric for a table: accuracies as ``"98.73%"`` (an interval as ``"97.10%–99.02%"``), other numbers 4
    decimals, a missing one blank."""
    if value is None:
        return ""
    if key in ACCURACY_METRICS:
        return f"{float(value):.2%}"
    if key == "accuracy_ci95":
        low, high = value
        return f"{float(low):.2%}–{float(high):.2%}"
    return _rounded(value)


def metrics_frame(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """:func:`metrics_table` for display: one row per metric, its values as :func:`metric_text`."""
    import pandas as pd

    rows = [{"metric": r["metric"], **{k: metric_text(r["metric"], r[k]) for k in ("calibrated", "uncalibrated")}}
            for r in metrics_table(metrics)]
    return pd.DataFrame(rows, columns=["metric", "calibrated", "uncalibrated"]).set_index("metric")


def _rounded(value: Any) -> Any:
    """Floats to :data:`DECIMALS` decimals (NaN to ""), anything else unchanged."""
    if isinstance(value, float):
        return "" if value != value else round(value, DECIMALS)
    return value


def _method_text(value: Any) -> Any:
    """A heatmap method's label (``"gradcampp"`` -> ``"Grad-CAM++"``); other values unchanged."""
    from catdog.gradcam import REGISTRY  # heatmap tables are shown where TensorFlow is loaded anyway

    return REGISTRY[value].label if value in REGISTRY else value


def _cell_text(column: str, value: Any) -> Any:
    """One table cell as shown: by its column's kind (percentage, method, p-value), else :func:`_rounded`."""
    if column in PERCENT_COLUMNS:
        missing = value is None or (isinstance(value, float) and value != value)
        return "" if missing else percent(float(value), PERCENT_COLUMNS[column])
    if column == "method":
        return _method_text(value)
    if column.endswith("_p") and isinstance(value, float):  # p-values: significant digits, not decimals
        return f"{value:.2g}"
    return _rounded(value)


def results_table(rows: Any, empty: str, columns: Sequence[str] | None = None) -> pd.DataFrame | Markdown:
    """``rows`` (dicts, a DataFrame or a Series) as a table to display, or the sentence ``empty`` if there are none.

    ``columns`` picks and orders the columns (missing ones are left blank). Confidences become
    percentages (``">99.9%"`` rather than ``100.0%``), methods their labels, other floats 4 decimals.
    """
    import pandas as pd
    from IPython.display import Markdown

    frame = rows.to_frame() if isinstance(rows, pd.Series) else pd.DataFrame(rows)
    if columns is not None:
        frame = frame.reindex(columns=list(columns))
    if frame.empty:
        return Markdown(empty)
    return pd.DataFrame({c: [_cell_text(str(c), v) for v in frame[c]] for c in frame.columns}, index=frame.index)


def skipped_table(skipped_csv: str | Path) -> pd.DataFrame | Markdown:
    """``skipped.csv`` summarised for 01_data: files and one example per reason, or :data:`NO_SKIPPED`."""
    import pandas as pd

    skipped = pd.read_csv(skipped_csv, keep_default_na=False)
    if skipped.empty:
        return results_table(skipped, NO_SKIPPED)
    names = skipped["path"].map(lambda p: Path(p).name)
    table = (skipped.assign(example=names).groupby("reason", sort=False)
             .agg(files=("path", "size"), example=("example", "first")).sort_values("files", ascending=False))
    return results_table(table, NO_SKIPPED)


def faithfulness_tables(report: Mapping[str, Any]) -> tuple[pd.DataFrame | Markdown, pd.DataFrame | Markdown]:
    """The deletion test and the randomisation check of :func:`catdog.benchmarks.faithfulness_report`, for display."""
    deletion = results_table(report.get("deletion", []), "No deletion test was run.",
                             ["method", "mode", "fraction", "mean_drop_salient", "mean_drop_random",
                              "mean_difference", "share_salient_beats_random", "wilcoxon_p"])
    rho = [{"method": _method_text(m), "Spearman rho vs random weights": v}
           for m, v in (report.get("randomization_spearman") or {}).items()]
    randomization = results_table(rho, "No randomisation check was run.")
    if hasattr(randomization, "set_index"):  # a DataFrame, not the "not run" sentence
        randomization = randomization.set_index("method")
    return deletion, randomization


def make_predictor(model: str | Path | Bundle, engine: str = "auto", reject: bool = True, *,
                   variant: str = "float32", num_threads: int | None = None, **kwargs: Any) -> Predictor:
    """A :class:`catdog.predict.Predictor` of ``model`` (a path, loaded with ``engine``, ``variant``
    and ``num_threads``, or a :class:`~catdog.bundle.Bundle`); with ``reject`` but no "neither"
    detector beside the model, it says so and predicts without "neither" instead of failing."""
    from catdog.bundle import Bundle
    from catdog.predict import Predictor

    bundle = model if isinstance(model, Bundle) else Bundle.load(model, engine=engine, variant=variant,
                                                                 num_threads=num_threads)
    if reject and not bundle.has_detector:
        say(f"note: the model {bundle.path.name} has no 'neither' detector (02_train fits one unless "
            "openset_images is 0; or catdog.openset.fit_openset): predicting without 'neither'")
        reject = False
    return Predictor(bundle, reject=reject, **kwargs)


def save_uploads(value: Any, folder: str | Path) -> list[Path]:
    """Write the files of an ipywidgets ``FileUpload.value`` (v8 tuple of dicts, or v7 dict) into ``folder``.

    Names are reduced to their base name and never overwrite an earlier upload (``-2``, ``-3``… added).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(value, Mapping):  # ipywidgets 7: {name: {"metadata": {...}, "content": bytes}}
        entries = [{"name": k, "content": v.get("content", b"")} for k, v in value.items()]
    else:
        entries = list(value or [])
    saved = []
    for entry in entries:
        name = Path(str(entry.get("name") or "upload")).name or "upload"
        target = folder / name
        n = 2
        while target.exists():
            target = folder / f"{Path(name).stem}-{n}{Path(name).suffix}"
            n += 1
        target.write_bytes(bytes(entry.get("content", b"")))
        saved.append(target)
    return saved


def explain_uploads(value: Any, predictor: Predictor, model: str | Path | Bundle, out_dir: str | Path, *,
                    method: str = "gradcam", colormap: str = "jet", alpha: float = 0.4) -> list[dict[str, Any]]:
    """Save uploaded photos to ``out_dir``, predict them and draw their heatmap panels.

    ``model`` is a :class:`~catdog.bundle.Bundle` (its model and heatmap explainer are loaded
    once and reused by every upload) or a model path. Returns one row per file: the prediction
    columns plus ``panel`` (the PNG of original | heatmap | overlay, "" when the file could not be read).
    """
    from catdog.explain import explain_paths

    files = save_uploads(value, out_dir)
    if not files:
        return []
    rows = list(predictor.predict_paths(files))
    cams = explain_paths(model, files, Path(out_dir) / "heatmaps", method=method, colormap=colormap, alpha=alpha)
    panels = {c["path"]: c.get("panel", "") for c in cams}
    return [{**row, "panel": panels.get(row["path"], "")} for row in rows]


def upload_widget(predictor: Predictor, model: str | Path | Bundle, out_dir: str | Path, **explain_kwargs: Any):
    """A FileUpload button plus an output area: each uploaded photo is predicted and shown with its heatmap.

    Nothing happens until a file is uploaded (so the notebook runs unchanged under papermill).
    """
    import ipywidgets as widgets
    import pandas as pd
    from IPython.display import Image, display

    upload = widgets.FileUpload(accept="image/*", multiple=True, description="Upload photo")
    output = widgets.Output()

    def on_upload(change: Mapping[str, Any]) -> None:
        if not change.get("new"):
            return
        with output:
            output.clear_output()
            try:
                rows = explain_uploads(change["new"], predictor, model, out_dir, **explain_kwargs)
            except Exception as exc:  # show the problem in the notebook instead of a silent widget error
                print(f"could not process the upload: {type(exc).__name__}: {exc}")
                return
            display(pd.DataFrame(rows).drop(columns=["panel"]))
            for row in rows:
                if row["panel"]:
                    display(Image(filename=row["panel"]))

    upload.observe(on_upload, names="value")
    return widgets.VBox([upload, output])
