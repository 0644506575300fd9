"""Heatmaps as pictures: colour maps, overlays on the original photo, PNG files (OpenCV, no TensorFlow).

:func:`render` turns a class map from :class:`catdog.gradcam.CamExplainer` into grayscale /
colour heatmap / overlay images at the *original* photo's resolution. PNGs are encoded in
memory (``cv2.imencode``) and written through a Python file object: OpenCV's own file
functions (``cv2.imwrite``/``imread``) cannot open every file name Python can (they crash on
names that are not valid UTF-8), and output names come from the user's file names.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from catdog.images import load_batch

log = logging.getLogger(__name__)

RENDER_KINDS = ("gray", "heatmap", "overlay")


class Explainer(Protocol):
    """What :func:`overlays` needs of a :class:`catdog.gradcam.CamExplainer`."""

    image_size: tuple[int, int]

    def explain(self, images: np.ndarray, target: Any = "predicted", method: str = "gradcam") -> np.ndarray: ...


def colormap_code(name: str) -> int:
    """OpenCV colormap constant for a name such as ``"jet"``, ``"viridis"``, ``"inferno"``."""
    code = getattr(cv2, f"COLORMAP_{name.upper()}", None)
    if not isinstance(code, int):
        known = sorted(a.removeprefix("COLORMAP_").lower() for a in dir(cv2) if a.startswith("COLORMAP_"))
        raise ValueError(f"unknown colormap {name!r}; OpenCV has: {', '.join(known)}")
    return code


def colormap_rgb(name: str) -> np.ndarray:
    """The ``(256, 3)`` uint8 RGB colours :func:`render` gives the map values 0..255 (``gray``) with colormap ``name``.

    Figures build their colour bars from it, so a bar shows exactly the colours of the heatmap.
    """
    levels = np.arange(256, dtype=np.uint8)[:, None]
    return cv2.cvtColor(cv2.applyColorMap(levels, colormap_code(name)), cv2.COLOR_BGR2RGB)[:, 0]


def render(original_rgb_uint8: np.ndarray, cam: np.ndarray, colormap: str = "jet",
           alpha: float = 0.4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(gray, heatmap, overlay)`` uint8 images at the ORIGINAL image's resolution.

    ``cam`` (any size, values in [0, 1]) is resized bilinearly to the original's size;
    ``gray`` is the (H, W) attention map, ``heatmap`` its RGB colour map, and ``overlay``
    the heatmap blended over the photo with weight ``alpha``.
    """
    original = np.asarray(original_rgb_uint8)
    if original.dtype != np.uint8 or original.ndim != 3 or original.shape[2] != 3:
        raise ValueError(f"original must be an (H, W, 3) uint8 RGB image, got {original.dtype} {original.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    height, width = original.shape[:2]
    cam = cv2.resize(np.asarray(cam, np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    gray = np.round(np.clip(np.nan_to_num(cam), 0.0, 1.0) * 255).astype(np.uint8)
    heatmap = cv2.cvtColor(cv2.applyColorMap(gray, colormap_code(colormap)), cv2.COLOR_BGR2RGB)
    overlay = cv2.addWeighted(original, 1.0 - alpha, heatmap, alpha, 0.0)
    return gray, heatmap, overlay


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an RGB (H, W, 3) or grayscale (H, W) uint8 array as PNG (creating parent folders).

    Encoded in memory and written by Python, so any file name the OS accepts works.
    """
    path = Path(path)
    image = np.asarray(image)
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"save_png needs an (H, W) or (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, encoded = cv2.imencode(".png", bgr)
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as file:
        file.write(encoded.tobytes())
    return path


def save_render(out_dir: str | Path, stem: str, gray: np.ndarray, heatmap: np.ndarray,
                overlay: np.ndarray) -> dict[str, Path]:
    """Write ``<stem>_gray.png``, ``<stem>_heatmap.png`` and ``<stem>_overlay.png``; returns their paths."""
    out_dir = Path(out_dir)
    return {kind: save_png(out_dir / f"{stem}_{kind}.png", image)
            for kind, image in zip(RENDER_KINDS, (gray, heatmap, overlay))}


def overlays(explainer: Explainer, paths: Iterable[str | Path], method: str = "gradcam", target: str = "predicted",
             colormap: str = "jet", alpha: float = 0.4, max_side: int = 512) -> dict[Path, np.ndarray]:
    """``{path: overlay RGB uint8}`` for :func:`catdog.evaluation.write_report`'s gallery.

    Unreadable files are left out (the gallery shows its placeholder for them). Originals are
    read at most ``max_side`` pixels on their long side to keep memory small.
    """
    batch = load_batch(paths, explainer.image_size[0], originals=True, max_side=max_side)
    for path, reason in batch.errors:
        log.warning("no overlay for %s: %s", path, reason)
    if not batch.paths:
        return {}
    maps = explainer.explain(batch.inputs, target, method)
    return {path: render(original, cam, colormap, alpha)[2]
            for path, original, cam in zip(batch.paths, batch.originals, maps)}


__all__ = ["RENDER_KINDS", "colormap_code", "colormap_rgb", "render", "save_png", "save_render", "overlays"]
