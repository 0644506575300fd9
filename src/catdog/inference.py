"""Running a catdog Keras model or its TFLite export: logits and pooled features.

Two runners with one interface, ``predict(batch) -> {"logit": (n,), "features": (n, d)}`` on
raw RGB 0..255 images (plus ``"pet_prob"`` and ``"wild_prob"``, each ``(n,)``, when built with
a pet branch, see :func:`pet_branch`): :class:`KerasRunner` (one traced ``tf.function``, any batch size) and
:class:`TFLiteRunner` (an exported ``.tflite`` file). :func:`predict_logits` and
:func:`extract_features` run a Keras model over manifest items through the tf.data pipeline.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from catdog.conventions import FEATURES_LAYER, LOGIT_LAYER
from catdog.data import Item
from catdog.datasets import make_dataset
from catdog.efficientnet_lite import imagenet_classifier
from catdog.models import feature_model, logit_model
from catdog.paths import atomic_write

try:  # LiteRT when installed, else tf.lite.Interpreter (deprecated but present in TF 2.21)
    from ai_edge_litert.interpreter import Interpreter
except ImportError:
    Interpreter = tf.lite.Interpreter


# ImageNet classes (standard synset order) that are pets: 151-268 dog breeds, 281-285 domestic cats.
DOG_CLASSES = range(151, 269)
CAT_CLASSES = range(281, 286)
PET_CLASSES = (*DOG_CLASSES, *CAT_CLASSES)
# ...and the wild animals most often taken for them: 269-280 wolves, foxes, wild dogs and the hyena,
# 286-293 wild cats (cougar, lynx, leopard, ...), 356-362 weasels, mink, polecat, ferret, otter, skunk
# and badger (raccoons, which ImageNet has no class for, land mostly here).
WILD_CLASSES = (*range(269, 281), *range(286, 294), *range(356, 363))
SCALAR_OUTPUTS = ("logit", "pet_prob", "wild_prob")  # (n, 1) graph outputs returned as (n,)
PetBranch = tuple[str, int]  # (EfficientNet-Lite variant, input size), e.g. ("efficientnet_lite0", 160)


def _class_sum(probs: keras.KerasTensor, classes: Sequence[int], name: str) -> keras.KerasTensor:
    """The summed probability of ``classes``, shape (n, 1): a fixed 0/1 Dense layer (converts to TFLite as is)."""
    mask = np.zeros((int(probs.shape[-1]), 1), np.float32)
    mask[list(classes)] = 1.0
    summed = keras.layers.Dense(1, use_bias=False, trainable=False, name=name)
    out = summed(probs)
    summed.set_weights([mask])
    return out


def pet_branch(inputs: keras.KerasTensor, branch: PetBranch, weights: str | None = "imagenet", *,
               features: bool = False) -> dict[str, keras.KerasTensor]:
    """ImageNet probabilities of a pet and of a wild look-alike from a FROZEN EfficientNet-Lite.

    ``{"pet_prob": (n, 1), "wild_prob": (n, 1)}``: the summed softmax of :data:`PET_CLASSES` and
    of :data:`WILD_CLASSES` (with ``features``, also ``"branch_features"``: the frozen network's
    pooled features). The input is resized inside the graph to the branch's size, so one
    batch feeds both the classifier and this branch. The ImageNet head is only valid on its own
    untouched backbone, which is why this is a separate frozen network and not a head on the
    fine-tuned one.
    """
    variant, size = branch
    lite = imagenet_classifier(variant, int(size), weights)
    lite.trainable = False
    x = keras.layers.Resizing(int(size), int(size), interpolation="bilinear", name="pet_resize")(inputs)
    if features:
        pooled, logits = keras.Model(lite.inputs, [lite.get_layer(FEATURES_LAYER).output, lite.output],
                                     name=f"{variant}_with_features")(x, training=False)
    else:
        pooled, logits = None, lite(x, training=False)
    probs = keras.layers.Softmax(name="imagenet_softmax")(logits)
    out = {"pet_prob": _class_sum(probs, PET_CLASSES, "pet_prob"),
           "wild_prob": _class_sum(probs, WILD_CLASSES, "wild_prob")}
    return out | ({"branch_features": pooled} if features else {})


def inference_model(model: keras.Model, branch: PetBranch | None = None, *,
                    branch_weights: str | None = "imagenet") -> keras.Model:
    """image -> {"logit", "features"[, "pet_prob", "wild_prob"]}: what prediction and export run."""
    outputs = {"logit": model.get_layer(LOGIT_LAYER).output, "features": model.get_layer(FEATURES_LAYER).output}
    if branch is not None:
        outputs |= pet_branch(model.inputs[0], branch, branch_weights)
    return keras.Model(model.inputs, outputs, name="inference")


class KerasRunner:
    """A Keras model behind one traced ``tf.function`` (fixed signature: any batch size, one trace).

    With ``branch`` the same pass also returns ``"pet_prob"`` and ``"wild_prob"`` (see :func:`pet_branch`).
    """

    def __init__(self, model: keras.Model, jit_compile: bool = False, branch: PetBranch | None = None):
        self.image_size = int(model.inputs[0].shape[1])
        net = inference_model(model, branch)
        self.outputs = tuple(net.output.keys()) if isinstance(net.output, dict) else ("logit", "features")
        spec = tf.TensorSpec((None, self.image_size, self.image_size, 3), tf.float32, name="image")
        self._fn = tf.function(lambda x: net(x, training=False), input_signature=[spec], jit_compile=jit_compile)

    def predict(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """``{"logit": (n,), "features": (n, d)}`` (and ``"pet_prob"``, ``"wild_prob"``: (n,)) for 0..255 RGB images."""
        out = self._fn(np.asarray(batch, np.float32))
        return {name: value.numpy().reshape(-1) if name in SCALAR_OUTPUTS else value.numpy()
                for name, value in out.items()}


class TFLiteRunner:
    """Run an exported ``.tflite`` file on CPU; batches of any size (the input is resized on demand)."""

    def __init__(self, path: str | Path, num_threads: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"TFLite file not found: {self.path} (export it with catdog.export.export_tflite)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
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


# ---------------------------------------------------------------- manifest items
def extract_features(model: keras.Model, items: Sequence[Item], image_size: int, batch_size: int,
                     cache_file: Path | None = None) -> np.ndarray:
    """Pooled backbone features for ``items`` (no augmentation), cached in ``cache_file`` if given."""
    if cache_file is not None and cache_file.exists():
        with np.load(cache_file) as saved:
            if list(saved["paths"]) == [i.path for i in items]:
                return saved["features"]
    ds = make_dataset(items, image_size, batch_size)
    features = feature_model(model).predict(ds.map(lambda x, y: x), verbose=0)
    if cache_file is not None:  # written whole or not at all: an interrupted run leaves no torn cache
        buffer = io.BytesIO()
        np.savez(buffer, features=features, paths=np.array([i.path for i in items]))
        atomic_write(cache_file, buffer.getvalue())
    return features


def predict_logits(model: keras.Model, items: Sequence[Item], batch_size: int = 64) -> np.ndarray:
    """Logits (before the sigmoid) for ``items``, in order."""
    ds = make_dataset(items, int(model.inputs[0].shape[1]), batch_size).map(lambda x, y: x)
    return logit_model(model).predict(ds, verbose=0).reshape(-1)
