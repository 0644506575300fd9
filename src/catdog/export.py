"""Fast CPU inference: TensorFlow Lite export (float32 / float16 / int8) and small runners.

Every exported graph takes raw RGB pixels 0..255 (float32, any batch size) and returns two
named outputs: ``"logit"`` (before the sigmoid, so the model card's temperature calibrates
it) and ``"features"`` (the pooled backbone features, so open-set rejection works on TFLite
too). Files sit beside the model as ``<stem>.<variant>.tflite``, with ``<stem>.export.json``
recording the SHA-256 of the ``.keras`` file they came from, so a stale export is refused.

Conversion: ``tf.lite.TFLiteConverter.from_keras_model`` works with TF 2.21 / Keras 3.15 on
a functional model with dict outputs (it goes through a SavedModel export internally) and
gives a ``serving_default`` signature whose outputs keep their names.

Variants: ``float32`` (exact), ``float16`` (post-training float16 weights, half the size),
``dynamic`` (dynamic-range int8 weights), ``int8`` (full-integer quantization calibrated on
real train images, float input/output kept so callers still pass pixels 0..255).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

VARIANTS = ("float32", "float16", "dynamic", "int8")
DEFAULT_VARIANTS = ("float32", "float16", "int8")


# ---------------------------------------------------------------- file naming + fingerprints
def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (ties exports and open-set detectors to one model file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tflite_path(model_path: str | Path, variant: str = "float32", out_dir: str | Path | None = None) -> Path:
    """``<stem>.<variant>.tflite`` beside the model (or in ``out_dir``)."""
    model_path = Path(model_path)
    return Path(out_dir or model_path.parent) / f"{model_path.stem}.{variant}.tflite"


def export_info_path(model_path: str | Path, out_dir: str | Path | None = None) -> Path:
    """``<stem>.export.json``: which model file (SHA-256) the ``.tflite`` files were made from."""
    model_path = Path(model_path)
    return Path(out_dir or model_path.parent) / f"{model_path.stem}.export.json"


def _resolve_model_path(model_path: str | Path | None) -> Path:
    from catdog import paths

    path = Path(model_path) if model_path else paths.default_model_path()
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    return path


# ---------------------------------------------------------------- Keras side
def inference_model(model):
    """image -> {"logit": (n, 1), "features": (n, d)}: what prediction and export run."""
    import keras

    return keras.Model(model.inputs, {"logit": model.get_layer("logit").output,
                                      "features": model.get_layer("pool").output}, name="inference")


class KerasRunner:
    """A Keras model behind one traced ``tf.function`` (fixed signature: any batch size, one trace)."""

    def __init__(self, model, jit_compile: bool = False):
        import tensorflow as tf

        from catdog.models import image_size_of

        self.image_size = image_size_of(model)
        net = inference_model(model)
        spec = tf.TensorSpec((None, self.image_size, self.image_size, 3), tf.float32, name="image")
        self._fn = tf.function(lambda x: net(x, training=False), input_signature=[spec], jit_compile=jit_compile)

    def predict(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """``{"logit": (n,), "features": (n, d)}`` for a batch of 0..255 RGB images."""
        out = self._fn(np.asarray(batch, np.float32))
        return {"logit": out["logit"].numpy().reshape(-1), "features": out["features"].numpy()}

    def predict_logits(self, batch: np.ndarray) -> np.ndarray:
        return self.predict(batch)["logit"]


# ---------------------------------------------------------------- conversion
def representative_images(model_path: str | Path, image_size: int, n: int = 100, seed: int = 0) -> np.ndarray:
    """``n`` train-split images (seeded random subset of the card's manifest), for int8 calibration."""
    from catdog.data import read_manifest
    from catdog.images import ImageError, load_image
    from catdog.models import card_manifest

    manifest = card_manifest(model_path)
    if not manifest or not manifest.is_file():
        raise ValueError(f"int8 export needs real train images: the card of {model_path} names no readable "
                         "manifest; pass representative=<array of images> or a manifest-backed model")
    items = read_manifest(manifest, "train")
    order = np.random.default_rng(seed).permutation(len(items))
    images = []
    for i in order:
        try:
            images.append(load_image(items[i].path, image_size))
        except ImageError:
            continue
        if len(images) == n:
            break
    if not images:
        raise ValueError(f"{manifest}: no readable train images for int8 calibration")
    return np.stack(images).astype(np.float32)


def _converter(net, variant: str, representative: np.ndarray | None):
    import tensorflow as tf

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


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def export_tflite(model_path: str | Path | None = None, out_dir: str | Path | None = None,
                  variants: Sequence[str] = DEFAULT_VARIANTS, *, representative: np.ndarray | None = None,
                  n_representative: int = 100) -> dict[str, Path]:
    """Convert a saved ``.keras`` model to TFLite; returns ``{variant: path}``.

    Files are ``<stem>.<variant>.tflite`` beside the model (or in ``out_dir``), replaced
    atomically, plus ``<stem>.export.json`` (model SHA-256, sizes, conversion seconds).
    ``int8`` is calibrated on ``representative`` images (float 0..255, NHWC) or, by default,
    ``n_representative`` train images from the manifest named in the model card.
    """
    import tensorflow as tf

    from catdog.models import image_size_of, load_model

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"unknown TFLite variant(s) {unknown or variants}; choose from {VARIANTS}")
    model_path = _resolve_model_path(model_path)
    model = load_model(model_path)
    size = image_size_of(model)
    net = inference_model(model)
    if "int8" in variants and representative is None:
        representative = representative_images(model_path, size, n_representative)
    out: dict[str, Path] = {}
    info_path = export_info_path(model_path, out_dir)
    info_path.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(info_path.read_text()) if info_path.is_file() else {}
    sha = file_sha256(model_path)
    files = previous.get("files", {}) if previous.get("model_sha256") == sha else {}
    for variant in variants:
        start = time.time()
        with contextlib.redirect_stdout(io.StringIO()):  # the SavedModel export prints every captured tensor
            data = _converter(net, variant, representative).convert()
        path = tflite_path(model_path, variant, out_dir)
        _atomic_write(path, data)
        out[variant] = path
        files[variant] = {"file": path.name, "bytes": len(data), "convert_seconds": round(time.time() - start, 1)}
        if variant == "int8":
            files[variant]["representative_images"] = int(len(representative))
    info = {"model_file": model_path.name, "model_sha256": sha, "image_size": size,
            "inputs": "image: float32 RGB 0..255, shape (n, size, size, 3)",
            "outputs": {"logit": "(n, 1) logit before the sigmoid", "features": "(n, d) pooled backbone features"},
            "files": files, "tensorflow": tf.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    return out


def check_export(model_path: str | Path, tflite_file: str | Path) -> None:
    """Raise ValueError unless ``tflite_file`` was exported from the current ``model_path`` bytes."""
    info_path = export_info_path(model_path, Path(tflite_file).parent)
    if not info_path.is_file():
        raise ValueError(f"{info_path} missing: cannot tell which model {tflite_file} came from; "
                         "re-export with catdog.export.export_tflite")
    info = json.loads(info_path.read_text())
    tflite_file = Path(tflite_file)
    listed = {f["file"]: f["bytes"] for f in info.get("files", {}).values()}
    if (info.get("model_sha256") != file_sha256(model_path)
            or listed.get(tflite_file.name) != tflite_file.stat().st_size):
        raise ValueError(f"{tflite_file} was exported from a different version of {model_path}; "
                         "re-export with catdog.export.export_tflite")


# ---------------------------------------------------------------- TFLite runner
def _interpreter_class():
    """LiteRT's interpreter when installed, else ``tf.lite.Interpreter`` (deprecated but present in TF 2.21)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter


class TFLiteRunner:
    """Run an exported ``.tflite`` file on CPU; batches of any size (the input is resized on demand)."""

    def __init__(self, path: str | Path, num_threads: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"TFLite file not found: {self.path} (export it with catdog.export.export_tflite)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
            interpreter = _interpreter_class()
            self.interpreter = interpreter(model_path=str(self.path), num_threads=num_threads or os.cpu_count())
        self.interpreter.allocate_tensors()
        signatures = self.interpreter.get_signature_list()
        if signatures:
            runner = self.interpreter.get_signature_runner(next(iter(signatures)))
            self._input = next(iter(runner.get_input_details().values()))
            self._outputs = {name: d for name, d in runner.get_output_details().items()}
        else:  # a bare graph: tell logit from features by width
            self._input = self.interpreter.get_input_details()[0]
            self._outputs = {("logit" if d["shape"][-1] == 1 else "features"): d
                             for d in self.interpreter.get_output_details()}
        if "logit" not in self._outputs:
            raise ValueError(f"{self.path}: no 'logit' output (outputs: {sorted(self._outputs)})")
        self.outputs = tuple(self._outputs)  # "logit" and, for catdog exports, "features"
        self.image_size = int(self._input["shape_signature"][1])
        self._batch = int(self._input["shape"][0])

    def _set_batch(self, n: int) -> None:
        if n != self._batch:
            self.interpreter.resize_tensor_input(self._input["index"], [n, self.image_size, self.image_size, 3])
            self.interpreter.allocate_tensors()
            self._batch = n

    def predict(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """``{"logit": (n,), "features": (n, d)}`` (features only if the file has them)."""
        x = np.asarray(batch, np.float32)
        self._set_batch(len(x))
        dtype = self._input["dtype"]
        if dtype != np.float32:  # an integer-input export: quantize the pixels ourselves
            scale, zero = self._input["quantization"]
            x = np.clip(np.round(x / scale + zero), np.iinfo(dtype).min, np.iinfo(dtype).max).astype(dtype)
        self.interpreter.set_tensor(self._input["index"], x)
        self.interpreter.invoke()
        out = {}
        for name, d in self._outputs.items():
            y = self.interpreter.get_tensor(d["index"])
            if y.dtype != np.float32:
                scale, zero = d["quantization"]
                y = (y.astype(np.float32) - zero) * scale
            out[name] = y.reshape(-1) if name == "logit" else y.copy()
        return out

    def predict_logits(self, batch: np.ndarray) -> np.ndarray:
        """Logits, shape ``(n,)``."""
        return self.predict(batch)["logit"]


# ---------------------------------------------------------------- timing helper
def images_per_second(fn, images: np.ndarray, batch_size: int, *, warmup: int = 2, max_seconds: float = 60.0,
                      min_batches: int = 3) -> dict[str, Any]:
    """Throughput of ``fn(batch)`` over preloaded ``images`` in batches of ``batch_size``.

    Warms up on ``warmup`` batches first (tracing, allocation), then times full batches until all
    images are done or ``max_seconds`` have passed (after at least ``min_batches``).
    """
    batches = [images[i:i + batch_size] for i in range(0, len(images) - batch_size + 1, batch_size)]
    if not batches:
        raise ValueError(f"need at least {batch_size} images to time batch size {batch_size}")
    for b in batches[:warmup]:
        fn(b)
    done, start = 0, time.perf_counter()
    for i, b in enumerate(batches):
        fn(b)
        done += len(b)
        if i + 1 >= min_batches and time.perf_counter() - start > max_seconds:
            break
    seconds = time.perf_counter() - start
    return {"images": done, "seconds": round(seconds, 3), "images_per_second": round(done / seconds, 2),
            "ms_per_batch": round(1000 * seconds / (done / batch_size), 2)}
