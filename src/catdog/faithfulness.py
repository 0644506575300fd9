"""Do the heatmaps tell the truth about the model? Deletion test and parameter-randomisation check.

:func:`deletion_drop` removes each image's most salient pixels (by a map) and, as a control,
as many random pixels, and measures how much the predicted class's probability drops.
:func:`randomization_check` compares the trained model's maps with those of the same
architecture re-initialised at random. :func:`catdog.benchmarks.faithfulness_report` runs
both over a test set and writes the report.
"""

from __future__ import annotations

import cv2
import keras
import numpy as np
from scipy.stats import spearmanr

from catdog.conventions import CLASS_NAMES
from catdog.gradcam import GREY, CamExplainer, as_explainer
from catdog.metrics import sigmoid

def _remove_pixels(images: np.ndarray, masks: np.ndarray, mode: str) -> np.ndarray:
    """Replace the pixels where ``masks`` is True by a Gaussian blur of the image or by grey."""
    if mode == "grey":
        fill = np.full_like(images, GREY)
    elif mode == "blur":
        sigma = max(images.shape[1:3]) / 16  # strong enough to erase fur/face detail at any input size
        fill = np.stack([cv2.GaussianBlur(img, (0, 0), sigma) for img in images])
    else:
        raise ValueError(f"unknown mode {mode!r}; use 'blur' or 'grey'")
    return np.where(masks[..., None], fill, images)


def _top_masks(maps: np.ndarray, count: int) -> np.ndarray:
    """Boolean masks of each map's ``count`` highest pixels."""
    flat = maps.reshape(len(maps), -1)
    idx = np.argpartition(-flat, count - 1, axis=1)[:, :count]
    masks = np.zeros_like(flat, dtype=bool)
    np.put_along_axis(masks, idx, True, axis=1)
    return masks.reshape(maps.shape)


def _random_masks(shape: tuple[int, ...], count: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean masks with ``count`` uniformly random pixels per image."""
    n, pixels = shape[0], int(np.prod(shape[1:]))
    idx = np.argsort(rng.random((n, pixels)), axis=1)[:, :count]
    masks = np.zeros((n, pixels), dtype=bool)
    np.put_along_axis(masks, idx, True, axis=1)
    return masks.reshape(shape)


def deletion_drop(explainer: CamExplainer | keras.Model, images: np.ndarray, maps: np.ndarray, fraction: float = 0.2,
                  mode: str = "blur", seed: int = 0) -> dict:
    """Drop in the predicted class's probability when the top-``fraction`` salient pixels are removed.

    Each image's ``fraction`` most salient pixels (by ``maps``) are blurred (``mode="blur"``)
    or set to grey (``"grey"``); as a control, the same number of random pixels. A faithful
    map gives ``mean_drop_salient`` > ``mean_drop_random``. Probabilities are uncalibrated
    sigmoid(+-logit); the predicted class is fixed from the unmodified images.
    """
    explainer = as_explainer(explainer)
    images = explainer.prepare(images)
    maps = np.asarray(maps, np.float32)
    if maps.shape != images.shape[:3]:
        raise ValueError(f"maps {maps.shape} do not match images {images.shape[:3]}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    count = max(1, round(fraction * maps.shape[1] * maps.shape[2]))
    logits = explainer.predict_logits(images)
    signs = np.where(logits >= 0, 1.0, -1.0)  # the predicted class's logit is signs * logit
    p0 = sigmoid(signs * logits)
    salient = sigmoid(signs * explainer.predict_logits(_remove_pixels(images, _top_masks(maps, count), mode)))
    rng = np.random.default_rng(seed)
    random = sigmoid(signs * explainer.predict_logits(
        _remove_pixels(images, _random_masks(maps.shape, count, rng), mode)))
    return {
        "fraction": fraction, "mode": mode, "n_images": len(images),
        "predicted": [CLASS_NAMES[int(s > 0)] for s in signs],
        "p_original": p0.tolist(),
        "drop_salient": (p0 - salient).tolist(), "drop_random": (p0 - random).tolist(),
        "mean_drop_salient": float(np.mean(p0 - salient)), "mean_drop_random": float(np.mean(p0 - random)),
    }


def randomized_explainer(model: keras.Model | CamExplainer, seed: int = 0) -> CamExplainer:
    """An explainer of ``model``'s architecture with fresh random weights (``keras.models.clone_model``)."""
    trained = as_explainer(model)
    keras.utils.set_random_seed(seed)
    return CamExplainer(keras.models.clone_model(trained.model), trained.layer_names)


def randomization_check(model: keras.Model | CamExplainer, images: np.ndarray, method: str = "gradcam",
                        seed: int = 0, randomized: CamExplainer | None = None) -> float:
    """Mean Spearman rank correlation between the trained model's maps and a re-initialised copy's.

    Model-parameter randomisation test (Adebayo et al. 2018, "Sanity checks for saliency
    maps"): the same architecture with fresh random weights (:func:`randomized_explainer`,
    from ``seed``, unless ``randomized`` is given: checking several methods with one copy
    traces its functions once). Both explain the trained model's predicted class. Low
    correlation means the maps depend on what the model learned; high correlation means they
    mostly reflect the architecture or the image. Images where either map is flat (correlation
    undefined) are ignored; NaN if all are. ``model`` may be a :class:`CamExplainer` of the
    trained model.
    """
    trained = as_explainer(model)  # passing an explainer reuses its compiled functions
    randomized = randomized or randomized_explainer(trained, seed)
    maps, logits = trained.explain_with_logits(images, "predicted", method)
    classes = (logits >= 0).astype(np.int32)
    random_maps = randomized.explain(images, classes, method)
    rhos = [spearmanr(a.ravel(), b.ravel()).statistic if np.ptp(a) > 0 and np.ptp(b) > 0 else np.nan
            for a, b in zip(maps, random_maps)]
    return float(np.nanmean(rhos)) if not np.all(np.isnan(rhos)) else float("nan")


__all__ = ["deletion_drop", "randomization_check", "randomized_explainer"]
