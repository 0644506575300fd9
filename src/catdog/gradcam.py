"""Class activation maps (Grad-CAM, Grad-CAM++, Score-CAM) for catdog's one-sigmoid models.

Conventions:

- catdog models have ONE output, p(dog) = sigmoid(logit). The **dog** map explains the
  logit (layer :data:`~catdog.conventions.LOGIT_LAYER`), the **cat** map explains ``-logit``
  (the cat logit, since p(cat) = sigmoid(-logit)). Gradients never go through the sigmoid,
  which saturates for confident predictions and would shrink every gradient towards zero.
- Class indices follow :data:`~catdog.conventions.CLASS_NAMES`: 0 = cat, 1 = dog. ``target``
  is ``"predicted"`` (default), ``"cat"``, ``"dog"`` or one class index per image.
- Maps are ``(N, H, W)`` float32 in [0, 1] at the model's input size: the class map is
  computed on the last convolutional feature map, ReLU'd, bilinearly upsampled and
  min-max normalised per image (a flat map becomes all zeros).
- An ensemble (:func:`catdog.models.ensemble_model`) is explained through every member's
  last convolutional layer at once: each member's class map is computed for the *ensemble's*
  logit, scaled by its number of positions (so for Grad-CAM each sums to that member's share
  of the logit) and upsampled, and the sum is ReLU'd and normalised (:func:`find_conv_layers`).

As in pytorch-grad-cam's ``BaseCAM``, a method only defines how the feature map's channels
are weighted (:data:`REGISTRY`); :class:`CamExplainer` owns the rest: targets, features and
gradients, the weighted sum, upsampling and normalisation. It builds one Keras model
``image -> (feature map, logit)`` and runs each method over a whole batch in one compiled
``tf.function`` call. Turning maps into pictures is :mod:`catdog.rendering`; testing them is
:mod:`catdog.faithfulness`; explaining files is :mod:`catdog.explain`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from catdog.conventions import CLASS_NAMES, FEATURES_LAYER, LOGIT_LAYER
from catdog.models import LAST_CONV_LAYER

log = logging.getLogger(__name__)

SCORECAM_TOP_K = 32  # channels Score-CAM masks with; all 1280 of MobileNetV2 would cost 40x more passes
SCORECAM_BATCH = 64  # masked images per forward pass: bounds Score-CAM's memory
GREY = 127.5  # the pixel value the [-1, 1] preprocessing maps to 0: "no information"

ArrayLikeImages = np.ndarray | Sequence[np.ndarray]  # (N, H, W, 3) RGB, uint8 or float 0..255


# ---------------------------------------------------------------- layers and targets
def conv_layer_names(model: keras.Model) -> list[str]:
    """Names of the model's layers with a 4-D ``(batch, h, w, channels)`` output, in graph order."""
    names = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):  # multi-output or unbuilt layer
            continue
        if len(shape) == 4:
            names.append(layer.name)
    return names


def find_conv_layer(model: keras.Model, layer_name: str | None = None) -> str:
    """The feature-map layer to explain: ``layer_name`` if given, else the backbone's last conv layer.

    Auto-detection uses :data:`catdog.models.LAST_CONV_LAYER` for models named
    ``catdog_<backbone>``, else the last 4-D layer before the pooling layer
    (:data:`~catdog.conventions.FEATURES_LAYER`). Raises ``ValueError`` listing the model's
    4-D layers when ``layer_name`` is not one of them.
    """
    candidates = conv_layer_names(model)
    if layer_name is not None:
        if layer_name not in candidates:
            kind = "has no 4-D output" if layer_name in {l.name for l in model.layers} else "does not exist"
            raise ValueError(f"layer {layer_name!r} {kind} in model {model.name!r}; its convolutional "
                             f"(4-D output) layers are: {', '.join(candidates)}")
        return layer_name
    backbone = model.name.removeprefix("catdog_")
    if model.name.startswith("catdog_") and LAST_CONV_LAYER.get(backbone) in candidates:
        return LAST_CONV_LAYER[backbone]
    names = [l.name for l in model.layers]
    stop = names.index(FEATURES_LAYER) if FEATURES_LAYER in names else len(names)
    before = [n for n in candidates if names.index(n) < stop]
    if not before:
        raise ValueError(f"model {model.name!r} has no convolutional (4-D output) layer to explain")
    return before[-1]


