"""``catdog explain``: heatmaps for image files and folders, written as PNGs with one result row per file.

For every readable image :func:`explain_paths` writes ``<stem>_gray.png`` (the attention map),
``<stem>_heatmap.png`` (its colour map), ``<stem>_overlay.png`` (blended over the photo, at the
photo's own resolution) and ``<stem>_panel.png`` (the three side by side with the prediction).
PNGs already in the output folder are never replaced: a taken stem becomes ``<parent>_<stem>`` or
``<stem>-2``, ``-3``...
The model and its calibration come from a :class:`catdog.bundle.Bundle`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from catdog.bundle import Bundle
from catdog.conventions import CLASS_NAMES
from catdog.figures import panel_figure
from catdog.gradcam import CamExplainer, method_label, target_classes
from catdog.images import iter_image_files, load_batch
from catdog.metrics import percent
from catdog.rendering import render, save_render

log = logging.getLogger(__name__)

MAX_SIDE = 2048  # overlays are drawn at the photo's own resolution, capped here to bound memory


_OUTPUT_NAME = re.compile(r"^(?P<stem>.+)_(?:gray|heatmap|overlay|panel)\.png$")


def _existing_stems(out_dir: Path) -> set[str]:
    """Stems of panels already in ``out_dir``: new ones get other names, so an earlier photo's PNGs are never replaced."""
    if not out_dir.is_dir():
        return set()
    return {m.group("stem") for p in out_dir.iterdir() if (m := _OUTPUT_NAME.match(p.name))}


def _unique_stem(path: Path, used: set[str]) -> str:
    """``path``'s stem, or ``<parent>_<stem>`` / ``-2``, ``-3``... when taken (Cat/1.jpg vs Dog/1.jpg)."""
    stem = path.stem
    if stem in used:
        stem = f"{path.parent.name}_{path.stem}"
    base, i = stem, 2
    while stem in used:
        stem, i = f"{base}-{i}", i + 1
    used.add(stem)
    return stem


def explain_paths(model: str | Path | Bundle | None, paths_or_folders: str | Path | Iterable[str | Path],
                  out_dir: str | Path, method: str = "gradcam", target: str = "predicted", colormap: str = "jet",
                  alpha: float = 0.4, batch_size: int = 16, layer_name: str | None = None) -> list[dict]:
    """Explain image files and folders; write ``<stem>_{gray,heatmap,overlay,panel}.png`` per image to ``out_dir``.

    ``model`` is a :class:`~catdog.bundle.Bundle`, a ``.keras`` path, or None for the shipped
    model; ``layer_name`` explains another convolutional layer than the last one. Confidence =
    calibrated probability of the predicted class, ``sigmoid(logit / temperature)`` with the
    bundle's temperature. Unreadable files are skipped and reported (logged, and a row with
    status ``"skipped"`` and the reason in ``"error"``); processing never stops. Returns one
    dict per input file, in input order.
    """
    files = list(iter_image_files(paths_or_folders))  # a missing input fails before anything is created
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--out {out_dir} is a file; explain writes PNGs into a folder")
    bundle = model if isinstance(model, Bundle) else Bundle.load(model)
    explainer = bundle.explainer if layer_name is None else CamExplainer(bundle.model, layer_name)
    used = _existing_stems(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for start in range(0, len(files), batch_size):
        chunk = files[start:start + batch_size]
        batch = load_batch(chunk, explainer.image_size[0], originals=True, max_side=MAX_SIDE)
        reasons = dict(batch.errors)
        for path, reason in batch.errors:
            log.warning("skipped %s: %s", path, reason)
        done: list[dict] = []
        if batch.paths:
            maps, logits = explainer.explain_with_logits(batch.inputs, target, method, batch_size)
            classes = target_classes(target, len(batch.paths))
            for path, original, cam, z, p_dog, cls in zip(batch.paths, batch.originals, maps, logits,
                                                          bundle.calibrated(logits), classes):
                done.append(_write_one(out_dir, _unique_stem(path, used), path, original, cam, float(z),
                                       float(p_dog), int(cls), method, colormap, alpha,
                                       explainer.feature_map_size))
        kept = iter(done)  # load_batch keeps input order, so kept rows come in turn
        rows += [{"path": str(p), "status": "skipped", "error": reasons[p]} if p in reasons else next(kept)
                 for p in chunk]
    return rows


def _write_one(out_dir: Path, stem: str, path: Path, original: np.ndarray, cam: np.ndarray, logit: float,
               p_dog: float, cls: int, method: str, colormap: str, alpha: float,
               feature_map: tuple[int, int]) -> dict:
    """Render and save one image's four PNGs; return its result row."""
    predicted = CLASS_NAMES[int(logit >= 0)]
    explained = predicted if cls < 0 else CLASS_NAMES[cls]
    confidence = p_dog if predicted == "dog" else 1.0 - p_dog
    gray, heatmap, overlay = render(original, cam, colormap, alpha)
    files = save_render(out_dir, stem, gray, heatmap, overlay)
    title = (f"{path.name}: predicted {predicted} ({percent(confidence)} sure) - {method_label(method)} map "
             f"for '{explained}'")
    files["panel"] = out_dir / f"{stem}_panel.png"
    panel_figure(original, heatmap, overlay, title, files["panel"], colormap=colormap, feature_map=feature_map)
    return {"path": str(path), "status": "ok", "error": "", "predicted": predicted, "p_dog": p_dog,
            "confidence": confidence, "explained": explained, "method": method,
            **{kind: str(p) for kind, p in files.items()}}


__all__ = ["explain_paths"]
