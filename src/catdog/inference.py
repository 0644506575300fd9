"""Running a catdog Keras model: logits and pooled features.

:class:`KerasRunner` (one traced ``tf.function``, any batch size) computes
``predict(batch) -> {"logit": (n,), "features": (n, d)}`` on raw RGB 0..255 images (plus
``"pet_prob"`` and ``"wild_prob"``, each ``(n,)``, when built with a pet branch, see :func:`pet_branch`);
:class:`catdog.tflite.TFLiteRunner` does the same for an exported file, without TensorFlow.
:func:`predict_logits` and :func:`extract_features` run a Keras model over manifest items through
the tf.data pipeline.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from catdog.conventions import FEATURES_LAYER, LOGIT_LAYER, SCALAR_OUTPUTS, PetBranch
from catdog.data import Item
from catdog.datasets import make_dataset
from catdog.efficientnet_lite import imagenet_classifier
from catdog.models import feature_model, logit_model
from catdog.paths import atomic_write

# ImageNet classes (standard synset order) that are pets: 151-268 dog breeds, 281-285 domestic cats.
DOG_CLASSES = range(151, 269)
CAT_CLASSES = range(281, 286)
PET_CLASSES = (*DOG_CLASSES, *CAT_CLASSES)
# ...and the wild animals most often taken for them: 269-280 wolves, foxes, wild dogs and the hyena,
# 286-293 wild cats (cougar, lynx, leopard, ...), 356-362 weasels, mink, polecat, ferret, otter, skunk
# and badger (raccoons, which ImageNet has no class for, land mostly here).
WILD_CLASSES = (*range(269, 281), *range(286, 294), *range(356, 363))


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
