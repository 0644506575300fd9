"""Grad-CAM benchmarks: batched heatmaps against a one-image reference, and how faithful they are."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from scipy.stats import wilcoxon

from catdog.benchmarks.common import ModelLike, keras_model_of, machine_environment, skipped_rows, write_report
from catdog.conventions import CLASS_NAMES, LOGIT_LAYER
from catdog.data import seeded_subset
from catdog.faithfulness import deletion_drop, randomization_check, randomized_explainer
from catdog.gradcam import CamExplainer, find_conv_layers, method_label
from catdog.images import load_batch
from catdog.models import image_size_of


# ---------------------------------------------------------------- Grad-CAM speed
def _reference_classes(target: Any, n: int) -> list[int | None]:
    """One class per image: 0 cat, 1 dog, None for "the predicted class"."""
    if isinstance(target, str):
        if target == "predicted":
            return [None] * n
        if target not in CLASS_NAMES:
            raise ValueError(f"unknown target {target!r}; use 'predicted', 'cat', 'dog' or class indices")
        return [CLASS_NAMES.index(target)] * n
    targets = list(np.broadcast_to(np.asarray(target), (n,)))
    classes = [CLASS_NAMES.index(t) if t in CLASS_NAMES else t for t in targets]
    if any(c not in (0, 1) for c in classes):
        raise ValueError(f"target classes must be 0/'cat' or 1/'dog', got {targets}")
    return [int(c) for c in classes]


def _reference_map(cam: np.ndarray, size: tuple[int, int], upsample: bool = True) -> np.ndarray:
    """A class map at input ``size`` in [0, 1]: ReLU, bilinear resize, min-max (a flat map -> zeros).

    "Flat" is relative to the map's own magnitude (span <= 1e-6 of its largest value): maps
    scale with the logit, and an untrained network's can be tiny yet structured. ``upsample=False``:
    ``cam`` is already at ``size``.
    """
    cam = np.maximum(np.asarray(cam, np.float32), 0.0)
    up = (tf.image.resize(cam[None, :, :, None], size, method="bilinear").numpy()[0, :, :, 0] if upsample
          else cam).astype(np.float64)
    low, span = up.min(), up.max() - up.min()
    if span <= 1e-6 * np.abs(up).max():  # also an all-zero map (0 <= 0)
        return np.zeros(size, np.float32)
    return ((up - low) / span).astype(np.float32)


def reference_gradcam(model: keras.Model, images: np.ndarray, layer_name: str | Sequence[str] | None = None,
                      target: Any = "predicted") -> np.ndarray:
    """Per-image Grad-CAM written as the Keras example does it (keras.io/examples/vision/grad_cam).

    A grad model ``image -> (conv output, logit)``, then one eager ``tf.GradientTape`` per
    image. Two deliberate differences: the score is the dog logit or its negative for cat
    (the example uses the softmax output ``model.output``; ours is one sigmoid), and the map is
    ReLU'd, bilinearly upsampled to the input size and min-max normalised (a flat map becomes
    zeros), the conventions :class:`catdog.gradcam.CamExplainer` documents. An ensemble is
    explained through each member's layer (:func:`catdog.gradcam.find_conv_layers`): each member's
    map of the ensemble's logit, times its number of positions, upsampled, summed, then ReLU and
    min-max, as :mod:`catdog.gradcam` defines it. That part and the class choice are written here,
    independently of :mod:`catdog.gradcam` (only the layer lookup is shared), so this is a ground
    truth for tests. The grad model is built once, not per image as the example's function does,
    so the speed comparison measures batching and compilation, not model construction. Slow on
    purpose: the baseline for :func:`gradcam_benchmark`.
    ``target`` is ``"predicted"``, ``"cat"``, ``"dog"`` or one class (index or name) per image.
    """
    layer_names = find_conv_layers(model, layer_name)
    grad_model = keras.Model(model.inputs, [[model.get_layer(name).output for name in layer_names],
                                            model.get_layer(LOGIT_LAYER).output])
    size = (int(model.inputs[0].shape[1]), int(model.inputs[0].shape[2]))
    images = np.asarray(images, np.float32)
    heatmaps = []
    for image, cls in zip(images, _reference_classes(target, len(images))):
        img_array = tf.convert_to_tensor(image[None])
        with tf.GradientTape() as tape:
            tape.watch(img_array)  # keeps the graph on the tape even if the backbone is frozen
            conv_outputs, logit = grad_model(img_array)
            is_dog = cls == 1 or (cls is None and float(logit[0, 0]) >= 0)
            class_channel = logit[:, 0] if is_dog else -logit[:, 0]
        cams = []
        for conv_output, grads in zip(conv_outputs, tape.gradient(class_channel, conv_outputs)):
            pooled_grads = tf.reduce_mean(grads, axis=(0, 1, 2))
            cams.append(tf.squeeze(conv_output[0] @ pooled_grads[..., tf.newaxis], axis=-1).numpy())
        if len(cams) == 1:
            heatmaps.append(_reference_map(cams[0], size))
        else:  # members in common units (x positions), summed before the ReLU
            summed = sum(tf.image.resize((cam * cam.size)[None, :, :, None], size, method="bilinear").numpy()[0, :, :, 0]
                         for cam in cams)
            heatmaps.append(_reference_map(summed, size, upsample=False))
    return np.stack(heatmaps) if heatmaps else np.zeros((0, *size), np.float32)


def gradcam_benchmark(model: keras.Model | ModelLike, paths: Sequence[Any], out_dir: str | Path,
                      n_images: int = 64, batch_size: int = 16) -> dict:
    """Time per-image Grad-CAM (:func:`reference_gradcam`) against batched :class:`CamExplainer`.

    ``model`` is a Bundle, a model file or a Keras model. Explains the same first ``n_images``
    readable images of ``paths`` both ways (each warmed up first, image decoding excluded from
    the timings); reports images/second, the speed-up and the largest difference between the
    two sets of maps. Writes ``gradcam_speed.json`` and ``gradcam_speed.md`` into ``out_dir``.
    """
    model = keras_model_of(model)
    batch = load_batch(paths, image_size_of(model), limit=n_images)
    images = batch.inputs
    if len(images) == 0:
        raise ValueError("gradcam_benchmark: none of the given images could be read")
    explainer = CamExplainer(model)
    reference_gradcam(model, images[:2], explainer.layer_names)  # warm-up: first eager calls are slow
    explainer.explain(images[:batch_size], batch_size=batch_size)  # warm-up: traces the tf.function

    start = time.perf_counter()
    reference = reference_gradcam(model, images, explainer.layer_names)
    reference_seconds = time.perf_counter() - start
    start = time.perf_counter()
    batched = explainer.explain(images, batch_size=batch_size)
    batched_seconds = time.perf_counter() - start

    result = {
        "model": model.name, "image_size": image_size_of(model), "layer": ", ".join(explainer.layer_names),
        "n_images": len(images), "batch_size": batch_size,
        "reference_seconds": round(reference_seconds, 3),
        "reference_images_per_second": round(len(images) / reference_seconds, 2),
        "batched_seconds": round(batched_seconds, 3),
        "batched_images_per_second": round(len(images) / batched_seconds, 2),
        "speedup": round(reference_seconds / batched_seconds, 2),
        "max_abs_map_difference": float(np.abs(reference - batched).max()),
        "skipped": skipped_rows(batch), "environment": machine_environment(),
    }
    md = (f"# Grad-CAM speed: per-image reference vs batched `CamExplainer`\n\n"
          f"Model `{result['model']}` at {result['image_size']} px, layer `{result['layer']}`, "
          f"{result['n_images']} images, batch size {batch_size}, {result['environment']['cpu_count']} CPU cores "
          f"(1-min load average at the end: {result['environment']['load_average_1min']}).\n\n"
          "| implementation | seconds | images/s |\n|---|---:|---:|\n"
          f"| per image (Keras example style, eager) | {result['reference_seconds']} | "
          f"{result['reference_images_per_second']} |\n"
          f"| batched `CamExplainer` (one tf.function per batch) | {result['batched_seconds']} | "
          f"{result['batched_images_per_second']} |\n\n"
          f"Speed-up: **{result['speedup']}x**. Largest difference between the two sets of maps: "
          f"{result['max_abs_map_difference']:.2e}.\n")
    write_report(out_dir, "gradcam_speed", result, md)
    return result


# ---------------------------------------------------------------- Grad-CAM faithfulness
def faithfulness_report(model: keras.Model | ModelLike, items: Sequence[Any], out_dir: str | Path,
                        fractions: Sequence[float] = (0.1, 0.2, 0.4),
                        methods: Sequence[str] = ("gradcam", "gradcampp", "scorecam"),
                        modes: Sequence[str] = ("blur",), max_images: int | None = 200,
                        randomization_images: int = 16, seed: int = 0) -> dict:
    """Deletion test and randomisation sanity check of each heatmap method; writes ``faithfulness.{json,md}``.

    ``model`` is a Bundle, a model file or a Keras model. ``items`` are
    :class:`catdog.data.Item` s or image paths (e.g. the test split). At most ``max_images`` of
    them are used (a seeded random subset; Score-CAM costs 32 forward passes per image). For
    every method, mode and fraction it reports the mean drop in the predicted class's
    probability when the most salient vs. as many random pixels are removed
    (:func:`catdog.faithfulness.deletion_drop`), how often salient beat random, and a paired
    Wilcoxon p-value; plus the Spearman correlation with a re-initialised model's maps
    (:func:`catdog.faithfulness.randomization_check`, on the first ``randomization_images`` images).
    """
    model = keras_model_of(model)
    paths = seeded_subset([getattr(item, "path", item) for item in items], max_images, seed)
    batch = load_batch(paths, image_size_of(model))
    kept, images = [str(p) for p in batch.paths], batch.inputs
    if len(images) == 0:
        raise ValueError("faithfulness_report: none of the given images could be read")
    explainer = CamExplainer(model)
    rows, randomization, randomized = [], {}, None
    for method in methods:
        maps = explainer.explain(images, method=method)
        for mode in modes:
            for fraction in fractions:
                d = deletion_drop(explainer, images, maps, fraction, mode, seed)
                diff = np.subtract(d["drop_salient"], d["drop_random"])
                p_value = float(wilcoxon(diff).pvalue) if np.any(diff != 0) else 1.0
                rows.append({"method": method, "mode": mode, "fraction": fraction,
                             "mean_drop_salient": d["mean_drop_salient"], "mean_drop_random": d["mean_drop_random"],
                             "mean_difference": float(diff.mean()),
                             "share_salient_beats_random": float((diff > 0).mean()),
                             "wilcoxon_p": p_value, "drop_salient": d["drop_salient"], "drop_random": d["drop_random"]})
        randomized = randomized or randomized_explainer(explainer, seed)  # one copy for every method
        randomization[method] = randomization_check(explainer, images[:randomization_images], method, seed,
                                                    randomized)
    result = {"model": model.name, "image_size": image_size_of(model), "layer": ", ".join(explainer.layer_names),
              "n_images": len(kept), "paths": kept, "skipped": skipped_rows(batch), "deletion": rows,
              "randomization_spearman": randomization, "randomization_images": min(randomization_images, len(kept)),
              "environment": machine_environment()}
    write_report(out_dir, "faithfulness", result, _faithfulness_markdown(result))
    return result


def _faithfulness_markdown(result: dict) -> str:
    lines = [f"# Heatmap faithfulness: `{result['model']}` ({result['image_size']} px, layer `{result['layer']}`)",
             "",
             f"Deletion test on {result['n_images']} images: drop in the predicted class's probability after "
             "removing the most salient pixels vs. the same number of random pixels (higher salient drop = "
             "more faithful map).",
             "",
             "| method | mode | fraction | mean drop (salient) | mean drop (random) | difference | "
             "salient > random | Wilcoxon p |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in result["deletion"]:
        lines.append(f"| {method_label(r['method'])} | {r['mode']} | {r['fraction']:.0%} | "
                     f"{r['mean_drop_salient']:.3f} | "
                     f"{r['mean_drop_random']:.3f} | {r['mean_difference']:+.3f} | "
                     f"{r['share_salient_beats_random']:.0%} | {r['wilcoxon_p']:.2g} |")
    lines += ["", f"Randomisation check (Adebayo et al. 2018) on {result['randomization_images']} images: mean "
              "Spearman correlation between the trained model's maps and a re-initialised copy's "
              "(near 0 = maps depend on the learned weights).", "", "| method | Spearman rho |", "|---|---:|"]
    lines += [f"| {method_label(m)} | {rho:.3f} |" for m, rho in result["randomization_spearman"].items()]
    if result["skipped"]:
        lines += ["", f"{len(result['skipped'])} unreadable files skipped (see faithfulness.json)."]
    return "\n".join(lines) + "\n"
