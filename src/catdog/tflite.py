"""TensorFlow Lite files of a catdog model: where they live, whether they are current, and a runner.

Everything here works without TensorFlow: the runner is LiteRT's interpreter (``ai-edge-litert``,
Google's standalone TFLite runtime), and the checks read only JSON and file bytes. That is what
lets ``catdog predict`` on a current export start in about a second instead of the five it takes
to import TensorFlow (:mod:`catdog.export` writes the files and needs TensorFlow; this module only
reads them).

Files sit beside the model as ``<stem>.<variant>.tflite``, with ``<stem>.export.json`` recording the
SHA-256 of the ``.keras`` file they came from and the "neither" branch they carry, so a stale export is
refused (:func:`check_export`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from catdog import paths
from catdog.conventions import SCALAR_OUTPUTS


# ---------------------------------------------------------------- file naming
def tflite_path(model_path: str | Path, variant: str = "float32", out_dir: str | Path | None = None) -> Path:
    """``<stem>.<variant>.tflite`` beside the model (or in ``out_dir``)."""
    model_path = Path(model_path)
    return Path(out_dir or model_path.parent) / f"{model_path.stem}.{variant}.tflite"


def export_info_path(model_path: str | Path, out_dir: str | Path | None = None) -> Path:
    """``<stem>.export.json``: which model file (SHA-256) the ``.tflite`` files were made from."""
    model_path = Path(model_path)
    return Path(out_dir or model_path.parent) / f"{model_path.stem}.export.json"


# ---------------------------------------------------------------- provenance
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


# ---------------------------------------------------------------- running
# XNNPACK runs the shipped float32 file at about 56 images/s in invocations of 4-8 images and 47.5 in
# invocations of 32 on 2 cores (measured): a smaller working set stays in cache. Larger batches are
# therefore run as several invocations of this size.
INVOKE_BATCH = 8


class TFLiteRunner:
    """Run an exported ``.tflite`` file on CPU; batches of any size (the input is resized on demand).

    ``predict(batch)`` has the interface of :class:`catdog.inference.KerasRunner`; a batch larger than
    ``invoke_batch`` runs as several invocations of at most that many images (see :data:`INVOKE_BATCH`).
    """

    def __init__(self, path: str | Path, num_threads: int | None = None, invoke_batch: int = INVOKE_BATCH):
        if invoke_batch < 1:
            raise ValueError(f"invoke_batch must be >= 1, got {invoke_batch}")
        self.path, self.invoke_batch = Path(path), invoke_batch
        if not self.path.is_file():
            raise FileNotFoundError(f"TFLite file not found: {self.path} (export it with catdog.export.export_tflite)")
        self.interpreter = Interpreter(model_path=str(self.path), num_threads=num_threads or os.cpu_count())
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
        self.outputs = tuple(self._outputs)  # "logit"; catdog exports add "features" (and "pet_prob", "wild_prob")
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
        if len(x) <= self.invoke_batch:
            return self._invoke(x)
        parts = [self._invoke(x[i:i + self.invoke_batch]) for i in range(0, len(x), self.invoke_batch)]
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def _invoke(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """One interpreter call on float32 images ``x``."""
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
            out[name] = y.reshape(-1) if name in SCALAR_OUTPUTS else y.copy()
        return out


__all__ = ["tflite_path", "export_info_path", "check_export", "TFLiteRunner"]
