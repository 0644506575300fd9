"""Benchmarks: measured numbers about catdog's models and heatmaps, written as JSON + Markdown.

Each benchmark function takes what it measures, writes ``<name>.json`` and ``<name>.md``
into ``out_dir`` and returns the same numbers as a dict. Model facts (temperature,
threshold, manifest, image size) come from a :class:`~catdog.bundle.Bundle`: pass a model
path or a Bundle. :func:`run` is the one entry point of ``catdog bench``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import matplotlib
import numpy as np
import sklearn
import tensorflow as tf
from PIL import Image, ImageDraw, ImageFont
from scipy.stats import binomtest, wilcoxon
from sklearn.model_selection import StratifiedKFold
from tqdm.auto import tqdm

from catdog.bundle import Bundle
from catdog.conventions import CLASS_NAMES, DEFAULT_TFLITE_VARIANTS, LOGIT_LAYER
from catdog.data import Item, labels_of, read_manifest, seeded_subset
from catdog.datasets import make_dataset
from catdog.export import export_tflite
from catdog.faithfulness import deletion_drop, randomization_check, randomized_explainer
from catdog.figures import gallery_figure
from catdog.gradcam import CamExplainer, find_conv_layers, method_label
from catdog.images import MIN_SIDE, Batch, load_batch
from catdog.inference import KerasRunner, extract_features, pet_branch
from catdog.metrics import accuracy_interval, apply_temperature, percent
from catdog.models import build_model, head_model, image_size_of, set_trainable
from catdog.openset import RULE_SIGNALS, OpenSetDetector, fit_logistic, fit_openset, rule_signals
from catdog.paths import REPO_ROOT, shared_dir
from catdog.runs import show_progress
from catdog.training import TrainConfig, compile_model
from catdog.tflite import TFLiteRunner, tflite_path

try:  # optional: scikit-image's sample photos join the non-pet images when it is installed
    import skimage
except ImportError:
    skimage = None

log = logging.getLogger(__name__)
ModelLike = Bundle | str | Path


def _write_json_md(out_dir: str | Path, name: str, result: dict, markdown: str) -> Path:
    """Write ``<name>.json`` and ``<name>.md`` into ``out_dir`` (created if needed)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / f"{name}.md").write_text(markdown)
    return out_dir


def _environment() -> dict:
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def _bundle(model: ModelLike | None) -> Bundle:
    """``model`` as a Bundle: a Bundle as is, else the model file's (default: the shipped model).

    Benchmarks run the Keras graph unless they name another engine, so their rows stay comparable.
    """
    return model if isinstance(model, Bundle) else Bundle.load(model, engine="keras")


def _keras_model(model: keras.Model | ModelLike) -> keras.Model:
    """The Keras model to explain: a Bundle's or a model file's; a Keras model as is (heatmaps need no card)."""
    return model if isinstance(model, keras.Model) else _bundle(model).model


def _skipped(batch: Batch) -> list[dict[str, str]]:
    """The files a batch left out, as JSON rows."""
    return [{"path": str(path), "reason": reason} for path, reason in batch.errors]


def images_per_second(fn: Callable[[np.ndarray], Any], images: np.ndarray, batch_size: int, *, warmup: int = 2,
                      max_seconds: float = 60.0, min_batches: int = 3) -> dict[str, Any]:
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


# ---------------------------------------------------------------- Grad-CAM speed
def cost_ratio(base: Callable[[np.ndarray], Any], other: Callable[[np.ndarray], Any], batch: np.ndarray, *,
               rounds: int = 7) -> float:
    """How many times longer ``other(batch)`` takes than ``base(batch)``: the median of paired rounds.

    Each round times one call of each, back to back, so a background job slowing the machine slows both
    alike; timing each alone for a while (as :func:`images_per_second` does) gave ratios off by 3x
    beside a training run.
    """
    base(batch), other(batch)  # trace and allocate
    ratios = []
    for _ in range(rounds):
        start = time.perf_counter()
        base(batch)
        middle = time.perf_counter()
        other(batch)
        ratios.append((time.perf_counter() - middle) / (middle - start))
    return float(np.median(ratios))


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
    model = _keras_model(model)
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
        "skipped": _skipped(batch), "environment": _environment(),
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
    _write_json_md(out_dir, "gradcam_speed", result, md)
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
    model = _keras_model(model)
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
              "n_images": len(kept), "paths": kept, "skipped": _skipped(batch), "deletion": rows,
              "randomization_spearman": randomization, "randomization_images": min(randomization_images, len(kept)),
              "environment": _environment()}
    _write_json_md(out_dir, "faithfulness", result, _faithfulness_markdown(result))
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


# ---------------------------------------------------------------- inference speed (Keras vs TFLite)
REJECT_OFF = "Bundle.predict, rejection off (tf.function)"
REJECT_ON = "Bundle.predict, rejection on (+ pet branch + distance)"
REJECTION_BUDGET = 1.5  # rejection on may cost at most this many times rejection off


