"""TensorFlow Lite export for fast CPU inference (float32 / float16 / dynamic / int8).

Every exported graph takes raw RGB pixels 0..255 (float32, any batch size) and returns
named outputs: ``"logit"`` (before the sigmoid, so the model card's temperature calibrates
it), ``"features"`` (the pooled backbone features, so open-set rejection works on TFLite
too) and, when the model's "neither" detector uses one, ``"pet_prob"`` and ``"wild_prob"`` from its frozen
ImageNet branch (:func:`catdog.inference.pet_branch`), computed in the same graph.
Files sit beside the model as ``<stem>.<variant>.tflite``, with ``<stem>.export.json``
recording the SHA-256 of the ``.keras`` file they came from, so a stale export is refused
(:func:`check_export`). :class:`catdog.inference.TFLiteRunner` runs the files; their speed is
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
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from catdog import paths
from catdog.card import ModelCard
from catdog.data import read_manifest, seeded_subset
from catdog.images import load_batch
from catdog.inference import inference_model
from catdog.models import image_size_of, load_model
from catdog.openset import OpenSetDetector, openset_path

VARIANTS = ("float32", "float16", "dynamic", "int8")
DEFAULT_VARIANTS = ("float32", "float16", "int8")


# ---------------------------------------------------------------- file naming
def tflite_path(model_path: str | Path, variant: str = "float32", out_dir: str | Path | None = None) -> Path:
    """``<stem>.<variant>.tflite`` beside the model (or in ``out_dir``)."""
    model_path = Path(model_path)
    return Path(out_dir or model_path.parent) / f"{model_path.stem}.{variant}.tflite"


def export_info_path(model_path: str | Path, out_dir: str | Path | None = None) -> Path:
    """``<stem>.export.json``: which model file (SHA-256) the ``.tflite`` files were made from."""
    model_path = Path(model_path)
    return Path(out_dir or model_path.parent) / f"{model_path.stem}.export.json"


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
                  variants: Sequence[str] = DEFAULT_VARIANTS, *, representative: np.ndarray | None = None,
                  n_representative: int = 100) -> dict[str, Path]:
    """Convert a saved ``.keras`` model to TFLite; returns ``{variant: path}``.

    Files are ``<stem>.<variant>.tflite`` beside the model (or in ``out_dir``), replaced
    atomically, plus ``<stem>.export.json`` (model SHA-256, sizes, conversion seconds).
    ``int8`` is calibrated on ``representative`` images (float 0..255, NHWC) or, by default,
    ``n_representative`` train images from the manifest named in the model card.
    """
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"unknown TFLite variant(s) {unknown or variants}; choose from {VARIANTS}")
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


_ANY_BRANCH = object()  # check_export's default: the pet branch is not checked


def check_export(model_path: str | Path, tflite_file: str | Path, *, branch: Any = _ANY_BRANCH) -> None:
    """Raise ValueError unless ``tflite_file`` was exported from the current ``model_path`` bytes and, when
    ``branch`` is given (a ``(variant, size)`` pet branch, or None for none), with that pet branch.

    The branch is checked because a detector refitted with another branch after the export would otherwise
    read ``pet_prob`` from the old network.
    """
    info_path = export_info_path(model_path, Path(tflite_file).parent)
    if not info_path.is_file():
        raise ValueError(f"{info_path} missing: cannot tell which model {tflite_file} came from; "
                         "re-export with catdog.export.export_tflite")
    info = json.loads(info_path.read_text())
    tflite_file = Path(tflite_file)
    listed = {f["file"]: f for f in info.get("files", {}).values()}
    record = listed.get(tflite_file.name, {})
    if info.get("model_sha256") != paths.file_sha256(model_path) or record.get("bytes") != tflite_file.stat().st_size:
        raise ValueError(f"{tflite_file} was exported from a different version of {model_path}; "
                         "re-export with catdog.export.export_tflite")
    if branch is not _ANY_BRANCH:
        exported = tuple(record["branch"]) if record.get("branch") else None
        if exported != (tuple(branch) if branch else None):
            raise ValueError(f"{tflite_file} was exported with the pet branch {exported}, but the 'neither' detector "
                             f"now uses {branch}; re-export it (`catdog export`)")


__all__ = ["VARIANTS", "DEFAULT_VARIANTS", "tflite_path", "export_info_path", "representative_images",
           "export_tflite", "check_export"]
