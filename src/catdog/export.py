"""TensorFlow Lite export for fast CPU inference (float32 / float16 / dynamic / int8).

Every exported graph takes raw RGB pixels 0..255 (float32, any batch size) and returns
named outputs: ``"logit"`` (before the sigmoid, so the model card's temperature calibrates
it), ``"features"`` (the pooled backbone features, so open-set rejection works on TFLite
too) and, when the model's "neither" detector uses one, ``"pet_prob"`` and ``"wild_prob"`` from its frozen
ImageNet branch (:func:`catdog.inference.pet_branch`), computed in the same graph.
Files sit beside the model as ``<stem>.<variant>.tflite``, with ``<stem>.export.json``
recording the SHA-256 of the ``.keras`` file they came from, so a stale export is refused
(:func:`catdog.tflite.check_export`). :class:`catdog.tflite.TFLiteRunner` runs the files; their speed is
measured by :func:`catdog.benchmarks.inference_benchmark`.

Conversion: ``tf.lite.TFLiteConverter.from_keras_model`` works with TF 2.21 / Keras 3.15 on
a functional model with dict outputs (it goes through a SavedModel export internally) and
gives a ``serving_default`` signature whose outputs keep their names.

Variants: ``float32`` (exact), ``float16`` (post-training float16 weights, half the size),
``dynamic`` (dynamic-range int8 weights), ``int8`` (full-integer quantization calibrated on
real train images, float input/output kept so callers still pass pixels 0..255).
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from catdog import paths
from catdog.card import ModelCard
from catdog.conventions import DEFAULT_TFLITE_VARIANTS, TFLITE_VARIANTS
from catdog.data import read_manifest, seeded_subset
from catdog.images import load_batch
from catdog.inference import inference_model
from catdog.models import image_size_of, load_model
from catdog.openset import OpenSetDetector, openset_path
from catdog.tflite import export_info_path, tflite_path

def _resolve_model_path(model_path: str | Path | None) -> Path:
    path = Path(model_path) if model_path else paths.default_model_path()
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    return path


# ---------------------------------------------------------------- conversion
def representative_images(model_path: str | Path, image_size: int, n: int = 100, seed: int = 0) -> np.ndarray:
    """``n`` train-split images (seeded random subset of the card's manifest), for int8 calibration."""
    card = ModelCard.read(model_path)
    manifest = card.manifest_path if card else None
    if manifest is None or not manifest.is_file():
        raise ValueError(f"int8 export needs real train images: the card of {model_path} names no readable "
                         "manifest; pass representative=<array of images> or a manifest-backed model")
    # A uniform subset (manifests list only readable files); an unreadable one just leaves fewer images.
    # Not "the first n readable of a larger subset": manifests are sorted by class, so that would favour cats.
    batch = load_batch([i.path for i in seeded_subset(read_manifest(manifest, "train"), n, seed)], image_size)
    if not len(batch.paths):
        raise ValueError(f"{manifest}: no readable train images for int8 calibration")
    return batch.inputs.astype(np.float32)


def _converter(net: keras.Model, variant: str, representative: np.ndarray | None) -> tf.lite.TFLiteConverter:
    """A TFLite converter for ``net`` set up for ``variant``."""
    converter = tf.lite.TFLiteConverter.from_keras_model(net)
    if variant == "float32":
        return converter
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "int8":
        converter.representative_dataset = lambda: ([image[None]] for image in representative)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # inference_input_type / output_type stay float32: callers keep passing pixels 0..255.
    return converter


def export_tflite(model_path: str | Path | None = None, out_dir: str | Path | None = None,
                  variants: Sequence[str] = DEFAULT_TFLITE_VARIANTS, *, representative: np.ndarray | None = None,
                  n_representative: int = 100) -> dict[str, Path]:
    """Convert a saved ``.keras`` model to TFLite; returns ``{variant: path}``.

    Files are ``<stem>.<variant>.tflite`` beside the model (or in ``out_dir``), replaced
    atomically, plus ``<stem>.export.json`` (model SHA-256, sizes, conversion seconds).
    ``int8`` is calibrated on ``representative`` images (float 0..255, NHWC) or, by default,
    ``n_representative`` train images from the manifest named in the model card.
    """
    unknown = [v for v in variants if v not in TFLITE_VARIANTS]
    if unknown or not variants:
        raise ValueError(f"unknown TFLite variant(s) {unknown or variants}; choose from {TFLITE_VARIANTS}")
    model_path = _resolve_model_path(model_path)
    model = load_model(model_path)
    size = image_size_of(model)
    detector = OpenSetDetector.load(openset_path(model_path)) if openset_path(model_path).is_file() else None
    branch = detector.branch if detector is not None else None
    net = inference_model(model, branch)  # the detector's pet branch, if any, is exported with the classifier
    if "int8" in variants and representative is None:
        representative = representative_images(model_path, size, n_representative)
    out: dict[str, Path] = {}
    info_path = export_info_path(model_path, out_dir)
    previous = json.loads(info_path.read_text()) if info_path.is_file() else {}
    sha = paths.file_sha256(model_path)
    files = previous.get("files", {}) if previous.get("model_sha256") == sha else {}
    for variant in variants:
        start = time.time()
        with contextlib.redirect_stdout(io.StringIO()):  # the SavedModel export prints every captured tensor
            data = _converter(net, variant, representative).convert()
        path = tflite_path(model_path, variant, out_dir)
        paths.atomic_write(path, data)
        out[variant] = path
        files[variant] = {"file": path.name, "bytes": len(data), "convert_seconds": round(time.time() - start, 1),
                          "branch": list(branch) if branch else None}
        if variant == "int8":
            files[variant]["representative_images"] = int(len(representative))
    info = {"model_file": model_path.name, "model_sha256": sha, "image_size": size,
            "inputs": "image: float32 RGB 0..255, shape (n, size, size, 3)",
            "outputs": {"logit": "(n, 1) logit before the sigmoid", "features": "(n, d) pooled backbone features",
                        **({"pet_prob": f"(n, 1) ImageNet pet probability, frozen {branch[0]} at {branch[1]} px",
                            "wild_prob": "(n, 1) ImageNet probability of a wild look-alike, same branch"}
                           if branch else {})},
            "files": files, "tensorflow": tf.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    paths.atomic_write(info_path, json.dumps(info, indent=2) + "\n")
    return out


def classifier_tflite(model: keras.Model, path: str | Path) -> Path:
    """The classifier alone (``logit`` and ``features``, no "neither" branch) as a float32 TFLite file at ``path``.

    For comparing the cost of networks: :func:`export_tflite` adds the pet branch of a model's detector, which
    one model may have and another not.
    """
    with contextlib.redirect_stdout(io.StringIO()):  # the SavedModel export prints every captured tensor
        data = _converter(inference_model(model), "float32", None).convert()
    return paths.atomic_write(path, data)


__all__ = ["representative_images", "export_tflite", "classifier_tflite"]
