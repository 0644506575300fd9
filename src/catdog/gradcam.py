"""Class activation heatmaps (Grad-CAM, Grad-CAM++, Score-CAM) for catdog's one-sigmoid models.

Conventions:

- catdog models have ONE output, p(dog) = sigmoid(logit). The **dog** map explains the
  logit (layer ``"logit"``), the **cat** map explains ``-logit`` (the cat logit, since
  p(cat) = sigmoid(-logit)). Gradients never go through the sigmoid, which saturates
  for confident predictions and would shrink every gradient towards zero.
- Class indices follow :data:`catdog.CLASS_NAMES`: 0 = cat, 1 = dog. ``target`` is
  ``"predicted"`` (default), ``"cat"``, ``"dog"`` or one class index per image.
- Maps are ``(N, H, W)`` float32 in [0, 1] at the model's input size: the class map is
  computed on the last convolutional feature map, ReLU'd, bilinearly upsampled and
  min-max normalised per image (a flat map becomes all zeros).

:class:`CamExplainer` builds one Keras model ``image -> (feature map, logit)`` and runs each
method over a whole batch in one compiled ``tf.function`` call. :func:`render` turns a map
into grayscale / colour heatmap / overlay images at the *original* photo's resolution, and
:func:`explain_paths` does everything for files and folders. :func:`deletion_drop` and
:func:`randomization_check` test whether the maps are faithful to the model.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import keras
import numpy as np
import tensorflow as tf

from catdog import CLASS_NAMES
from catdog.images import ImageError, iter_image_files, load_image, load_original
from catdog.models import LAST_CONV_LAYER, image_size_of, load_card

log = logging.getLogger(__name__)

METHODS = ("gradcam", "gradcampp", "scorecam")
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
    ``catdog_<backbone>``, else the last 4-D layer before ``"pool"``. Raises ``ValueError``
    listing the model's 4-D layers when ``layer_name`` is not one of them.
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
    stop = names.index("pool") if "pool" in names else len(names)
    before = [n for n in candidates if names.index(n) < stop]
    if not before:
        raise ValueError(f"model {model.name!r} has no convolutional (4-D output) layer to explain")
    return before[-1]


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




# ---------------------------------------------------------------- the explainer
class CamExplainer:
    """Grad-CAM / Grad-CAM++ / Score-CAM for one catdog model, computed a batch at a time.

    One Keras model ``image -> (feature map, logit)`` is built here and every method runs
    as a compiled ``tf.function`` over a whole batch. Score-CAM uses the ``top_k`` channels
    with the highest mean activation per image (the faster "top-k" variant; the full method
    would need one forward pass per channel, 1280 for MobileNetV2), and runs the masked
    images through the model ``scorecam_batch`` at a time.
    """

    def __init__(self, model: keras.Model, layer_name: str | None = None, *, top_k: int = SCORECAM_TOP_K,
                 scorecam_batch: int = SCORECAM_BATCH):
        if "logit" not in {l.name for l in model.layers}:
            raise ValueError(f"model {model.name!r} has no 'logit' layer; CamExplainer needs a catdog model")
        self.model = model
        self.layer_name = find_conv_layer(model, layer_name)
        self.image_size = (int(model.inputs[0].shape[1]), int(model.inputs[0].shape[2]))
        self.cam_model = keras.Model(
            model.inputs, [model.get_layer(self.layer_name).output, model.get_layer("logit").output],
            name="cam_features_logit")
        height, width, channels = (int(d) for d in self.cam_model.outputs[0].shape[1:])
        if height * width == 1:
            log.warning("layer %r of %s is 1x1 at %s px: its maps cannot localise anything (all zeros); "
                        "use a larger input or an earlier layer", self.layer_name, model.name, self.image_size)
        self.top_k = max(1, min(top_k, channels))
        self.scorecam_batch = max(scorecam_batch, self.top_k)
        images = tf.TensorSpec((None, *self.image_size, 3), tf.float32)
        classes = tf.TensorSpec((None,), tf.int32)
        self._logits_fn = tf.function(self._logits, input_signature=[images])
        self._fns = {m: tf.function(getattr(self, f"_{m}"), input_signature=[images, classes]) for m in METHODS}

    # -- compiled bodies (traced once per explainer; inputs are whole batches)
    def _logits(self, x: tf.Tensor) -> tf.Tensor:
        return self.cam_model(x, training=False)[1][:, 0]

    def _features_and_grads(self, x: tf.Tensor, classes: tf.Tensor):
        with tf.GradientTape() as tape:
            # Watching the input puts the whole graph on the tape even when the backbone's
            # weights are frozen (non-trainable), as they are in saved catdog models.
            tape.watch(x)
            feature_map, logit = self.cam_model(x, training=False)
            logit = logit[:, 0]
            signs = tf.stop_gradient(class_signs(classes, logit))
            # Images are independent in inference mode, so d(sum)/dA_n = d(score_n)/dA_n.
            score = tf.reduce_sum(signs * logit)
        return feature_map, tape.gradient(score, feature_map), logit

    def _gradcam(self, x: tf.Tensor, classes: tf.Tensor):
        feature_map, grads, logit = self._features_and_grads(x, classes)
        weights = tf.reduce_mean(grads, axis=(1, 2))
        return upsample_and_normalize(_weighted_sum(feature_map, weights), self.image_size), logit

    def _gradcampp(self, x: tf.Tensor, classes: tf.Tensor):
        # Grad-CAM++ (Chattopadhay et al. 2018) with the exp(score) closed form for alpha;
        # the exp(score) factor of the weights is a positive constant per map, removed by min-max.
        feature_map, grads, logit = self._features_and_grads(x, classes)
        g2, g3 = grads**2, grads**3
        sum_a = tf.reduce_sum(feature_map, axis=(1, 2), keepdims=True)
        alpha = g2 / (2.0 * g2 + sum_a * g3 + 1e-7)
        alpha = tf.where(grads != 0, alpha, tf.zeros_like(alpha))
        weights = tf.reduce_sum(alpha * tf.nn.relu(grads), axis=(1, 2))
        return upsample_and_normalize(_weighted_sum(feature_map, weights), self.image_size), logit

    def _scorecam(self, x: tf.Tensor, classes: tf.Tensor):
        # Score-CAM (Wang et al. 2020): each of the top-k channels, upsampled and scaled to
        # [0, 1], masks the image (masked-out pixels fade to grey, i.e. 0 after the model's
        # preprocessing, as masking the normalised input does in the paper); its weight is the
        # target class's probability on the masked image, sigmoid(+-logit) - the 2-class
        # softmax the reference code uses. No gradients are involved.
        feature_map, logit = self.cam_model(x, training=False)
        logit = logit[:, 0]
        signs = class_signs(classes, logit)
        n, k = tf.shape(x)[0], self.top_k
        top = tf.math.top_k(tf.reduce_mean(feature_map, axis=(1, 2)), k=k).indices  # (N, k)
        chosen = tf.gather(feature_map, top, axis=3, batch_dims=1)  # (N, h, w, k)
        masks = _minmax(tf.image.resize(chosen, self.image_size, method="bilinear"), axes=(1, 2))
        masks = tf.transpose(masks, (0, 3, 1, 2))[..., None]  # (N, k, H, W, 1)
        masked = x[:, None] * masks + GREY * (1.0 - masks)
        masked_logits = self.cam_model(tf.reshape(masked, (-1, *self.image_size, 3)), training=False)[1]
        scores = tf.sigmoid(signs[:, None] * tf.reshape(masked_logits, (n, k)))
        return upsample_and_normalize(_weighted_sum(chosen, scores), self.image_size), logit

    # -- public API
    def _prepare(self, images: ArrayLikeImages) -> np.ndarray:
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
        x = self._prepare(images)
        return np.concatenate([self._logits_fn(x[i:i + batch_size]).numpy() for i in range(0, len(x), batch_size)]
                              or [np.zeros(0, np.float32)])

    def explain_with_logits(self, images: ArrayLikeImages, target: Any = "predicted", method: str = "gradcam",
                            batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """``(maps (N, H, W) in [0, 1], dog logits (N,))`` for ``images`` - see :meth:`explain`."""
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
        x = self._prepare(images)
        classes = target_classes(target, len(x))
        if method == "scorecam":  # each image costs top_k masked passes: keep a chunk's passes bounded
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
        x = self._prepare(images)
        n = len(x)
        classes = np.repeat(np.array([0, 1], np.int32), n)
        maps = self.explain(np.concatenate([x, x]), classes, method, batch_size)
        return {"cat": maps[:n], "dog": maps[n:]}



def _explainer(model_or_explainer: keras.Model | CamExplainer) -> CamExplainer:
    if isinstance(model_or_explainer, CamExplainer):
        return model_or_explainer
    return CamExplainer(model_or_explainer)


# ---------------------------------------------------------------- rendering
def colormap_code(name: str) -> int:
    """OpenCV colormap constant for a name such as ``"jet"``, ``"viridis"``, ``"inferno"``."""
    code = getattr(cv2, f"COLORMAP_{name.upper()}", None)
    if not isinstance(code, int):
        known = sorted(a.removeprefix("COLORMAP_").lower() for a in dir(cv2) if a.startswith("COLORMAP_"))
        raise ValueError(f"unknown colormap {name!r}; OpenCV has: {', '.join(known)}")
    return code


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
    """Write an RGB (H, W, 3) or grayscale (H, W) uint8 array as PNG (creating parent folders)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.asarray(image)
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    if not cv2.imwrite(str(path), bgr):
        raise OSError(f"could not write {path}")
    return path