def inference_benchmark(model: ModelLike | None, paths: Sequence[Any], out_dir: str | Path,
                        batch_sizes: Sequence[int] = (1, 32), *, n_images: int = 1000,
                        items: Sequence[Item] | None = None, max_items: int | None = 1000,
                        variants: Sequence[str] | None = None, xla: bool = True,
                        max_seconds: float = 30.0, seed: int = 0) -> dict:
    """Images/second of every CPU inference path, plus each path's accuracy; writes ``inference.{json,md}``.

    ``model`` is a Bundle or a model file (None: the shipped model). Engines: ``model.predict``,
    one traced ``tf.function`` (and with ``jit_compile=True`` if ``xla`` and it compiles), and
    each TFLite variant beside the model (exported first if missing; ``variants`` defaults to
    :data:`catdog.conventions.DEFAULT_TFLITE_VARIANTS`). Speed: the first ``n_images`` readable ``paths``,
    decoded beforehand (decoding excluded), warmed up, at each batch size, at most
    ``max_seconds`` per measurement. Accuracy: on ``items`` (labelled :class:`catdog.data.Item` s;
    default the TEST split of the card's manifest, a seeded subset of ``max_items``), with the
    card's temperature and threshold; also the largest logit difference from the
    ``tf.function`` and how often the label differs from it.
    """
    bundle = _bundle(model)
    model_path, keras_model, size = bundle.path, bundle.model, bundle.image_size
    temperature, threshold = bundle.temperature, bundle.threshold
    speed_batch = load_batch(paths, size, limit=n_images)
    images = speed_batch.inputs.astype(np.float32)
    if len(images) < max(batch_sizes):
        raise ValueError(f"inference_benchmark: need at least {max(batch_sizes)} readable images, got {len(images)}")
    if items is None and bundle.manifest is not None and bundle.manifest.is_file():
        items = read_manifest(bundle.manifest, "test")
    items = seeded_subset(items or [], max_items, seed)
    item_batch = load_batch([i.path for i in items], size)
    item_images = item_batch.inputs
    by_path = {Path(i.path): i for i in items}
    y = labels_of([by_path[p] for p in item_batch.paths]) if item_batch.paths else np.zeros(0, np.int64)

    variants = tuple(variants or DEFAULT_TFLITE_VARIANTS)
    missing = [v for v in variants if not tflite_path(model_path, v).is_file()]
    if missing:
        export_tflite(model_path, variants=missing)
    engines: dict[str, Any] = {"keras model.predict": lambda b: keras_model.predict(b, batch_size=len(b), verbose=0),
                               "tf.function": KerasRunner(keras_model).predict}
    errors: dict[str, str] = {}
    if xla:
        try:
            runner = KerasRunner(keras_model, jit_compile=True)
            runner.predict(images[:1])
            engines["tf.function (XLA jit_compile)"] = runner.predict
        except Exception as exc:  # XLA is optional; report why it is missing
            errors["tf.function (XLA jit_compile)"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    tflite_outputs = {}
    for v in variants:
        runner = TFLiteRunner(tflite_path(model_path, v))
        engines[f"tflite {v}"], tflite_outputs[f"tflite {v}"] = runner.predict, list(runner.outputs)
    if bundle.has_detector:  # what `catdog predict` pays for "neither": the same Bundle call, rejection off vs on
        engines[REJECT_OFF] = lambda b: bundle.predict(b, reject=False)
        engines[REJECT_ON] = lambda b: bundle.predict(b, reject=True)

    def logits_of(fn, batch_size: int = 32) -> np.ndarray:
        out = [fn(item_images[i:i + batch_size]) for i in range(0, len(item_images), batch_size)]
        return np.concatenate([np.asarray(o["logit"] if isinstance(o, dict) else o).reshape(-1) for o in out]) \
            if out else np.zeros(0)

    reference = logits_of(engines["tf.function"])
    rows = []
    for name, fn in engines.items():
        row: dict[str, Any] = {"engine": name}
        for b in batch_sizes:
            row[f"batch_{b}"] = images_per_second(fn, images, b, max_seconds=max_seconds)
        if len(y):
            # model.predict returns p_dog; compare it through the same calibrated threshold via its logit
            z = logits_of(engines["tf.function"] if name == "keras model.predict" else fn)
            p = apply_temperature(z, temperature)
            pred = (p >= threshold).astype(int)
            ref_pred = (apply_temperature(reference, temperature) >= threshold).astype(int)
            row.update(accuracy=round(float((pred == y).mean()), 4),
                       max_abs_logit_diff=float(np.abs(z - reference).max()),
                       label_disagreements=int((pred != ref_pred).sum()))
        if name.startswith("tflite"):
            row["file_mb"] = round(tflite_path(model_path, name.split()[1]).stat().st_size / 1e6, 2)
            row["outputs"] = tflite_outputs[name]
        rows.append(row)
    # paired rounds, not the two rows above: those are timed minutes apart, and a busy machine skews their ratio
    cost = ({f"batch_{b}": round(cost_ratio(engines[REJECT_OFF], engines[REJECT_ON], images[:b]), 3)
             for b in batch_sizes} if REJECT_ON in engines else {})
    result = {"model": str(model_path), "image_size": size, "n_images": len(images), "batch_sizes": list(batch_sizes),
              "rejection_cost_ratio": cost, "rejection_rule": bundle.detector.rule_text() if cost else None,
              "n_accuracy_items": int(len(y)), "temperature": temperature, "threshold": threshold,
              "engines": rows, "errors": errors, "skipped": _skipped(speed_batch) + _skipped(item_batch),
              "max_seconds_per_measurement": max_seconds, "environment": _environment()}
    _write_json_md(out_dir, "inference", result, _inference_markdown(result))
    return result


def _inference_markdown(result: dict) -> str:
    env = result["environment"]
    sizes = result["batch_sizes"]
    lines = [f"# CPU inference speed: `{Path(result['model']).name}` ({result['image_size']} px)", "",
             f"{result['n_images']} real images preloaded (decoding excluded), warmed up; {env['cpu_count']} CPU "
             f"cores, 1-min load average {env['load_average_1min']} (other jobs share the CPU, so absolute numbers "
             f"are pessimistic; compare rows). Accuracy on {result['n_accuracy_items']} labelled TEST images with "
             f"temperature {result['temperature']:.3f} and threshold {result['threshold']}.", "",
             "| engine | " + " | ".join(f"img/s @ batch {b}" for b in sizes)
             + " | accuracy | max logit diff vs tf.function | labels differing | file MB |",
             "|---|" + "---:|" * (len(sizes) + 4)]
    for r in result["engines"]:
        speeds = " | ".join(str(r[f"batch_{b}"]["images_per_second"]) for b in sizes)
        acc = f"{r['accuracy']:.2%}" if "accuracy" in r else "–"
        diff = f"{r['max_abs_logit_diff']:.2e}" if "max_abs_logit_diff" in r else "–"
        lines.append(f"| {r['engine']} | {speeds} | {acc} | {diff} | {r.get('label_disagreements', '–')} "
                     f"| {r.get('file_mb', '–')} |")
    lines += [f"\n{name} not measured: {why}" for name, why in result["errors"].items()]
    if any("pet_prob" in r.get("outputs", ()) for r in result["engines"]):
        lines.append("\nThe TFLite files also compute the \"neither\" branch (`pet_prob`, `wild_prob`) in the same "
                     "graph, as `catdog predict` runs them; `keras model.predict` and `tf.function` run the classifier "
                     "alone.")
    for b, ratio in result.get("rejection_cost_ratio", {}).items():
        lines.append(f"\nRejection on costs {ratio:.2f}x rejection off at {b.replace('_', ' ')} (median of paired "
                     f"rounds; budget {REJECTION_BUDGET}x: {'met' if ratio <= REJECTION_BUDGET else 'NOT met'}).")
    if result.get("rejection_rule"):
        lines.append(f"\nRejection rule: {result['rejection_rule']}.")
    lines.append("\n`keras model.predict` and `tf.function` run the same graph, so they share an accuracy.")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- head phase: cached features vs frozen backbone
def feature_cache_benchmark(items: Sequence[Item], out_dir: str | Path, image_size: int = 224, epochs: int = 3,
                            head_epochs: int = 20, batch_size: int = 32) -> dict:
    """Time the head phase two ways on the same images: running the frozen backbone every epoch
    (the textbook way) versus computing pooled features once and training the head on them
    (what :mod:`catdog.training` does). Writes ``feature_cache.json``/``.md``."""
    model = build_model("mobilenet_v2", image_size, weights="imagenet")
    set_trainable(model, 0)
    ds = make_dataset(items, image_size, batch_size, training=True, seed=0)
    compile_model(model, 1e-3, TrainConfig())
    model.fit(ds.take(2), epochs=1, verbose=0)  # warm-up: tracing, thread pools
    start = time.perf_counter()
    model.fit(ds, epochs=epochs, verbose=0)
    backbone_epoch = (time.perf_counter() - start) / epochs

    start = time.perf_counter()
    features = extract_features(model, list(items), image_size, batch_size)
    extraction = time.perf_counter() - start
    head = head_model(model)
    compile_model(head, 1e-3, TrainConfig())
    y = labels_of(items).astype("float32")
    head.fit(features, y, batch_size=batch_size, epochs=1, verbose=0)  # warm-up
    start = time.perf_counter()
    head.fit(features, y, batch_size=batch_size, epochs=epochs, verbose=0)
    cached_epoch = (time.perf_counter() - start) / epochs

    result = {
        "n_images": len(items), "image_size": image_size, "epochs_timed": epochs,
        "seconds_per_epoch_frozen_backbone": round(backbone_epoch, 3),
        "seconds_feature_extraction_once": round(extraction, 3),
        "seconds_per_epoch_cached_features": round(cached_epoch, 4),
        "head_epochs": head_epochs,
        "head_phase_seconds_frozen_backbone": round(backbone_epoch * head_epochs, 1),
        "head_phase_seconds_cached": round(extraction + cached_epoch * head_epochs, 1),
        "speedup_head_phase": round(backbone_epoch * head_epochs / (extraction + cached_epoch * head_epochs), 1),
        "environment": _environment(),
    }
    md = ("# Head phase: frozen backbone every epoch vs features cached once\n\n"
          f"MobileNetV2 at {image_size} px, {len(items)} real photos, batch {batch_size}.\n\n"
          "| | seconds |\n|---|---|\n"
          f"| one epoch through the frozen backbone | {result['seconds_per_epoch_frozen_backbone']} |\n"
          f"| feature extraction (once) | {result['seconds_feature_extraction_once']} |\n"
          f"| one epoch on cached features | {result['seconds_per_epoch_cached_features']} |\n"
          f"| {head_epochs}-epoch head phase, frozen backbone | {result['head_phase_seconds_frozen_backbone']} |\n"
          f"| {head_epochs}-epoch head phase, cached features | {result['head_phase_seconds_cached']} |\n\n"
          f"Speed-up of the head phase: **{result['speedup_head_phase']}x**.\n")
    _write_json_md(out_dir, "feature_cache", result, md)
    return result


# ---------------------------------------------------------------- open-set ("neither") images
# Real photos that ship with installed libraries (no downloads). Excluded: skimage's chelsea
# (a cat), motorcycle_right (near-duplicate of _left), microaneurysms (a crop of retina).
_SKIMAGE_PHOTOS = ("astronaut.png", "brick.png", "camera.png", "cell.png", "clock_motion.png", "coffee.png",
                   "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png",
                   "motorcycle_left.png", "page.png", "retina.jpg", "rocket.jpg")
_SKIMAGE_GRAPHICS = ("color.png", "phantom.png", "chessboard_RGB.png", "horse.png", "logo.png", "text.png")
_SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")
_MPL_PHOTOS = ("grace_hopper.jpg",)
_MPL_GRAPHICS = ("logo2.png", "Minduka_Present_Blue_Pack.png")


def _library_files() -> list[tuple[Path, str, str]]:
    """(file, group, source) for the sample images installed libraries ship, where present."""
    found = []
    if skimage is not None:
        folder = Path(skimage.__file__).parent / "data"
        found += [(folder / n, "real", "scikit-image") for n in _SKIMAGE_PHOTOS]
        found += [(folder / n, "synthetic", "scikit-image") for n in _SKIMAGE_GRAPHICS]
    folder = Path(sklearn.__file__).parent / "datasets" / "images"
    found += [(folder / n, "real", "scikit-learn") for n in _SKLEARN_PHOTOS]
    folder = Path(matplotlib.get_data_path()) / "sample_data"
    found += [(folder / n, "real", "matplotlib") for n in _MPL_PHOTOS]
    found += [(folder / n, "synthetic", "matplotlib") for n in _MPL_GRAPHICS]
    return [f for f in found if f[0].is_file()]


def _synthetic_arrays(size: int = 256, seed: int = 0) -> dict[str, np.ndarray]:
    """Non-photos: noise, flat colours, gradients, patterns, rendered text (uint8 RGB)."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for i in range(3):
        out[f"noise_uniform_{i}"] = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    out["noise_uniform_gray"] = np.repeat(rng.integers(0, 256, (size, size, 1), dtype=np.uint8), 3, axis=2)
    for i in range(2):
        out[f"noise_gaussian_{i}"] = np.clip(rng.normal(128, 50, (size, size, 3)), 0, 255).astype(np.uint8)
        coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        out[f"noise_smooth_{i}"] = np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC))
    colours = {"black": (0, 0, 0), "white": (255, 255, 255), "gray": (128, 128, 128), "red": (220, 30, 30),
               "green": (30, 180, 60), "blue": (30, 60, 220), "yellow": (240, 220, 40)}
    for name, rgb in colours.items():
        out[f"flat_{name}"] = np.full((size, size, 3), rgb, np.uint8)
    ramp = np.linspace(0, 255, size)
    xx, yy = np.meshgrid(ramp, ramp)
    out["gradient_horizontal"] = np.repeat(xx[..., None], 3, axis=2).astype(np.uint8)
    out["gradient_vertical"] = np.repeat(yy[..., None], 3, axis=2).astype(np.uint8)
    out["gradient_rgb"] = np.stack([xx, yy, 255 - xx], axis=2).astype(np.uint8)
    centre = np.arange(size) - (size - 1) / 2
    cx, cy = np.meshgrid(centre, centre)
    radius = np.hypot(cx, cy) / np.hypot(centre[0], centre[0]) * 255
    out["gradient_radial"] = np.stack([radius, 255 - radius, np.full_like(radius, 128)], axis=2).astype(np.uint8)
    tile = (np.add.outer(np.arange(size) // 32, np.arange(size) // 32) % 2 * 255).astype(np.uint8)
    out["checkerboard"] = np.repeat(tile[..., None], 3, axis=2)
    stripes = np.array([(230, 40, 40), (40, 40, 230), (250, 250, 250)], np.uint8)[(np.arange(size) // 16) % 3]
    out["stripes"] = np.broadcast_to(stripes[None], (size, size, 3)).copy()
    try:
        font = ImageFont.load_default(size=size // 10)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        font = ImageFont.load_default()
    texts = [("The quick brown fox\njumps over the\nlazy dog. 0123", (255, 255, 255), (0, 0, 0)),
             ("INVOICE #4821\nTotal: $1,299.00\nDue: 2024-07-01", (0, 0, 0), (255, 255, 255)),
             ("Hello world!\nneither cat\nnor dog", (250, 230, 60), (20, 40, 160))]
    for i, (text, background, ink) in enumerate(texts):
        img = Image.new("RGB", (size, size), background)
        ImageDraw.Draw(img).multiline_text((size // 16, size // 5), text, fill=ink, font=font, spacing=size // 20)
        out[f"text_{i}"] = np.asarray(img)
    return out


GROUPS = ("real", "real_crop", "synthetic")


def non_pet_images(folder: str | Path, seed: int = 0, groups: tuple[str, ...] = GROUPS) -> list[dict[str, str]]:
    """Write the open-set evaluation images into ``folder``; returns ``{"path", "group", "source"}`` rows.

    Groups: ``real`` (photos shipped with scikit-image, scikit-learn, matplotlib), ``real_crop``
    (two crops of each real photo of 256 px or more: new compositions of the same scenes, so
    not independent), ``synthetic`` (library graphics plus generated noise, flat colours,
    gradients, patterns and rendered text). Generated at run time; never commit them.
    ``groups`` limits which groups are written.
    """
    folder = Path(folder)
    rows = []
    rng = np.random.default_rng(seed)
    unknown = set(groups) - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown group(s) {sorted(unknown)}; choose from {GROUPS}")
    for group in groups:
        (folder / group).mkdir(parents=True, exist_ok=True)
    for src, group, source in _library_files():
        if group in groups:
            dest = folder / group / src.name
            shutil.copyfile(src, dest)
            rows.append({"path": str(dest), "group": group, "source": f"{source}: {src.name}"})
        if group != "real" or "real_crop" not in groups:
            continue
        with Image.open(src) as img:
            img = img.convert("RGB")
        w, h = img.size
        if min(w, h) < 256:
            continue
        boxes = [(w // 4, h // 4, w // 4 + w // 2, h // 4 + h // 2)]  # centre half
        fw, fh = rng.uniform(0.4, 0.7, 2)
        cw, ch = int(w * fw), int(h * fh)
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        boxes.append((x0, y0, x0 + cw, y0 + ch))
        for k, box in enumerate(boxes, start=1):
            dest = folder / "real_crop" / f"{src.stem}_crop{k}.png"
            img.crop(box).save(dest)
            rows.append({"path": str(dest), "group": "real_crop", "source": f"{source}: crop {box} of {src.name}"})
    for name, array in (_synthetic_arrays(seed=seed) if "synthetic" in groups else {}).items():
        dest = folder / "synthetic" / f"{name}.png"
        Image.fromarray(array).save(dest)
        rows.append({"path": str(dest), "group": "synthetic", "source": f"generated: {name}"})
    return rows


# ---------------------------------------------------------------- open-set report
CROSSCHECK_ENV = "CATDOG_CROSSCHECK"
# What each crosscheck folder is, for the targets: kinds are reported separately.
KIND_OF_GROUP = {"pets/cat": "pet photo", "pets/dog": "pet photo", "pets_lowres/cat": "low-res pet",
                 "pets_lowres/dog": "low-res pet", "pets_art/cat": "pet drawing", "pets_art/dog": "pet drawing",
                 "other/near_miss": "near miss", "other/art": "non-pet art", "other/lowres": "low-res non-pet"}
NON_PET_PHOTO = "non-pet photo"  # every other other/* folder: animals, objects, everyday, people, scenes
KINDS = ("pet photo", "near miss", NON_PET_PHOTO, "pet drawing", "low-res pet", "non-pet art", "low-res non-pet")
PETS = ("pet photo", "pet drawing", "low-res pet")  # rejecting these is a false rejection
TARGETS = {"PetImages test": ("<=", 0.01), "pet photo": ("<=", 0.02), "near miss": (">=", 0.80),
           "non-pet photos incl. near misses": (">=", 0.95)}


def crosscheck_dir() -> Path:
    """The crosscheck collection: ``$CATDOG_CROSSCHECK`` or ``<shared>/data/crosscheck``."""
    env = os.environ.get(CROSSCHECK_ENV)
    if env:
        return Path(env)
    shared = shared_dir()
    if shared is None:
        raise FileNotFoundError(f"no crosscheck folder: set ${CROSSCHECK_ENV} or $CATDOG_SHARED")
    return shared / "data" / "crosscheck"


def crosscheck_half(path: str | Path, root: str | Path | None = None) -> str:
    """``"tune"`` or ``"report"``: the fixed split of crosscheck, by file name only (never by score).

    ``tune`` when the first byte of SHA-1 of the path relative to the crosscheck folder (POSIX,
    e.g. ``pets/dog/oxford_beagle_12.jpg``) is even, ``report`` when odd. Methods, thresholds and
    weights are chosen on ``tune`` only; numbers are reported on ``report``.
    """
    path = Path(path)
    if path.is_absolute():
        path = path.relative_to(Path(root) if root else crosscheck_dir())
    return "tune" if hashlib.sha1(path.as_posix().encode()).digest()[0] % 2 == 0 else "report"


def read_crosscheck(folder: str | Path | None = None) -> list[dict[str, str]]:
    """Rows of ``files.tsv`` with ``path`` (absolute), ``group`` (``pets/dog``...), ``kind``, ``source``, ``half``."""
    folder = Path(folder) if folder else crosscheck_dir()
    table = folder / "files.tsv"
    if not table.is_file():
        raise FileNotFoundError(f"{table} not found: is {folder} the crosscheck folder? (set ${CROSSCHECK_ENV})")
    with open(table, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    out = []
    for row in rows:
        group = "/".join(row["file"].split("/")[:2])
        out.append({"path": str(folder / row["file"]), "file": row["file"], "group": group, "label": row["label"],
                    "kind": KIND_OF_GROUP.get(group, NON_PET_PHOTO if group.startswith("other/") else "?"),
                    "source": row["source_repo"], "half": crosscheck_half(row["file"])})
    return out


def _rate(k: int, n: int) -> dict[str, Any]:
    """k of n with an exact (Clopper-Pearson) 95% interval: small sets get honest, wide intervals."""
    if n == 0:
        return {"n": 0, "rejected": 0, "rate": None, "ci95": None}
    ci = binomtest(k, n).proportion_ci(0.95, method="exact")
    return {"n": n, "rejected": k, "rate": k / n, "ci95": [float(ci.low), float(ci.high)]}


def _openset_scores(bundle: Bundle, files: Sequence[str | Path], batch_size: int, progress: bool
                    ) -> list[dict[str, Any]]:
    """``path``, ``p_dog``, ``ood_score``, ``pet_prob``, ``wild_prob``, ``neither``, ``error`` per file, in order."""
    rows = []
    with tqdm(total=len(files), desc="open-set", unit="img", disable=not show_progress(progress)) as bar:
        for start in range(0, len(files), batch_size):
            chunk = [Path(f) for f in files[start:start + batch_size]]
            batch = load_batch(chunk, bundle.image_size)
            out = bundle.predict(batch.inputs, reject=True) if batch.paths else {}
            where = {path: k for k, path in enumerate(batch.paths)}
            errors = dict(batch.errors)
            for path in chunk:
                row: dict[str, Any] = {"path": str(path), "p_dog": None, "ood_score": None, "pet_prob": None,
                                       "wild_prob": None, "neither": False, "error": errors.get(path, "")}
                if path in where:
                    k = where[path]
                    row.update(p_dog=round(float(out["p_dog"][k]), 6), ood_score=round(float(out["ood_score"][k]), 4),
                               pet_prob=round(float(out["pet_prob"][k]), 6),
                               wild_prob=round(float(out["wild_prob"][k]), 6), neither=bool(out["neither"][k]))
                rows.append(row)
            bar.update(len(chunk))
    return rows


def _rule(threshold: float, pet_low: float, pet_high: float, wild_ratio: float | None) -> OpenSetDetector:
    """A detector that only decides (no features): the rule family of :meth:`OpenSetDetector.decide`."""
    return OpenSetDetector(np.zeros((2, 1)), np.eye(1), threshold).with_rule(("-", 0), pet_low, pet_high, wild_ratio)


def _designs(detector: OpenSetDetector) -> dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]]:
    """The designs compared on the same images: (distance, pet_prob, wild_prob) -> rejected."""
    t, low, high, ratio = detector.threshold, detector.pet_low, detector.pet_high, detector.wild_ratio
    designs = {"distance alone (the first detector)": lambda d, p, w: d > t,
               f"pet_prob < {low:g} alone": lambda d, p, w: p < low,
               f"pet_prob < {high:g} alone": lambda d, p, w: p < high}
    if ratio is not None:
        designs[f"wild_prob > {ratio:g} x pet_prob alone"] = lambda d, p, w: w > ratio * p
        designs[f"without the wild rule: pet_prob < {low:g} or (pet_prob < {high:g} and distance > {t:.1f})"] = \
            lambda d, p, w: (p < low) | ((p < high) & (d > t))
    if detector.logistic is not None:  # the threshold rule it replaced, with the same constants
        threshold_rule = _rule(t, low, high, ratio)
        designs[f"threshold rule: {threshold_rule.rule_text().split(';')[0]}"] = threshold_rule.decide
    designs[f"chosen: {detector.rule_text().split(';')[0]}"] = detector.decide
    return designs


def _rates_by(rows: Sequence[dict], key: str, rejected: str = "neither") -> dict[str, dict]:
    """Rejection rate (exact CI) per value of ``rows[i][key]``, in sorted order."""
    values = sorted({r[key] for r in rows})
    return {v: _rate(sum(bool(r[rejected]) for r in rows if r[key] == v), sum(1 for r in rows if r[key] == v))
            for v in values}


def _summary(rows: Sequence[dict], test_rows: Sequence[dict], rejected: str) -> dict[str, dict]:
    """Per kind, plus non-pet photos with near misses, plus PetImages test, for one decision column."""
    out = {kind: _rate(sum(bool(r[rejected]) for r in rows if r["kind"] == kind),
                       sum(1 for r in rows if r["kind"] == kind)) for kind in KINDS}
    photos = [r for r in rows if r["kind"] in ("near miss", NON_PET_PHOTO)]
    out["non-pet photos incl. near misses"] = _rate(sum(bool(r[rejected]) for r in photos), len(photos))
    out["PetImages test"] = _rate(sum(bool(r[rejected]) for r in test_rows), len(test_rows))
    return out


def _gallery(rows: Sequence[dict], out_dir: Path, name: str, title: str, threshold: float) -> str:
    """A gallery PNG of ``rows`` (image, pet_prob, distance, what the classifier alone says)."""
    titles = [f"{Path(r['path']).parent.name}: pet_prob {r['pet_prob']:.2f}, d {r['ood_score']:.0f}\n"
              f"classifier alone: {'dog' if r['p_dog'] >= threshold else 'cat'} "
              f"{percent(max(r['p_dog'], 1 - r['p_dog']), 0)}" for r in rows]
    gallery_figure([r["path"] for r in rows], titles, out_dir / name, ncols=4, suptitle=title)
    return name


CROSSCHECK_ACCURACY_TARGET = 0.99  # the classifier alone on crosscheck's real cat and dog photos (report half)


def crosscheck_accuracy(model: ModelLike | None = None, out_dir: str | Path | None = None, *,
                        crosscheck: str | Path | None = None, half: str = "report", batch_size: int = 32,
                        progress: bool = True) -> dict:
    """The classifier alone (no "neither") on crosscheck's cat and dog images of one ``half``.

    Accuracy with a Wilson 95% interval per kind (pet photos, low-res pets, pet drawings) and per
    (kind, source), and every misclassified pet photo with its p(dog); unreadable files are counted,
    not scored. Writes ``crosscheck_accuracy.json``/``.md`` into ``out_dir`` (default ``reports/benchmarks``).
    """
    bundle = _bundle(model)
    rows = [r for r in read_crosscheck(crosscheck) if r["half"] == half and r["kind"] in PETS]
    # the open-set scoring pass: its p(dog) is the classifier's own; its "neither" answers are not used here
    scores = _openset_scores(bundle, [r["path"] for r in rows], batch_size, progress)
    scored = []
    for row, score in zip(rows, scores):
        if score["p_dog"] is not None:
            predicted = "dog" if score["p_dog"] >= bundle.threshold else "cat"
            scored.append({**row, "p_dog": score["p_dog"], "correct": predicted == row["label"]})

    def summary(subset: list[dict]) -> dict[str, Any]:
        k, n = sum(r["correct"] for r in subset), len(subset)
        return {"n": n, "correct": k, "accuracy": k / n if n else None,
                "ci95": accuracy_interval(k, n) if n else None}

    by_kind = {kind: summary([r for r in scored if r["kind"] == kind]) for kind in PETS}
    by_source = {f"{kind}, {source}": summary([r for r in scored if (r["kind"], r["source"]) == (kind, source)])
                 for kind in PETS for source in sorted({r["source"] for r in scored if r["kind"] == kind})}
    photos = by_kind["pet photo"]
    result = {"model": bundle.path.name, "threshold": bundle.threshold, "half": half,
              "unreadable": len(rows) - len(scored), "by_kind": by_kind, "by_source": by_source,
              "target": {"pet photo accuracy >=": CROSSCHECK_ACCURACY_TARGET,
                         "met": photos["accuracy"] is not None and photos["accuracy"] >= CROSSCHECK_ACCURACY_TARGET},
              "wrong_pet_photos": [{"file": r["file"], "label": r["label"], "p_dog": r["p_dog"]}
                                   for r in scored if r["kind"] == "pet photo" and not r["correct"]],
              "environment": _environment()}
    out_dir = Path(out_dir) if out_dir else REPO_ROOT / "reports" / "benchmarks"
    _write_json_md(out_dir, "crosscheck_accuracy", result, _crosscheck_accuracy_markdown(result))
    return result


def _crosscheck_accuracy_markdown(result: dict) -> str:
    def line(name: str, r: dict) -> str:
        if not r["n"]:
            return f"| {name} | 0 | | | |"
        low, high = r["ci95"]
        return f"| {name} | {r['n']} | {r['correct']} | {r['accuracy']:.2%} | {low:.1%}–{high:.1%} |"

    target = result["target"]
    lines = [f"# The classifier alone on crosscheck's cats and dogs ({result['half']} half)", "",
             f"Model `{result['model']}`, threshold {result['threshold']}, no \"neither\" (every image gets cat or dog); "
             f"{result['unreadable']} unreadable files left out. Reproduce: `catdog bench crosscheck`.", "",
             "| images | n | correct | accuracy | Wilson 95% CI |", "|---|---:|---:|---:|---|"]
    lines += [line(kind, r) for kind, r in result["by_kind"].items()]
    lines += ["", "| kind, source | n | correct | accuracy | Wilson 95% CI |", "|---|---:|---:|---:|---|"]
    lines += [line(name, r) for name, r in result["by_source"].items()]
    lines += ["", f"Low-res pets (CIFAR-10, 32 px) are scored here for the record: `catdog predict` labels photos under "
              f"{MIN_SIDE} px on the short side `too small` instead of guessing."]
    lines += ["", f"Target: pet photos >= {target['pet photo accuracy >=']:.0%}: **{'met' if target['met'] else 'not met'}**.",
              "", "Misclassified pet photos:", ""]
    lines += [f"- `{w['file']}` ({w['label']}): p(dog) = {w['p_dog']:.3f}" for w in result["wrong_pet_photos"]] or ["- none"]
    return "\n".join(lines) + "\n"


def openset_report(model: ModelLike | None = None, manifest: str | Path | None = None,
                   out_dir: str | Path | None = None, *, crosscheck: str | Path | None = None,
                   max_test: int | None = None, max_crosscheck: int | None = None, batch_size: int = 32,
                   overwrite: bool = False, progress: bool = True, gallery: bool = True, seed: int = 0) -> dict:
    """Measure the saved "neither" detector on crosscheck (both halves) and PetImages TEST photos.

    ``model`` is a Bundle or a model file (None: the shipped model); ``manifest`` defaults to the
    card's; a model without a detector gets one fitted first. Reports rejection per crosscheck
    group, per (group, source) and per kind, separately for the ``tune`` and ``report`` halves
    (:func:`crosscheck_half`), for every design of :func:`_designs` on the same images, and for
    synthetic non-photos; with ``gallery``, PNGs of the worst false rejections and worst accepted
    non-pets of the report half. Writes ``openset.json``/``.md`` into ``out_dir`` (default
    ``reports/benchmarks``; refuses to overwrite unless ``overwrite``). ``max_test`` and
    ``max_crosscheck`` cap the images used (seeded subsets).
    """
    bundle = _bundle(model)
    out_dir = Path(out_dir) if out_dir else REPO_ROOT / "reports" / "benchmarks"
    if not overwrite and any((out_dir / n).exists() for n in ("openset.json", "openset.md")):
        raise FileExistsError(f"{out_dir} already holds an open-set report (pass overwrite=True)")
    manifest = Path(manifest) if manifest else bundle.require_manifest()
    if not bundle.has_detector:
        log.info("no open-set detector beside %s: fitting one", bundle.path)
        fit_openset(bundle.path, manifest)
    detector = bundle.detector
    cross = read_crosscheck(crosscheck)
    if max_crosscheck is not None:
        keep = set(np.random.default_rng(seed).permutation(len(cross))[:max_crosscheck].tolist())
        cross = [r for k, r in enumerate(cross) if k in keep]
    with tempfile.TemporaryDirectory(prefix="catdog-openset-") as tmp:
        synthetic = non_pet_images(tmp, seed=seed, groups=("synthetic",))
        synthetic_rows = _openset_scores(bundle, [r["path"] for r in synthetic], batch_size, progress)
    test = seeded_subset(read_manifest(manifest, "test"), max_test, seed)
    scored = _openset_scores(bundle, [r["path"] for r in cross] + [i.path for i in test], batch_size, progress)
    cross_rows = [{**meta, **row} for meta, row in zip(cross, scored[:len(cross)]) if not row["error"]]
    test_rows = [row for row in scored[len(cross):] if not row["error"]]
    designs = _designs(detector)
    for rows in (cross_rows, test_rows):
        if rows:
            d = np.array([r["ood_score"] for r in rows])
            p = np.array([r["pet_prob"] for r in rows])
            w = np.array([r["wild_prob"] for r in rows])
            for name, rule in designs.items():
                for r, v in zip(rows, rule(d, p, w)):
                    r[name] = bool(v)
    halves = {half: [r for r in cross_rows if r["half"] == half] for half in ("tune", "report")}
    result = {
        "model": str(bundle.path), "manifest": str(manifest), "detector": detector.info,
        "rule": detector.rule_text(), "threshold": detector.threshold, "engine": bundle.engine,
        "crosscheck": str(Path(crosscheck) if crosscheck else crosscheck_dir()),
        "split_rule": "tune = even first byte of sha1(path relative to crosscheck), report = odd "
                      "(catdog.benchmarks.crosscheck_half)",
        "unreadable": [r["path"] for r in scored if r["error"]],
        "designs": {name: {half: _summary(rows, test_rows, name) for half, rows in halves.items()}
                    for name in designs},
        "by_group": {half: _rates_by(rows, "group") for half, rows in halves.items()},
        "by_group_source": {half: _rates_by([{**r, "gs": f"{r['group']} | {r['source']}"} for r in rows], "gs")
                            for half, rows in halves.items()},
        "petimages_test": _rate(sum(r["neither"] for r in test_rows), len(test_rows)),
        "synthetic_non_photos": _rate(sum(r["neither"] for r in synthetic_rows if not r["error"]),
                                      sum(1 for r in synthetic_rows if not r["error"])),
        "targets": {k: {"op": op, "value": v} for k, (op, v) in TARGETS.items()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    report = halves["report"]
    worst_rejected = sorted([r for r in report if r["kind"] == "pet photo" and r["neither"]],
                            key=lambda r: r["pet_prob"])[:8]
    worst_accepted = sorted([r for r in report if r["kind"] in ("near miss", NON_PET_PHOTO) and not r["neither"]],
                            key=lambda r: -r["pet_prob"])[:8]
    result["worst_false_rejections"] = [{k: r[k] for k in ("file", "pet_prob", "ood_score", "p_dog")}
                                        for r in worst_rejected]
    result["worst_accepted_non_pets"] = [{k: r[k] for k in ("file", "pet_prob", "ood_score", "p_dog")}
                                         for r in worst_accepted]
    out_dir.mkdir(parents=True, exist_ok=True)
    if gallery:
        result["galleries"] = [
            _gallery(worst_rejected, out_dir, "openset_false_rejections.png",
                     "Report half: real pet photos answered 'neither'", bundle.threshold),
            _gallery(worst_accepted, out_dir, "openset_accepted_non_pets.png",
                     "Report half: non-pet photos NOT rejected (highest pet_prob)", bundle.threshold)]
    _write_json_md(out_dir, "openset", result, _openset_markdown(result))
    return result


def _fmt_rate(r: dict) -> str:
    """One table row's n, rejected, rate and interval cells."""
    if not r["n"]:
        return "| 0 | – | – | – |"
    lo, hi = r["ci95"]
    return f"| {r['n']} | {r['rejected']} | {r['rate']:.1%} | {lo:.1%}–{hi:.1%} |"


def _met(rate: dict, op: str, value: float) -> str:
    if not rate["n"]:
        return "–"
    ok = rate["rate"] <= value if op == "<=" else rate["rate"] >= value
    return "met" if ok else "**NOT met**"


def _openset_markdown(result: dict) -> str:
    info = result["detector"]
    chosen = next(name for name in result["designs"] if name.startswith("chosen"))
    report = result["designs"][chosen]["report"]
    lines = [
        "# Open-set rejection: \"neither cat nor dog\"", "",
        f"Model `{Path(result['model']).name}`, engine `{result['engine']}`. Rule: {result['rule']}. "
        f"Distance: {info.get('method')}, threshold = the {info.get('quantile', 0.99):.1%} quantile of "
        f"{info.get('n_validation')} PetImages validation photos. Crosscheck split: {result['split_rule']}; "
        "designs and constants were chosen on the tune half (and PetImages validation) only, as "
        "[openset_design.md](openset_design.md) shows.", "",
        "## Targets (report half of crosscheck, PetImages test)", "",
        "| target | n | rejected | rate | exact 95% CI | status |", "|---|---:|---:|---:|---|---|",
    ]
    for name, t in result["targets"].items():
        lines.append(f"| {name} rejected {t['op']} {t['value']:.0%} " + _fmt_rate(report[name])
                     + f" {_met(report[name], t['op'], t['value'])} |")
    lines += ["", "## Every design on the same images (rejection rate; tune / report half)", "",
              "| design | " + " | ".join(result["designs"][chosen]["report"]) + " |",
              "|---|" + "---:|" * len(result["designs"][chosen]["report"])]
    for name, by_half in result["designs"].items():
        cells = []
        for kind in by_half["report"]:
            t, r = by_half["tune"][kind], by_half["report"][kind]
            cells.append("–" if not r["n"] else f"{t['rate']:.1%} / {r['rate']:.1%}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "PetImages test is the same images in both columns.", "",
              f"Synthetic non-photos (noise, flat colours, gradients, text, graphics): "
              f"{_fmt_rate(result['synthetic_non_photos'])[2:-2].replace(' | ', ', ')} (n, rejected, rate, CI).", ""]
    for half in ("report", "tune"):
        lines += [f"## Per group, {half} half (chosen rule)", "",
                  "| group | n | rejected | rate | exact 95% CI |", "|---|---:|---:|---:|---|"]
        lines += [f"| {g} " + _fmt_rate(r) for g, r in result["by_group"][half].items()]
        lines += ["", f"## Per group and source, {half} half (chosen rule)", "",
                  "| group / source | n | rejected | rate | exact 95% CI |", "|---|---:|---:|---:|---|"]
        lines += [f"| {g} " + _fmt_rate(r) for g, r in result["by_group_source"][half].items()]
        lines.append("")
    lines += ["Low-res groups (32x32 CIFAR) are answered `too small` by `catdog predict` (under 64 px); the "
              "rates above are what the detector alone would do with them.", ""]
    for g in result.get("galleries", []):
        lines.append(f"![{g}]({g})")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- choosing the "neither" rule
CANDIDATE_BRANCHES = (("efficientnet_lite0", 160), ("efficientnet_lite0", 224), ("efficientnet_lite1", 240),
                      ("efficientnet_lite2", 260))
# The rule family searched (see OpenSetDetector.decide): distance threshold quantile, pet_low, pet_high, wild_ratio.
DESIGN_GRID = {"quantile": (0.99, 0.995, 0.998, 1.0), "pet_low": (0.0, 0.003, 0.01, 0.02, 0.05),
               "pet_high": (0.5, 0.7, 0.9, 0.95, 0.99), "wild_ratio": (None, 0.5, 1.0, 2.0, 4.0)}
# The selection rule, fixed before any report-half number: the highest mean of near-miss and non-pet-photo
# (near misses included) rejection on the TUNE half, among rules that reject at most 2% of tune pet photos
# and at most 1% of PetImages VALIDATION photos, with a branch whose measured cost keeps rejection on
# within REJECTION_BUDGET x rejection off.
DESIGN_LIMITS = {"pet photo": 0.02, "PetImages validation": 0.01}
# Where the distance is measured: the trained model's pooled features (what the detector ships with), or the
# frozen branch's own ImageNet features (a detector of the same kind fitted on the same train photos), which
# might generalise beyond PetImages better than fine-tuned ones.
FEATURE_SOURCES = ("classifier", "branch")


def _branch_signals(model: keras.Model, branch: tuple[str, int], batch_size: int = 32
                    ) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """images -> ``pet``, ``wild`` (as prediction computes them) and ``features`` (pooled) through a frozen
    ImageNet branch; the branch is built and traced once, for every set of images it is called on."""
    net = keras.Model(model.inputs[0], pet_branch(model.inputs[0], branch, features=True))
    fn = tf.function(lambda x: net(x, training=False))

    def signals(images: np.ndarray) -> dict[str, np.ndarray]:
        out = [fn(tf.constant(images[i:i + batch_size], tf.float32)) for i in range(0, len(images), batch_size)]
        return {"pet": np.concatenate([o["pet_prob"].numpy().reshape(-1) for o in out]).astype(np.float64),
                "wild": np.concatenate([o["wild_prob"].numpy().reshape(-1) for o in out]).astype(np.float64),
                "features": np.concatenate([o["branch_features"].numpy() for o in out])}
    return signals


def _search_rules(tune: dict[str, np.ndarray], val: dict[str, np.ndarray], kinds: np.ndarray,
                  calibration: np.ndarray | None = None) -> list[dict]:
    """Every rule of :data:`DESIGN_GRID` that keeps :data:`DESIGN_LIMITS`, best first, with its tune-half rates.

    Thresholds are quantiles of the ``calibration`` distances (default: all validation distances),
    computed as :meth:`OpenSetDetector.calibrate` computes them.
    """
    photos = np.isin(kinds, ["near miss", NON_PET_PHOTO])
    calibration = val["distance"] if calibration is None else calibration
    found = []
    for q in DESIGN_GRID["quantile"]:
        threshold = float(np.quantile(calibration, q, method="higher"))
        for low in DESIGN_GRID["pet_low"]:
            for high in [h for h in DESIGN_GRID["pet_high"] if h >= low]:
                for ratio in DESIGN_GRID["wild_ratio"]:
                    rule = _rule(threshold, low, high, ratio)
                    t = rule.decide(tune["distance"], tune["pet"], tune["wild"])
                    v = rule.decide(val["distance"], val["pet"], val["wild"])
                    rates = {kind: float(t[kinds == kind].mean()) for kind in KINDS if (kinds == kind).any()}
                    rates["non-pet photos incl. near misses"] = float(t[photos].mean())
                    rates["PetImages validation"] = float(v.mean())
                    if rates["pet photo"] <= DESIGN_LIMITS["pet photo"] and \
                            rates["PetImages validation"] <= DESIGN_LIMITS["PetImages validation"]:
                        score = (rates["near miss"] + rates["non-pet photos incl. near misses"]) / 2
                        found.append({"score": score, "quantile": q, "pet_low": low, "pet_high": high,
                                      "wild_ratio": ratio, "rates": rates})
    return sorted(found, key=lambda r: -r["score"])


def openset_design_search(model: ModelLike | None = None, out_dir: str | Path | None = None, *,
                          branches: Sequence[tuple[str, int]] = CANDIDATE_BRANCHES, crosscheck: str | Path | None = None,
                          max_val: int | None = None, batch_size: int = 32, overwrite: bool = False,
                          seed: int = 0) -> dict:
    """Choose the "neither" rule on the crosscheck TUNE half and PetImages VALIDATION only; writes
    ``openset_design.{json,md}``.

    For each candidate ImageNet branch and each source of the distance (:data:`FEATURE_SOURCES`): the
    rules of :data:`DESIGN_GRID` that keep :data:`DESIGN_LIMITS`, scored by the selection rule written
    above them, and the measured cost of prediction with that branch (rejection on) over prediction
    without it, at batch 32. The chosen design is the best-scoring one among branches within
    :data:`REJECTION_BUDGET`. The report half and PetImages test are never read here:
    :func:`openset_report` reports the chosen rule on them.
    """
    bundle = _bundle(model)
    out_dir = Path(out_dir) if out_dir else REPO_ROOT / "reports" / "benchmarks"
    if not overwrite and (out_dir / "openset_design.json").exists():
        raise FileExistsError(f"{out_dir} already holds an open-set design search (pass overwrite=True)")
    manifest = bundle.require_manifest()
    detector = bundle.detector or fit_openset(bundle.path, manifest, save=False)
    fitted = {"max_train": detector.info.get("max_train"), "max_val": detector.info.get("max_val"),
              "seed": detector.info.get("seed", 0)}
    cross = [r for r in read_crosscheck(crosscheck) if r["half"] == "tune"]
    val_items = seeded_subset(read_manifest(manifest, "validation"), max_val, seed)
    # the photos the detector is fitted and calibrated on (fit_openset's seeded subsets), so thresholds are as fitted
    train_items = seeded_subset(read_manifest(manifest, "train"), fitted["max_train"], fitted["seed"])
    calibrating = {str(Path(i.path)) for i in seeded_subset(read_manifest(manifest, "validation"),
                                                            fitted["max_val"], fitted["seed"])}
    batches = {"tune": load_batch([r["path"] for r in cross], bundle.image_size),
               "val": load_batch([i.path for i in val_items], bundle.image_size),
               "train": load_batch([i.path for i in train_items], bundle.image_size)}
    kind_of = {Path(r["path"]): r["kind"] for r in cross}
    kinds = np.array([kind_of[p] for p in batches["tune"].paths])
    in_calibration = np.array([str(p) in calibrating for p in batches["val"].paths])
    label_of = {str(Path(i.path)): i for i in train_items}
    train_labels = labels_of([label_of[str(p)] for p in batches["train"].paths])
    runner = bundle.runner

    def classifier_features(images: np.ndarray) -> np.ndarray:
        return np.concatenate([runner.predict(images[i:i + batch_size])["features"]
                               for i in range(0, len(images), batch_size)])

    classifier_distance = {k: detector.score(classifier_features(batches[k].inputs)) for k in ("tune", "val")}
    timing = batches["tune"].inputs[:32].astype(np.float32)
    candidates = []
    for branch in branches:
        signals_of = _branch_signals(bundle.model, branch, batch_size)
        signals = {k: signals_of(batches[k].inputs) for k in ("tune", "val", "train")}
        with_branch = KerasRunner(bundle.model, branch=branch)
        cost = cost_ratio(lambda b: bundle.predict(b, reject=False),
                          lambda b: detector.score(with_branch.predict(b)["features"]), timing)
        frozen = OpenSetDetector.fit(signals["train"]["features"], train_labels)
        distance = {"classifier": classifier_distance,
                    "branch": {k: frozen.score(signals[k]["features"]) for k in ("tune", "val")}}
        for source in FEATURE_SOURCES:
            tune, val = ({"distance": distance[source][k], "pet": signals[k]["pet"], "wild": signals[k]["wild"]}
                         for k in ("tune", "val"))
            rules = _search_rules(tune, val, kinds, distance[source]["val"][in_calibration])
            candidates.append({"branch": list(branch), "features": source, "cost_ratio": round(cost, 3),
                               "n_rules_within_limits": len(rules), "best": rules[0] if rules else None,
                               "best_without_wild": next((r for r in rules if r["wild_ratio"] is None), None)})
    eligible = [c for c in candidates if c["best"] and c["cost_ratio"] <= REJECTION_BUDGET]
    chosen = max(eligible, key=lambda c: c["best"]["score"]) if eligible else None
    result = {"model": str(bundle.path), "grid": {k: list(v) for k, v in DESIGN_GRID.items()},
              "feature_sources": FEATURE_SOURCES, "limits": DESIGN_LIMITS, "budget": REJECTION_BUDGET,
              "n_tune": int(len(kinds)), "n_tune_by_kind": {k: int((kinds == k).sum()) for k in KINDS},
              "n_validation": int(len(batches["val"].paths)), "n_calibration": int(in_calibration.sum()),
              "n_train": int(len(train_labels)), "candidates": candidates,
              "chosen": ({"branch": chosen["branch"], "features": chosen["features"], **chosen["best"]}
                         if chosen else None),
              "environment": _environment(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json_md(out_dir, "openset_design", result, _design_markdown(result))
    return result


def _rule_cells(rule: dict | None) -> str:
    if rule is None:
        return "| – | – | – | – | – | – | – | – |"
    r = rule["rates"]
    ratio = "–" if rule["wild_ratio"] is None else f"{rule['wild_ratio']:g}"
    return (f"| {rule['quantile']:g} | {rule['pet_low']:g} | {rule['pet_high']:g} | {ratio} | {r['pet photo']:.1%} "
            f"| {r['near miss']:.1%} | {r['non-pet photos incl. near misses']:.1%} | {r['PetImages validation']:.1%} |")


def _design_markdown(result: dict) -> str:
    chosen = result["chosen"]
    lines = ["# Choosing the \"neither\" rule (crosscheck tune half, PetImages validation)", "",
             f"Model `{Path(result['model']).name}`. Rule family: `neither = pet_prob < pet_low or (pet_prob < pet_high "
             "and distance > threshold) or wild_prob > wild_ratio x pet_prob`, threshold = a quantile of the distances "
             f"of the {result['n_calibration']} PetImages validation photos the detector calibrates on. The distance "
             "is measured on the trained model's pooled features (`classifier`) or on the frozen branch's ImageNet "
             f"features (`branch`, a detector of the same kind fitted on the same {result['n_train']} train photos). "
             "Selection rule, fixed before any report-half number: the highest mean of "
             "near-miss and non-pet-photo rejection on the tune half, among rules rejecting at most "
             f"{result['limits']['pet photo']:.0%} of tune pet photos and {result['limits']['PetImages validation']:.0%} "
             f"of PetImages validation photos, with a branch costing at most {result['budget']}x prediction without "
             f"it. {result['n_tune']} tune images ({', '.join(f'{k} {n}' for k, n in result['n_tune_by_kind'].items())}),"
             f" {result['n_validation']} validation photos. The report half is read only by `openset.md`.", "",
             "| branch | distance on | cost (x without) | rules within limits | best rule | quantile | pet_low | pet_high "
             "| wild_ratio | pet photos rejected | near misses | non-pet photos | PetImages val |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in result["candidates"]:
        name = f"{c['branch'][0]} @ {c['branch'][1]} px | {c['features']}"
        lines.append(f"| {name} | {c['cost_ratio']:.2f} | {c['n_rules_within_limits']} | best "
                     + _rule_cells(c["best"]))
        lines.append(f"| {name} | | | best without the wild rule " + _rule_cells(c["best_without_wild"]))
    lines.append("")
    if chosen:
        lines.append(f"Chosen: {chosen['branch'][0]} at {chosen['branch'][1]} px, distance on the "
                     f"{chosen['features']} features, quantile {chosen['quantile']:g}, pet_low {chosen['pet_low']:g}, "
                     f"pet_high {chosen['pet_high']:g}, wild_ratio {chosen['wild_ratio']}. These are "
                     "`catdog.openset`'s defaults.")
    else:
        lines.append("No candidate keeps the limits within the cost budget.")
    env = result["environment"]
    lines.append(f"\nCost measured on {env['cpu_count']} CPU cores, 1-min load average {env['load_average_1min']}.")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- a logistic combination, cross-validated
LOGISTIC_FOLDS = 5


def cross_validate_designs(tune: dict[str, np.ndarray], kinds: np.ndarray, petimages: dict[str, np.ndarray], *,
                           folds: int = LOGISTIC_FOLDS, seed: int = 0) -> dict[str, np.ndarray]:
    """Held-out decisions of the grid rule and the logistic design on every tune photo.

    ``tune`` and ``petimages`` hold ``distance``, ``z`` (:meth:`OpenSetDetector.relative_distance`), ``pet`` and
    ``wild`` per photo; ``petimages`` are the detector's calibration photos (the distance threshold's quantiles
    and the 1% limit), used whole in every fold. The tune photos are split in ``folds`` folds stratified by
    kind; each fold's photos are decided by the grid rule (:func:`_search_rules`, best first) and by
    :func:`catdog.openset.fit_logistic`, each chosen on the other folds. Returns
    ``{"grid": rejected, "logistic": rejected}``, boolean arrays in tune order.
    """
    out = {"grid": np.zeros(len(kinds), bool), "logistic": np.zeros(len(kinds), bool)}
    x, x_petimages = _logistic_rows(tune), _logistic_rows(petimages)
    splits = StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(kinds)), kinds)
    for chosen_on, held_out in splits:
        part = {name: values[chosen_on] for name, values in tune.items()}
        rules = _search_rules(part, petimages, kinds[chosen_on], petimages["distance"])
        if not rules:
            raise ValueError("no rule of the grid keeps the limits on the tune folds")
        best = rules[0]
        threshold = float(np.quantile(petimages["distance"], best["quantile"], method="higher"))
        out["grid"][held_out] = _rule(threshold, best["pet_low"], best["pet_high"], best["wild_ratio"]).decide(
            *(tune[name][held_out] for name in ("distance", "pet", "wild")))
        pets = chosen_on[kinds[chosen_on] == "pet photo"]
        non_pets = chosen_on[np.isin(kinds[chosen_on], ["near miss", NON_PET_PHOTO])]
        weights, bias = fit_logistic(x[pets], x[non_pets], x_petimages, max_pets=DESIGN_LIMITS["pet photo"],
                                     max_petimages=DESIGN_LIMITS["PetImages validation"])
        out["logistic"][held_out] = x[held_out] @ np.asarray(weights) + bias > 0
    return out


def _logistic_rows(signals: dict[str, np.ndarray]) -> np.ndarray:
    """:func:`catdog.openset.rule_signals` of photos' ``z``, ``pet`` and ``wild``, as the detector computes them."""
    return rule_signals(signals["z"], signals["pet"], signals["wild"])


def _design_rates(rejected: np.ndarray, kinds: np.ndarray) -> dict[str, Any]:
    """Rates per kind, non-pet photos incl. near misses, and the round-3 score, with exact intervals."""
    rates = {kind: _rate(int(rejected[kinds == kind].sum()), int((kinds == kind).sum())) for kind in KINDS}
    photos = np.isin(kinds, ["near miss", NON_PET_PHOTO])
    rates["non-pet photos incl. near misses"] = _rate(int(rejected[photos].sum()), int(photos.sum()))
    rates["score"] = (rates["near miss"]["rate"] + rates["non-pet photos incl. near misses"]["rate"]) / 2
    return rates


def openset_logistic_cv(model: ModelLike | None = None, out_dir: str | Path | None = None, *,
                        crosscheck: str | Path | None = None, folds: int = LOGISTIC_FOLDS, seed: int = 0,
                        batch_size: int = 32, overwrite: bool = False, progress: bool = True) -> dict:
    """The logistic combination against the grid rule, cross-validated on the crosscheck TUNE half; writes
    ``openset_logistic_cv.{json,md}``. Decision rule (reports/NEITHER_DESIGN.md, round 4): the logistic design
    wins only with a higher cross-validated score and a pet-photo rate no higher. The report half is not read."""
    bundle = _bundle(model)
    out_dir = Path(out_dir) if out_dir else REPO_ROOT / "reports" / "benchmarks"
    if not overwrite and (out_dir / "openset_logistic_cv.json").exists():
        raise FileExistsError(f"{out_dir} already holds openset_logistic_cv.json (pass overwrite=True)")
    detector = bundle.detector
    if detector is None or detector.branch is None:
        raise ValueError(f"{bundle.path}: the comparison needs a 'neither' detector with a pet branch")
    cross = [r for r in read_crosscheck(crosscheck) if r["half"] == "tune"]
    calibration = seeded_subset(read_manifest(bundle.require_manifest(), "validation"),
                                detector.info.get("max_val"), detector.info.get("seed", 0))

    def signals(paths: list[str]) -> tuple[dict[str, np.ndarray], list[int]]:
        rows = _openset_scores(bundle, paths, batch_size, progress)
        kept = [k for k, row in enumerate(rows) if not row["error"]]
        out = {name: np.array([rows[k][key] for k in kept], np.float64)
               for name, key in (("distance", "ood_score"), ("pet", "pet_prob"), ("wild", "wild_prob"))}
        return out | {"z": detector.relative_distance(out["distance"])}, kept

    tune, kept = signals([r["path"] for r in cross])
    kinds = np.array([cross[k]["kind"] for k in kept])
    petimages, _ = signals([i.path for i in calibration])
    decisions = cross_validate_designs(tune, kinds, petimages, folds=folds, seed=seed)
    designs = {name: _design_rates(rejected, kinds) for name, rejected in decisions.items()}
    grid, logistic = designs["grid"], designs["logistic"]
    wins = logistic["score"] > grid["score"] and logistic["pet photo"]["rate"] <= grid["pet photo"]["rate"]
    # what ships if the logistic design wins: refitted on the whole tune half
    x = _logistic_rows(tune)
    weights, bias = fit_logistic(x[kinds == "pet photo"], x[np.isin(kinds, ["near miss", NON_PET_PHOTO])],
                                 _logistic_rows(petimages), max_pets=DESIGN_LIMITS["pet photo"],
                                 max_petimages=DESIGN_LIMITS["PetImages validation"])
    result = {"model": str(bundle.path), "rule": detector.rule_text(), "signals": list(RULE_SIGNALS),
              "folds": folds, "seed": seed, "limits": DESIGN_LIMITS, "n_tune": int(len(kinds)),
              "n_petimages_calibration": int(len(petimages["distance"])), "designs": designs,
              "logistic_wins": bool(wins), "whole_tune_half_fit": {"weights": list(weights), "bias": bias},
              "environment": _environment(),
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _write_json_md(out_dir, "openset_logistic_cv", result, _logistic_cv_markdown(result))
    return result


def _logistic_cv_markdown(result: dict) -> str:
    columns = ["pet photo", "near miss", "non-pet photos incl. near misses", NON_PET_PHOTO, "pet drawing",
               "low-res pet"]
    lines = [f"# \"Neither\": a logistic combination against the grid rule ({result['folds']}-fold cross-validation, "
             "tune half)", "",
             f"Every one of the {result['n_tune']} readable photos of crosscheck's **tune** half is decided by each "
             "design as chosen on the other folds (stratified by kind, seed "
             f"{result['seed']}); the {result['n_petimages_calibration']} PetImages calibration photos take part in "
             "every fold. Grid: the round-3 search over `DESIGN_GRID` within the limits "
             f"({result['limits']}). Logistic: `LogisticRegression` on {', '.join(result['signals'])}, pet photos "
             "and PetImages (0) against near misses and non-pet photos (1), cut at the limits. The report half is "
             "not read. Rule, written before these numbers (reports/NEITHER_DESIGN.md, round 4): the logistic "
             "design wins only with a higher score (mean of near-miss and non-pet-photo rejection) and a pet-photo "
             "rate no higher.", "",
             "| design | score | " + " | ".join(columns) + " |", "|---|---:|" + "---:|" * len(columns)]
    for name, rates in result["designs"].items():
        cells = [f"{rates[c]['rate']:.1%} ({rates[c]['rejected']}/{rates[c]['n']})" for c in columns]
        lines.append(f"| {name} | {rates['score']:.3f} | " + " | ".join(cells) + " |")
    verdict = ("**The logistic design wins** by the rule." if result["logistic_wins"]
               else "**The grid rule stays**: the logistic design does not win by the rule.")
    fit = result["whole_tune_half_fit"]
    terms = " ".join(f"{w:+.4g} x {name}" for w, name in zip(fit["weights"], result["signals"]))
    lines += ["", verdict, "", f"Logistic design refitted on the whole tune half: neither when {terms} "
              f"{fit['bias']:+.4g} > 0 (z: the distance relative to the model's own calibration, 0 at the median of "
              "its validation distances, 1 at its threshold).", "",
              f"Rule of the detector this ran with: {result['rule']}.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- one entry point for `catdog bench`
def run(which: str, model_path: str | Path | None = None, out_dir: str | Path = "reports/benchmarks",
        n_images: int | None = None) -> dict:
    """Run one named benchmark on the shipped (or given) model and its manifest's test split."""
    bundle = _bundle(model_path)
    manifest = bundle.require_manifest()
    test = read_manifest(manifest, "test")
    if which == "features":
        train_items = read_manifest(manifest, "train")
        n = n_images or 512
        by_class = {label: [i for i in train_items if i.label == label] for label in CLASS_NAMES}
        balanced = [item for label in CLASS_NAMES for item in by_class[label][: n // 2]]
        return feature_cache_benchmark(balanced, out_dir)
    if which == "gradcam":
        return gradcam_benchmark(bundle, [i.path for i in test[:: max(1, len(test) // (n_images or 64))]],
                                 out_dir, n_images=n_images or 64)
    if which == "faithfulness":
        n = n_images or 200
        return faithfulness_report(bundle, test[:: max(1, len(test) // n)][:n], out_dir)
    if which == "inference":
        # XLA is left out: on these CPUs it measured slower than the plain tf.function, and its
        # accuracy pass over 3,000 images at 224 px takes far longer than everything else together.
        return inference_benchmark(bundle, [i.path for i in test], out_dir, n_images=n_images or 1000,
                                   items=test, max_items=None, xla=False)
    if which == "openset":
        return openset_report(bundle, manifest, out_dir, max_test=n_images)
    if which == "crosscheck":
        return crosscheck_accuracy(bundle, out_dir)
    if which == "openset-design":
        return openset_design_search(bundle, out_dir, max_val=n_images)
    if which == "openset-logistic":
        return openset_logistic_cv(bundle, out_dir)
    raise ValueError(f"unknown benchmark {which!r}")


__all__ = ["GROUPS", "CROSSCHECK_ENV", "KINDS", "crosscheck_dir", "crosscheck_half", "read_crosscheck", "images_per_second", "reference_gradcam", "gradcam_benchmark", "faithfulness_report",
           "inference_benchmark", "feature_cache_benchmark", "non_pet_images", "crosscheck_accuracy", "openset_report", "openset_design_search",
           "cross_validate_designs", "openset_logistic_cv", "run"]
