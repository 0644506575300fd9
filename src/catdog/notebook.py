"""Helpers the notebooks call: resolving parameter defaults, building configs, picking sample
images, tabulating results, comparison figures and the upload widget. They keep the notebooks thin:
a notebook cell is a call into catdog plus display.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from catdog import paths

from catdog.pipeline import INTERACTIVE_RUN, _say


def resolve_path(value: str | Path | None) -> Path | None:
    """A notebook path parameter: ``""``/None -> None; relative paths are relative to the repo root."""
    if value is None or str(value) == "":
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else (paths.REPO_ROOT / path).resolve()


def resolve_run_dir(run_dir: str | Path | None) -> Path:
    """The run folder a notebook writes to (created): ``""`` -> ``reports/runs/interactive``."""
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
    own = Path(run_dir) / "model" / "model.keras"
    if own.is_file():
        return own
    shipped = paths.default_model_path()
    if shipped.is_file():
        return shipped
    raise FileNotFoundError(f"no model: {own} does not exist (run 02_train.ipynb) and the shipped model "
                            f"{shipped} is missing; set model_path")


def resolve_manifest(run_dir: str | Path, manifest: str | Path | None = "",
                     model_path: str | Path | None = None) -> Path:
    """The data manifest: ``manifest`` if given, else the model card's (when ``model_path``), else the run's ``data/manifest.csv``."""
    given = resolve_path(manifest)
    candidates = [given] if given is not None else []
    if given is None and model_path is not None:
        from catdog.models import card_manifest

        candidates.append(card_manifest(model_path))
    if given is None:
        candidates.append(Path(run_dir) / "data" / "manifest.csv")
    for candidate in candidates:
        if candidate is not None and candidate.is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates if c is not None)
    raise FileNotFoundError(f"manifest not found (tried {tried}); run 01_data.ipynb or set manifest")


def train_config(**params: Any):
    """A :class:`~catdog.training.TrainConfig` from notebook parameters (unknown keys are ignored).

    ``weights`` ``"none"``/``""`` means random initialisation; ``augmentation`` holds only
    the fields that differ from :class:`~catdog.datasets.Augmentation`'s defaults.
    """
    from dataclasses import fields

    from catdog.training import TrainConfig

    names = {f.name for f in fields(TrainConfig)}
    kwargs = {k: v for k, v in params.items() if k in names}
    if str(kwargs.get("weights", "imagenet")).lower() in ("", "none", "null"):
        kwargs["weights"] = None
    if "init_model" in kwargs:  # "" = start from the backbone weights; else continue from that saved model
        init = resolve_path(kwargs["init_model"])
        kwargs["init_model"] = str(init) if init else None
    if "augmentation" in kwargs:
        defaults = TrainConfig().augmentation
        kwargs["augmentation"] = {**defaults, **(kwargs["augmentation"] or {})}
    return TrainConfig(**kwargs)


def check_resume(model_dir: str | Path, config) -> None:
    """Refuse to train into ``model_dir`` when it holds a run with different settings.

    :func:`catdog.training.train` resumes whatever run its folder holds; with other
    settings that would silently mix two runs. Identical settings resume (or reuse) it.
    """
    from dataclasses import asdict

    saved = Path(model_dir) / "train_config.json"
    if not saved.is_file():
        return
    old, new = json.loads(saved.read_text()), json.loads(json.dumps(asdict(config)))
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed:
        detail = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise ValueError(f"{model_dir} already holds a training run with other settings ({detail}); "
                         "set run_dir to a new folder (the pipeline always makes one)")


def sample_items(manifest: str | Path, split: str = "test", n: int = 8, seed: int = 42) -> list:
    """``n`` items of ``split``, half cats and half dogs where possible (alternating), chosen with ``seed``."""
    import numpy as np

    from catdog import CLASS_NAMES
    from catdog.data import read_manifest

    items = read_manifest(manifest, split)
    rng = np.random.default_rng(seed)
    pools = [[items[j] for j in rng.permutation(len(items)) if items[j].label == c] for c in CLASS_NAMES]
    out = [item for pair in itertools.zip_longest(*pools) for item in pair if item is not None]
    return out[:max(int(n), 0)]


def card_summary(card: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The model card as ``{"field", "value"}`` rows for a table."""
    rows = [{"field": k, "value": card.get(k)} for k in ("backbone", "image_size", "temperature", "threshold",
                                                          "total_seconds", "created") if k in card]
    for split, n in (card.get("split_sizes") or {}).items():
        rows.append({"field": f"images: {split}", "value": n})
    for phase, info in (card.get("phases") or {}).items():
        if phase == "init_model":  # continued from an earlier model: name it, not its whole card
            rows.append({"field": "continued from", "value": info.get("path")})
            continue
        rows.append({"field": f"phase {phase}", "value": ", ".join(f"{k} {v}" for k, v in info.items())})
    for split, block in (card.get("metrics") or {}).items():
        for k in ("accuracy", "log_loss", "roc_auc", "ece"):
            if block.get(k) is not None:
                rows.append({"field": f"{split} {k}", "value": round(float(block[k]), 4)})
    return rows


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


def _originals_and_inputs(paths_: Sequence[str | Path], size: int, max_side: int = 512):
    from catdog.images import ImageError, load_image, load_original

    kept, inputs, originals = [], [], []
    for path in paths_:
        try:
            inputs.append(load_image(path, size))
            originals.append(load_original(path, max_side))
            kept.append(Path(path))
        except ImageError:
            continue
    return kept, inputs, originals