def save_render(out_dir: str | Path, stem: str, gray: np.ndarray, heatmap: np.ndarray,
                overlay: np.ndarray) -> dict[str, Path]:
    """Write ``<stem>_gray.png``, ``<stem>_heatmap.png`` and ``<stem>_overlay.png``; returns their paths."""
    out_dir = Path(out_dir)
    return {kind: save_png(out_dir / f"{stem}_{kind}.png", image)
            for kind, image in (("gray", gray), ("heatmap", heatmap), ("overlay", overlay))}


def panel_figure(original: np.ndarray, heatmap: np.ndarray, overlay: np.ndarray, title: str,
                 path: str | Path | None = None):
    """Three panels - original | heatmap | overlay - under ``title``; saved as PNG when ``path`` is given."""
    from matplotlib.figure import Figure  # no pyplot state, works without a GUI backend (as catdog.plots)

    fig = Figure(figsize=(10.5, 3.9), layout="constrained")
    for ax, image, name in zip(fig.subplots(1, 3), (original, heatmap, overlay), ("original", "heatmap", "overlay")):
        ax.imshow(image)
        ax.set_title(name, fontsize=10)
        ax.set_axis_off()
    fig.suptitle(title, fontsize=12)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig


# ---------------------------------------------------------------- files and folders
def _unique_stem(path: Path, used: set[str]) -> str:
    """``path``'s stem, or ``<parent>_<stem>`` / ``-2``, ``-3``... when taken (Cat/1.jpg vs Dog/1.jpg)."""
    stem = path.stem
    if stem in used:
        stem = f"{path.parent.name}_{path.stem}"
    base, i = stem, 2
    while stem in used:
        stem, i = f"{base}-{i}", i + 1
    used.add(stem)
    return stem