def find_conv_layers(model: keras.Model, layer_name: str | Sequence[str] | None = None) -> list[str]:
    """The feature-map layers to explain: ``layer_name`` (one or several) if given; for an ensemble, each
    member's last convolutional layer; else :func:`find_conv_layer`'s one layer."""
    if isinstance(layer_name, str):
        return [find_conv_layer(model, layer_name)]
    if layer_name is not None:
        return [find_conv_layer(model, name) for name in layer_name]
    if model.name != "catdog_ensemble":
        return [find_conv_layer(model)]
    # ensemble_model prefixes member i's layers with "m<i>_"
    names = {layer.name for layer in model.layers}
    prefixes = sorted({n.split("_", 1)[0] + "_" for n in names if n[0] == "m" and n.split("_", 1)[0][1:].isdigit()},
                      key=lambda p: int(p[1:-1]))
    if not prefixes:
        return [find_conv_layer(model)]
    candidates = conv_layer_names(model)
    layers = []
    for prefix in prefixes:  # each member's known last conv layer, else its last 4-D layer
        known = [prefix + name for name in LAST_CONV_LAYER.values() if prefix + name in candidates]
        own = [n for n in candidates if n.startswith(prefix)]
        if not known and not own:
            raise ValueError(f"ensemble member {prefix[:-1]!r} of {model.name!r} has no convolutional layer")
        layers.append(known[0] if known else own[-1])
    return layers


def target_classes(target: str | int | Sequence[int] | np.ndarray, n: int) -> np.ndarray:
    """``target`` as one int per image: 0 cat, 1 dog, -1 "the predicted class"."""
    if isinstance(target, str):
        if target == "predicted":
            return np.full(n, -1, np.int32)
        if target not in CLASS_NAMES:
            raise ValueError(f"unknown target {target!r}; use 'predicted', 'cat', 'dog' or class indices")
        return np.full(n, CLASS_NAMES.index(target), np.int32)
    classes = np.asarray(target)
    if classes.ndim > 1 or (classes.ndim == 1 and len(classes) != n):
        raise ValueError(f"target has {classes.size} class indices for {n} images")
    classes = np.broadcast_to(classes, (n,))
    if classes.dtype.kind in "US":  # class names per image
        classes = np.array([CLASS_NAMES.index(c) if c in CLASS_NAMES else -2 for c in classes])
    if not np.isin(classes, (0, 1)).all():
        raise ValueError(f"target classes must be 0/'cat' or 1/'dog', got {np.unique(np.asarray(target)).tolist()}")
    return classes.astype(np.int32)