def compare_methods_figure(explainer, image_paths: Sequence[str | Path], methods: Sequence[str] | None = None,
                           target: str = "predicted", colormap: str = "jet", alpha: float = 0.4,
                           path: str | Path | None = None):
    """Overlays of every heatmap method side by side (one row per image): original | Grad-CAM | Grad-CAM++ | Score-CAM."""
    import numpy as np

    from catdog import gradcam, plots

    methods = list(methods or gradcam.METHODS)
    kept, inputs, originals = _originals_and_inputs(image_paths, explainer.image_size[0])
    if not kept:
        return plots.image_table_figure([], ["original", *methods], path=path, suptitle="no readable images")
    x = np.stack(inputs)
    table = [[o] for o in originals]
    logits = None
    for method in methods:
        maps, z = explainer.explain_with_logits(x, target, method)
        logits = z if logits is None else logits
        for row, original, cam in zip(table, originals, maps):
            row.append(gradcam.render(original, cam, colormap, alpha)[2])
    titles = [f"{p.parent.name}/{p.name}\npredicted {'dog' if z >= 0 else 'cat'}" for p, z in zip(kept, logits)]
    names = {"gradcam": "Grad-CAM", "gradcampp": "Grad-CAM++", "scorecam": f"Score-CAM (top {explainer.top_k})"}
    return plots.image_table_figure(table, ["original", *[names.get(m, m) for m in methods]], titles, path,
                                    suptitle=f"Heatmap methods compared (target: {target})")


def both_classes_figure(explainer, image_paths: Sequence[str | Path], method: str = "gradcam",
                        colormap: str = "jet", alpha: float = 0.4, temperature: float = 1.0,
                        path: str | Path | None = None):
    """The cat map and the dog map of the most ambiguous of ``image_paths`` (prediction closest to 50 %).

    With a photo holding both animals, the two maps should light up different regions.
    """
    import numpy as np

    from catdog import gradcam, plots

    kept, inputs, originals = _originals_and_inputs(image_paths, explainer.image_size[0])
    if not kept:
        return plots.image_table_figure([], ["original", "cat map", "dog map"], path=path, suptitle="no readable images")
    logits = explainer.predict_logits(np.stack(inputs))
    i = int(np.argmin(np.abs(logits)))
    maps = explainer.explain_both(inputs[i][None], method)
    p_dog = float(1 / (1 + np.exp(-logits[i] / temperature)))
    row = [originals[i], *(gradcam.render(originals[i], maps[c][0], colormap, alpha)[2] for c in ("cat", "dog"))]
    return plots.image_table_figure(
        [row], ["original", f"explains 'cat' (p {1 - p_dog:.0%})", f"explains 'dog' (p {p_dog:.0%})"],
        [f"{kept[i].parent.name}/{kept[i].name}"], path, suptitle=f"Both classes' {method} maps for the most ambiguous image", cell_size=3.2)



def make_predictor(model_path: str | Path, engine: str = "keras", reject: bool = True, **kwargs: Any):
    """A :class:`catdog.predict.Predictor`; with ``reject`` but no open-set detector beside the model,
    it warns and predicts without "neither" instead of failing."""
    from catdog.openset import openset_path
    from catdog.predict import Predictor

    if reject and not openset_path(model_path).is_file():
        _say(f"note: no open-set detector {openset_path(model_path).name} beside the model "
             "(02_train fits one; or catdog.openset.fit_openset): predicting without 'neither'")
        reject = False
    return Predictor(model_path, engine=engine, reject=reject, **kwargs)


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


_LOADED_MODELS: dict[str, Any] = {}


def explain_uploads(value: Any, predictor, model_path: str | Path, out_dir: str | Path, *,
                    method: str = "gradcam", colormap: str = "jet", alpha: float = 0.4) -> list[dict[str, Any]]:
    """Save uploaded photos to ``out_dir``, predict them and draw their heatmap panels.

    Returns one row per file: the prediction columns plus ``panel`` (the PNG of original |
    heatmap | overlay, "" when the file could not be read).
    """
    from catdog import gradcam
    from catdog.models import load_model

    files = save_uploads(value, out_dir)
    if not files:
        return []
    rows = list(predictor.predict_paths(files))
    key = str(Path(model_path).resolve())
    if key not in _LOADED_MODELS:  # one load per notebook session, not per upload
        _LOADED_MODELS[key] = load_model(model_path)
    cams = gradcam.explain_paths(_LOADED_MODELS[key], files, Path(out_dir) / "heatmaps", method=method, colormap=colormap,
                                 alpha=alpha, temperature=predictor.temperature)
    panels = {c["path"]: c.get("panel", "") for c in cams}
    return [{**row, "panel": panels.get(row["path"], "")} for row in rows]


def upload_widget(predictor, model_path: str | Path, out_dir: str | Path, **explain_kwargs: Any):
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
                rows = explain_uploads(change["new"], predictor, model_path, out_dir, **explain_kwargs)
            except Exception as exc:  # show the problem in the notebook instead of a silent widget error
                print(f"could not process the upload: {type(exc).__name__}: {exc}")
                return
            display(pd.DataFrame(rows).drop(columns=["panel"]))
            for row in rows:
                if row["panel"]:
                    display(Image(filename=row["panel"]))

    upload.observe(on_upload, names="value")
    return widgets.VBox([upload, output])