def _resolve_model(model: keras.Model | str | Path, temperature: float | None) -> tuple[keras.Model, float]:
    """Load ``model`` if it is a path; temperature = given, else the path's model card, else 1."""
    if isinstance(model, (str, Path)):
        from catdog.models import load_model

        card = load_card(model)
        return load_model(model), float(temperature or card.get("temperature", 1.0))
    return model, float(temperature or 1.0)


def explain_paths(model: keras.Model | str | Path, paths_or_folders: str | Path | Iterable[str | Path],
                  out_dir: str | Path, method: str = "gradcam", target: str = "predicted", colormap: str = "jet",
                  alpha: float = 0.4, temperature: float | None = None, batch_size: int = 16,
                  layer_name: str | None = None) -> list[dict]:
    """Explain image files and folders; write ``<stem>_{gray,heatmap,overlay,panel}.png`` per image to ``out_dir``.

    ``model`` is a loaded model or a ``.keras`` path (then ``temperature`` defaults to its
    model card's). Confidence = calibrated probability of the predicted class,
    ``sigmoid(logit / temperature)``. Unreadable files are skipped and reported (logged, and a
    row with ``"error"``); processing never stops. Returns one dict per input file.
    """
    model, temperature = _resolve_model(model, temperature)
    explainer = CamExplainer(model, layer_name)
    size = image_size_of(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = list(iter_image_files(paths_or_folders))
    rows: list[dict] = []
    used: set[str] = set()
    for start in range(0, len(files), batch_size):
        chunk: list[dict | None] = [None] * len(files[start:start + batch_size])  # rows in input order
        batch, inputs, originals = [], [], []
        for j, path in enumerate(files[start:start + batch_size]):
            try:
                inputs.append(load_image(path, size))
                originals.append(load_original(path))
                batch.append((j, path))
            except ImageError as exc:
                log.warning("skipped %s: %s", path, exc.reason)
                chunk[j] = {"path": str(path), "status": "skipped", "error": exc.reason}
        if batch:
            maps, logits = explainer.explain_with_logits(np.stack(inputs), target, method, batch_size)
            classes = target_classes(target, len(batch))
            for (j, path), original, cam, z, cls in zip(batch, originals, maps, logits, classes):
                chunk[j] = _write_one(out_dir, _unique_stem(path, used), path, original, cam, float(z), int(cls),
                                      method, colormap, alpha, temperature)
        rows += chunk
    return rows


def _write_one(out_dir: Path, stem: str, path: Path, original: np.ndarray, cam: np.ndarray, logit: float,
               cls: int, method: str, colormap: str, alpha: float, temperature: float) -> dict:
    """Render and save one image's four PNGs; return its result row."""
    predicted = CLASS_NAMES[int(logit >= 0)]
    explained = predicted if cls < 0 else CLASS_NAMES[cls]
    p_dog = 1.0 / (1.0 + math.exp(-logit / temperature))
    confidence = p_dog if predicted == "dog" else 1.0 - p_dog
    gray, heatmap, overlay = render(original, cam, colormap, alpha)
    files = save_render(out_dir, stem, gray, heatmap, overlay)
    title = f"{path.name}: predicted {predicted} ({confidence:.1%} sure) - {method} map for '{explained}'"
    files["panel"] = out_dir / f"{stem}_panel.png"
    panel_figure(original, heatmap, overlay, title, files["panel"])
    return {"path": str(path), "status": "ok", "error": "", "predicted": predicted, "p_dog": p_dog,
            "confidence": confidence, "explained": explained, "method": method,
            **{kind: str(p) for kind, p in files.items()}}


def overlays_for(model: keras.Model | CamExplainer, paths: Iterable[str | Path], method: str = "gradcam",
                 target: str = "predicted", colormap: str = "jet", alpha: float = 0.4,
                 max_side: int = 512) -> dict[Any, np.ndarray]:
    """``{path: overlay RGB uint8}`` for :func:`catdog.evaluation.write_report`'s gallery.

    Unreadable files are left out (the gallery shows its placeholder for them). Originals are
    read at most ``max_side`` pixels on their long side to keep memory small.
    """
    explainer = _explainer(model)
    size = explainer.image_size[0]
    kept, inputs, originals = [], [], []
    for path in paths:
        try:
            inputs.append(load_image(path, size))
            originals.append(load_original(path, max_side))
            kept.append(path)
        except ImageError as exc:
            log.warning("no overlay for %s: %s", path, exc.reason)
    if not kept:
        return {}
    maps = explainer.explain(np.stack(inputs), target, method)
    return {path: render(original, cam, colormap, alpha)[2] for path, original, cam in zip(kept, originals, maps)}


# ---------------------------------------------------------------- faithfulness
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
    explainer = _explainer(explainer)
    images = explainer._prepare(images)
    maps = np.asarray(maps, np.float32)
    if maps.shape != images.shape[:3]:
        raise ValueError(f"maps {maps.shape} do not match images {images.shape[:3]}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    count = max(1, round(fraction * maps.shape[1] * maps.shape[2]))
    logits = explainer.predict_logits(images)
    signs = np.where(logits >= 0, 1.0, -1.0)
    prob = lambda z: 1.0 / (1.0 + np.exp(-signs * z))  # noqa: E731 - predicted class's probability
    p0 = prob(logits)
    salient = prob(explainer.predict_logits(_remove_pixels(images, _top_masks(maps, count), mode)))
    rng = np.random.default_rng(seed)
    random = prob(explainer.predict_logits(_remove_pixels(images, _random_masks(maps.shape, count, rng), mode)))
    return {
        "fraction": fraction, "mode": mode, "n_images": len(images),
        "predicted": [CLASS_NAMES[int(s > 0)] for s in signs],
        "p_original": p0.tolist(),
        "drop_salient": (p0 - salient).tolist(), "drop_random": (p0 - random).tolist(),
        "mean_drop_salient": float(np.mean(p0 - salient)), "mean_drop_random": float(np.mean(p0 - random)),
    }


def randomization_check(model: keras.Model | CamExplainer, images: np.ndarray, method: str = "gradcam",
                        seed: int = 0) -> float:
    """Mean Spearman rank correlation between the trained model's maps and a re-initialised copy's.

    Model-parameter randomisation test (Adebayo et al. 2018, "Sanity checks for saliency
    maps"): ``keras.models.clone_model`` gives the same architecture with fresh random
    weights. Both explain the trained model's predicted class. Low correlation means the maps
    depend on what the model learned; high correlation means they mostly reflect the
    architecture or the image. Images where either map is flat (correlation undefined) are
    ignored; NaN if all are. ``model`` may be a :class:`CamExplainer` of the trained model.
    """
    from scipy.stats import spearmanr

    trained = _explainer(model)  # passing an explainer reuses its compiled functions
    keras.utils.set_random_seed(seed)
    random_model = keras.models.clone_model(trained.model)
    randomized = CamExplainer(random_model, trained.layer_name)
    maps, logits = trained.explain_with_logits(images, "predicted", method)
    classes = (logits >= 0).astype(np.int32)
    random_maps = randomized.explain(images, classes, method)
    rhos = [spearmanr(a.ravel(), b.ravel()).statistic if np.ptp(a) > 0 and np.ptp(b) > 0 else np.nan
            for a, b in zip(maps, random_maps)]
    return float(np.nanmean(rhos)) if not np.all(np.isnan(rhos)) else float("nan")


__all__ = ["METHODS", "CamExplainer", "conv_layer_names", "find_conv_layer", "target_classes",
           "upsample_and_normalize", "colormap_code", "render", "save_png", "save_render", "panel_figure",
           "explain_paths", "overlays_for", "deletion_drop", "randomization_check"]