def class_signs(classes: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """+1 where the dog logit is explained, -1 for cat; class -1 follows the prediction (logit >= 0 is dog)."""
    chosen = tf.where(classes < 0, tf.cast(logits >= 0, tf.int32), classes)
    return tf.cast(2 * chosen - 1, logits.dtype)


# ---------------------------------------------------------------- map post-processing
def upsample_and_normalize(cams: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """``(N, h, w)`` class maps -> ``(N, H, W)`` in [0, 1]: ReLU, bilinear upsampling, per-map min-max.

    A flat map becomes zeros instead of 0/0 = NaN.
    """
    cams = tf.nn.relu(tf.convert_to_tensor(cams, tf.float32))
    maps = tf.image.resize(cams[..., None], size, method="bilinear")[..., 0]
    return _minmax(maps, axes=(1, 2))


def _minmax(maps: tf.Tensor, axes: tuple[int, ...]) -> tf.Tensor:
    """Min-max normalise over ``axes``; (near-)flat slices become 0.

    "Flat" is relative (span <= 1e-6 of the largest magnitude), not absolute: class maps scale
    with the logit and the activations, and an untrained network's can be ~1e-11 yet structured.
    """
    low = tf.reduce_min(maps, axis=axes, keepdims=True)
    span = tf.reduce_max(maps, axis=axes, keepdims=True) - low
    scale = tf.reduce_max(tf.abs(maps), axis=axes, keepdims=True)
    flat = span <= 1e-6 * scale  # also true for all-zero slices (0 <= 0)
    return tf.where(flat, tf.zeros_like(maps), (maps - low) / tf.where(flat, tf.ones_like(span), span))


def _weighted_sum(feature_map: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """sum_k weights[n, k] * A[n, :, :, k] -> (N, h, w)."""
    return tf.einsum("nhwk,nk->nhw", feature_map, weights)


# ---------------------------------------------------------------- the methods: channel weights only
# A weighting function gets (explainer, images x (N, H, W, 3), signs (N,) +1 dog / -1 cat,
# feature map A (N, h, w, C), gradients dScore/dA (N, h, w, C) or None) and returns (N, C).
WeightFn = Callable[["CamExplainer", tf.Tensor, tf.Tensor, tf.Tensor, "tf.Tensor | None"], tf.Tensor]


def gradcam_weights(explainer: CamExplainer, x: tf.Tensor, signs: tf.Tensor, feature_map: tf.Tensor,
                    grads: tf.Tensor) -> tf.Tensor:
    """Grad-CAM (Selvaraju et al. 2017): the spatial mean of each channel's gradient."""
    return tf.reduce_mean(grads, axis=(1, 2))


def gradcampp_weights(explainer: CamExplainer, x: tf.Tensor, signs: tf.Tensor, feature_map: tf.Tensor,
                      grads: tf.Tensor) -> tf.Tensor:
    """Grad-CAM++ (Chattopadhay et al. 2018) with the exp(score) closed form for alpha.

    The exp(score) factor of the weights is a positive constant per map, removed by min-max.
    """
    g2, g3 = grads**2, grads**3
    sum_a = tf.reduce_sum(feature_map, axis=(1, 2), keepdims=True)
    alpha = g2 / (2.0 * g2 + sum_a * g3 + 1e-7)
    alpha = tf.where(grads != 0, alpha, tf.zeros_like(alpha))
    return tf.reduce_sum(alpha * tf.nn.relu(grads), axis=(1, 2))


def scorecam_weights(explainer: CamExplainer, x: tf.Tensor, signs: tf.Tensor, feature_map: tf.Tensor,
                     grads: None = None) -> tf.Tensor:
    """Score-CAM (Wang et al. 2020) on the ``explainer.top_k`` most active channels; the others weigh 0.

    Each chosen channel, upsampled and scaled to [0, 1], masks the image (masked-out pixels
    fade to grey, i.e. 0 after the model's preprocessing, as masking the normalised input does
    in the paper); its weight is the target class's probability on the masked image,
    sigmoid(+-logit) - the 2-class softmax the reference code uses. No gradients are involved.
    """
    n, k, channels = tf.shape(x)[0], explainer.top_k, tf.shape(feature_map)[3]
    top = tf.math.top_k(tf.reduce_mean(feature_map, axis=(1, 2)), k=k).indices  # (N, k)
    chosen = tf.gather(feature_map, top, axis=3, batch_dims=1)  # (N, h, w, k)
    masks = _minmax(tf.image.resize(chosen, explainer.image_size, method="bilinear"), axes=(1, 2))
    masks = tf.transpose(masks, (0, 3, 1, 2))[..., None]  # (N, k, H, W, 1)
    masked = x[:, None] * masks + GREY * (1.0 - masks)
    masked_logits = explainer.cam_model(tf.reshape(masked, (-1, *explainer.image_size, 3)), training=False)[-1]
    scores = tf.sigmoid(signs[:, None] * tf.reshape(masked_logits, (n, k)))  # (N, k)
    return tf.reduce_sum(tf.one_hot(top, channels) * scores[..., None], axis=1)  # scattered to (N, C)


@dataclass(frozen=True)
class CamMethod:
    """One heatmap method: its name, the label figures show, and how it weights the channels.

    ``uses_gradients`` says whether :class:`CamExplainer` must compute dScore/dA for it;
    ``masked_passes`` that it runs ``top_k`` masked copies of every image through the model
    (so the explainer shrinks its batches to bound memory).
    """

    name: str
    label: str
    weights: WeightFn
    uses_gradients: bool = True
    masked_passes: bool = False


REGISTRY: dict[str, CamMethod] = {m.name: m for m in (
    CamMethod("gradcam", "Grad-CAM", gradcam_weights),
    CamMethod("gradcampp", "Grad-CAM++", gradcampp_weights),
    CamMethod("scorecam", "Score-CAM", scorecam_weights, uses_gradients=False, masked_passes=True),
)}
METHODS: tuple[str, ...] = tuple(REGISTRY)  # the method names, in the order figures and reports show them


def cam_method(name: str) -> CamMethod:
    """The registered method called ``name``; ValueError listing the known ones otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; choose from {METHODS}")
    return REGISTRY[name]


def method_label(name: str) -> str:
    """The human label of a method name, e.g. ``"gradcampp"`` -> ``"Grad-CAM++"``."""
    return cam_method(name).label


# ---------------------------------------------------------------- the explainer
class CamExplainer:
    """Grad-CAM / Grad-CAM++ / Score-CAM for one catdog model, computed a batch at a time.

    One Keras model ``image -> (feature map, logit)`` is built here and every method runs
    as a compiled ``tf.function`` over a whole batch. Score-CAM uses the ``top_k`` channels
    with the highest mean activation per image (the faster "top-k" variant; the full method
    would need one forward pass per channel, 1280 for MobileNetV2), and runs the masked
    images through the model ``scorecam_batch`` at a time.
    """

    def __init__(self, model: keras.Model, layer_name: str | Sequence[str] | None = None, *,
                 top_k: int = SCORECAM_TOP_K, scorecam_batch: int = SCORECAM_BATCH):
        if LOGIT_LAYER not in {l.name for l in model.layers}:
            raise ValueError(f"model {model.name!r} has no {LOGIT_LAYER!r} layer; CamExplainer needs a catdog model")
        self.model = model
        self.layer_names = find_conv_layers(model, layer_name)  # several for an ensemble: one per member
        self.layer_name = self.layer_names[0]
        self.image_size = (int(model.inputs[0].shape[1]), int(model.inputs[0].shape[2]))
        self.cam_model = keras.Model(
            model.inputs, [*(model.get_layer(name).output for name in self.layer_names),
                           model.get_layer(LOGIT_LAYER).output], name="cam_features_logit")
        height, width = self.feature_map_size
        channels = min(int(out.shape[-1]) for out in self.cam_model.outputs[:-1])
        if height * width == 1:
            log.warning("layer %r of %s is 1x1 at %s px: its maps cannot localise anything (all zeros); "
                        "use a larger input or an earlier layer", self.layer_name, model.name, self.image_size)
        self.top_k = max(1, min(top_k, channels))
        self.scorecam_batch = max(scorecam_batch, self.top_k)
        images = tf.TensorSpec((None, *self.image_size, 3), tf.float32)
        classes = tf.TensorSpec((None,), tf.int32)
        self._logits_fn = tf.function(self._logits, input_signature=[images])
        self._fns = {name: tf.function(self._compiled_body(method), input_signature=[images, classes])
                     for name, method in REGISTRY.items()}

    @property
    def feature_map_size(self) -> tuple[int, int]:
        """``(height, width)`` of the explained feature map (the coarsest member's for an ensemble): how coarse
        the maps are before upsampling."""
        return min((int(out.shape[1]), int(out.shape[2])) for out in self.cam_model.outputs[:-1])

    # -- compiled bodies (traced once per explainer; inputs are whole batches)
    def _logits(self, x: tf.Tensor) -> tf.Tensor:
        return self.cam_model(x, training=False)[-1][:, 0]

    def _compiled_body(self, method: CamMethod) -> Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
        def body(x: tf.Tensor, classes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return self._cam(method, x, classes)
        return body

    def _cam(self, method: CamMethod, x: tf.Tensor, classes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """``(maps (N, H, W), dog logits (N,))``: the method's channel weights, then the shared steps."""
        with tf.GradientTape() as tape:
            # Watching the input puts the whole graph on the tape even when the backbone's
            # weights are frozen (non-trainable), as they are in saved catdog models.
            tape.watch(x)
            *feature_maps, logit = self.cam_model(x, training=False)
            logit = logit[:, 0]
            signs = tf.stop_gradient(class_signs(classes, logit))
            # Images are independent in inference mode, so d(sum)/dA_n = d(score_n)/dA_n.
            score = tf.reduce_sum(signs * logit)
        grads = tape.gradient(score, feature_maps) if method.uses_gradients else [None] * len(feature_maps)
        cams = [_weighted_sum(a, method.weights(self, x, signs, a, g)) for a, g in zip(feature_maps, grads)]
        if len(cams) == 1:
            return upsample_and_normalize(cams[0], self.image_size), logit
        # An ensemble: members' maps in common units (x positions: for Grad-CAM each sums to the member's share of
        # the logit), upsampled before the ReLU so that one member's negative evidence can cancel another's.
        summed = tf.add_n([tf.image.resize((c * float(c.shape[1] * c.shape[2]))[..., None], self.image_size,
                                           method="bilinear")[..., 0] for c in cams])
        return _minmax(tf.nn.relu(summed), axes=(1, 2)), logit

    # -- public API
    def prepare(self, images: ArrayLikeImages) -> np.ndarray:
        """``images`` as a float32 ``(N, H, W, 3)`` batch at the model's input size; ValueError otherwise."""
        x = np.asarray(images, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[1:] != (*self.image_size, 3):
            raise ValueError(f"expected images of shape (N, {self.image_size[0]}, {self.image_size[1]}, 3) "
                             f"(load them with catdog.images.load_image(path, {self.image_size[0]})), "
                             f"got {x.shape}")
        return x

    def predict_logits(self, images: ArrayLikeImages, batch_size: int = 32) -> np.ndarray:
        """Dog logits ``(N,)`` of ``images`` (RGB 0..255 at the model's input size)."""
        x = self.prepare(images)
        return np.concatenate([self._logits_fn(x[i:i + batch_size]).numpy() for i in range(0, len(x), batch_size)]
                              or [np.zeros(0, np.float32)])

    def explain_with_logits(self, images: ArrayLikeImages, target: Any = "predicted", method: str = "gradcam",
                            batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """``(maps (N, H, W) in [0, 1], dog logits (N,))`` for ``images`` - see :meth:`explain`."""
        spec = cam_method(method)
        x = self.prepare(images)
        classes = target_classes(target, len(x))
        if spec.masked_passes:
            batch_size = max(1, min(batch_size, self.scorecam_batch // self.top_k))
        maps, logits = [], []
        for i in range(0, len(x), batch_size):  # batches bound memory; each batch is one compiled call
            m, z = self._fns[method](x[i:i + batch_size], classes[i:i + batch_size])
            maps.append(m.numpy())
            logits.append(z.numpy())
        if not maps:
            return np.zeros((0, *self.image_size), np.float32), np.zeros(0, np.float32)
        return np.concatenate(maps), np.concatenate(logits)

    def explain(self, images: ArrayLikeImages, target: Any = "predicted", method: str = "gradcam",
                batch_size: int = 16) -> np.ndarray:
        """Heatmaps ``(N, H, W)`` float32 in [0, 1] at the model input size.

        ``images``: ``(N, H, W, 3)`` RGB 0..255 at the model's input size (a single
        ``(H, W, 3)`` image is treated as N=1). ``target``: ``"predicted"``, ``"cat"``,
        ``"dog"`` or class indices (0 cat, 1 dog) per image. ``method``: one of :data:`METHODS`.
        """
        return self.explain_with_logits(images, target, method, batch_size)[0]

    def explain_both(self, images: ArrayLikeImages, method: str = "gradcam",
                     batch_size: int = 16) -> dict[str, np.ndarray]:
        """``{"cat": maps, "dog": maps}``: both classes' maps, e.g. for a photo with a cat and a dog."""
        x = self.prepare(images)
        n = len(x)
        classes = np.repeat(np.array([0, 1], np.int32), n)
        maps = self.explain(np.concatenate([x, x]), classes, method, batch_size)
        return {"cat": maps[:n], "dog": maps[n:]}


def as_explainer(model_or_explainer: keras.Model | CamExplainer) -> CamExplainer:
    """``model_or_explainer`` itself if it is a :class:`CamExplainer` (its compiled functions reused), else a new one."""
    if isinstance(model_or_explainer, CamExplainer):
        return model_or_explainer
    return CamExplainer(model_or_explainer)


__all__ = ["METHODS", "REGISTRY", "CamMethod", "CamExplainer", "as_explainer", "cam_method", "method_label",
           "conv_layer_names", "find_conv_layer", "find_conv_layers", "target_classes", "class_signs", "upsample_and_normalize",
           "gradcam_weights", "gradcampp_weights", "scorecam_weights"]
