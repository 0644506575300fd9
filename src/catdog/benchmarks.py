"""Benchmarks: measured numbers about catdog's models and heatmaps, written as JSON + Markdown.

Each benchmark function takes what it measures, writes ``<name>.json`` and ``<name>.md``
into ``out_dir`` and returns the same numbers as a dict.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _write_json_md(out_dir: str | Path, name: str, result: dict, markdown: str) -> Path:
    """Write ``<name>.json`` and ``<name>.md`` into ``out_dir`` (created if needed)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / f"{name}.md").write_text(markdown)
    return out_dir


def _environment() -> dict:
    import keras
    import tensorflow as tf

    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def _load_images(paths: Sequence[Any], size: int) -> tuple[list[str], np.ndarray, list[dict]]:
    """Decode ``paths`` at ``size`` with catdog's one decode path; unreadable files are listed, not fatal."""
    from catdog.images import ImageError, load_image

    kept, images, skipped = [], [], []
    for path in paths:
        try:
            images.append(load_image(path, size))
            kept.append(str(path))
        except ImageError as exc:
            skipped.append({"path": str(path), "reason": exc.reason})
    return kept, np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8), skipped


# ---------------------------------------------------------------- Grad-CAM speed
def reference_gradcam(model, images: np.ndarray, layer_name: str | None = None,
                      target: Any = "predicted") -> np.ndarray:
    """Per-image Grad-CAM written as the Keras example does it (keras.io/examples/vision/grad_cam).

    A grad model ``image -> (conv output, logit)``, then one eager ``tf.GradientTape`` per
    image. Two deliberate differences: the score is the dog logit or its negative for cat
    (the example uses the softmax output ``model.output``; ours is one sigmoid), and the map is
    upsampled and min-max normalised like :class:`catdog.gradcam.CamExplainer`, so the two
    are comparable. The grad model is built once, not per image as the example's function
    does, so the speed comparison measures batching and compilation, not model construction.
    Slow on purpose: the ground truth for tests and the baseline for :func:`gradcam_benchmark`.
    """
    import keras
    import tensorflow as tf

    from catdog.gradcam import find_conv_layer, target_classes, upsample_and_normalize

    layer_name = find_conv_layer(model, layer_name)
    grad_model = keras.Model(model.inputs, [model.get_layer(layer_name).output, model.get_layer("logit").output])
    size = (int(model.inputs[0].shape[1]), int(model.inputs[0].shape[2]))
    images = np.asarray(images, np.float32)
    heatmaps = []
    for image, cls in zip(images, target_classes(target, len(images))):
        img_array = tf.convert_to_tensor(image[None])
        with tf.GradientTape() as tape:
            tape.watch(img_array)  # keeps the graph on the tape even if the backbone is frozen
            last_conv_layer_output, logit = grad_model(img_array)
            is_dog = cls == 1 or (cls < 0 and float(logit[0, 0]) >= 0)
            class_channel = logit[:, 0] if is_dog else -logit[:, 0]
        grads = tape.gradient(class_channel, last_conv_layer_output)
        pooled_grads = tf.reduce_mean(grads, axis=(0, 1, 2))
        heatmap = last_conv_layer_output[0] @ pooled_grads[..., tf.newaxis]
        heatmap = tf.squeeze(heatmap, axis=-1)
        heatmaps.append(upsample_and_normalize(heatmap[None], size)[0].numpy())
    return np.stack(heatmaps) if heatmaps else np.zeros((0, *size), np.float32)


def gradcam_benchmark(model, paths: Sequence[Any], out_dir: str | Path, n_images: int = 64,
                      batch_size: int = 16) -> dict:
    """Time per-image Grad-CAM (:func:`reference_gradcam`) against batched :class:`CamExplainer`.

    Explains the same first ``n_images`` readable images of ``paths`` both ways (each warmed up
    first, image decoding excluded from the timings); reports images/second, the speed-up
    and the largest difference between the two sets of maps. Writes ``gradcam_speed.json``
    and ``gradcam_speed.md`` into ``out_dir``.
    """
    from catdog.gradcam import CamExplainer
    from catdog.models import image_size_of

    kept, images, skipped = _load_images(list(paths)[: n_images + 16], image_size_of(model))
    kept, images = kept[:n_images], images[:n_images]
    if len(images) == 0:
        raise ValueError("gradcam_benchmark: none of the given images could be read")
    explainer = CamExplainer(model)
    reference_gradcam(model, images[:2], explainer.layer_name)  # warm-up: first eager calls are slow
    explainer.explain(images[:batch_size], batch_size=batch_size)  # warm-up: traces the tf.function

    start = time.perf_counter()
    reference = reference_gradcam(model, images, explainer.layer_name)
    reference_seconds = time.perf_counter() - start
    start = time.perf_counter()
    batched = explainer.explain(images, batch_size=batch_size)
    batched_seconds = time.perf_counter() - start

    result = {
        "model": model.name, "image_size": image_size_of(model), "layer": explainer.layer_name,
        "n_images": len(images), "batch_size": batch_size,
        "reference_seconds": round(reference_seconds, 3),
        "reference_images_per_second": round(len(images) / reference_seconds, 2),
        "batched_seconds": round(batched_seconds, 3),
        "batched_images_per_second": round(len(images) / batched_seconds, 2),
        "speedup": round(reference_seconds / batched_seconds, 2),
        "max_abs_map_difference": float(np.abs(reference - batched).max()),
        "skipped": skipped, "environment": _environment(),
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
def faithfulness_report(model, items: Sequence[Any], out_dir: str | Path,
                        fractions: Sequence[float] = (0.1, 0.2, 0.4),
                        methods: Sequence[str] = ("gradcam", "gradcampp", "scorecam"),
                        modes: Sequence[str] = ("blur",), max_images: int | None = 200,
                        randomization_images: int = 16, seed: int = 0) -> dict:
    """Deletion test and randomisation sanity check of each heatmap method; writes ``faithfulness.{json,md}``.

    ``items`` are :class:`catdog.data.Item` s or image paths (e.g. the test split). At most
    ``max_images`` of them are used (a seeded random subset; Score-CAM costs 32 forward passes
    per image). For every method, mode and fraction it reports the mean drop in the predicted
    class's probability when the most salient vs. as many random pixels are removed
    (:func:`catdog.gradcam.deletion_drop`), how often salient beat random, and a paired
    Wilcoxon p-value; plus the Spearman correlation with a re-initialised model's maps
    (:func:`catdog.gradcam.randomization_check`, on the first ``randomization_images`` images).
    """
    from scipy.stats import wilcoxon

    from catdog.gradcam import CamExplainer, deletion_drop, randomization_check
    from catdog.models import image_size_of

    paths = [getattr(item, "path", item) for item in items]
    if max_images is not None and len(paths) > max_images:
        keep = np.sort(np.random.default_rng(seed).choice(len(paths), max_images, replace=False))
        paths = [paths[i] for i in keep]
    kept, images, skipped = _load_images(paths, image_size_of(model))
    if len(images) == 0:
        raise ValueError("faithfulness_report: none of the given images could be read")
    explainer = CamExplainer(model)
    rows, randomization = [], {}
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
        randomization[method] = randomization_check(explainer, images[:randomization_images], method, seed)
    result = {"model": model.name, "image_size": image_size_of(model), "layer": explainer.layer_name,
              "n_images": len(kept), "paths": kept, "skipped": skipped, "deletion": rows,
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
        lines.append(f"| {r['method']} | {r['mode']} | {r['fraction']:.0%} | {r['mean_drop_salient']:.3f} | "
                     f"{r['mean_drop_random']:.3f} | {r['mean_difference']:+.3f} | "
                     f"{r['share_salient_beats_random']:.0%} | {r['wilcoxon_p']:.2g} |")
    lines += ["", f"Randomisation check (Adebayo et al. 2018) on {result['randomization_images']} images: mean "
              "Spearman correlation between the trained model's maps and a re-initialised copy's "
              "(near 0 = maps depend on the learned weights).", "", "| method | Spearman rho |", "|---|---:|"]
    lines += [f"| {m} | {rho:.3f} |" for m, rho in result["randomization_spearman"].items()]
    if result["skipped"]:
        lines += ["", f"{len(result['skipped'])} unreadable files skipped (see faithfulness.json)."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- inference speed (Keras vs TFLite)
def inference_benchmark(model_path: str | Path | None, paths: Sequence[Any], out_dir: str | Path,
                        batch_sizes: Sequence[int] = (1, 32), *, n_images: int = 1000,
                        items: Sequence[Any] | None = None, max_items: int | None = 1000,
                        variants: Sequence[str] | None = None, xla: bool = True,
                        max_seconds: float = 30.0, seed: int = 0) -> dict:
    """Images/second of every CPU inference path, plus each path's accuracy; writes ``inference.{json,md}``.

    Engines: ``model.predict``, one traced ``tf.function`` (and with ``jit_compile=True`` if
    ``xla`` and it compiles), and each TFLite variant beside the model (exported first if
    missing; ``variants`` defaults to :data:`catdog.export.DEFAULT_VARIANTS`). Speed: the first
    ``n_images`` readable ``paths``, decoded beforehand (decoding excluded), warmed up, at each
    batch size, at most ``max_seconds`` per measurement. Accuracy: on ``items`` (labelled
    :class:`catdog.data.Item` s; default the TEST split of the card's manifest, a seeded subset of
    ``max_items``), with the card's temperature and threshold; also the largest logit
    difference from the ``tf.function`` and how often the label differs from it.
    """
    from catdog import paths as catdog_paths
    from catdog.data import labels_of, read_manifest
    from catdog.evaluation import apply_temperature
    from catdog.export import (DEFAULT_VARIANTS, KerasRunner, TFLiteRunner, export_tflite, images_per_second,
                               tflite_path)
    from catdog.models import card_manifest, image_size_of, load_card, load_model

    model_path = Path(model_path) if model_path else catdog_paths.default_model_path()
    model, card = load_model(model_path), load_card(model_path)
    size = image_size_of(model)
    temperature, threshold = float(card.get("temperature", 1.0)), float(card.get("threshold", 0.5))
    kept, images, skipped = _load_images(list(paths)[: n_images + 32], size)
    images = images[:n_images].astype(np.float32)
    if len(images) < max(batch_sizes):
        raise ValueError(f"inference_benchmark: need at least {max(batch_sizes)} readable images, got {len(images)}")
    manifest = card_manifest(model_path)
    if items is None and manifest is not None and manifest.is_file():
        items = read_manifest(manifest, "test")
    items = list(items or [])
    if max_items is not None and len(items) > max_items:
        keep = np.sort(np.random.default_rng(seed).choice(len(items), max_items, replace=False))
        items = [items[i] for i in keep]
    item_paths, item_images, item_skipped = _load_images([i.path for i in items], size)
    by_path = {i.path: i for i in items}
    y = labels_of([by_path[p] for p in item_paths]) if item_paths else np.zeros(0, np.int64)

    variants = tuple(variants or DEFAULT_VARIANTS)
    missing = [v for v in variants if not tflite_path(model_path, v).is_file()]
    if missing:
        export_tflite(model_path, variants=missing)
    engines: dict[str, Any] = {"keras model.predict": lambda b: model.predict(b, batch_size=len(b), verbose=0),
                               "tf.function": KerasRunner(model).predict}
    errors: dict[str, str] = {}
    if xla:
        try:
            runner = KerasRunner(model, jit_compile=True)
            runner.predict(images[:1])
            engines["tf.function (XLA jit_compile)"] = runner.predict
        except Exception as exc:  # XLA is optional; report why it is missing
            errors["tf.function (XLA jit_compile)"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    for v in variants:
        engines[f"tflite {v}"] = TFLiteRunner(tflite_path(model_path, v)).predict

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
        rows.append(row)
    result = {"model": str(model_path), "image_size": size, "n_images": len(images), "batch_sizes": list(batch_sizes),
              "n_accuracy_items": int(len(y)), "temperature": temperature, "threshold": threshold,
              "engines": rows, "errors": errors, "skipped": skipped + item_skipped,
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
    lines.append("\n`keras model.predict` and `tf.function` run the same graph, so they share an accuracy.")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- head phase: cached features vs frozen backbone
def feature_cache_benchmark(items: Sequence[Any], out_dir: str | Path, image_size: int = 224, epochs: int = 3,
                            head_epochs: int = 20, batch_size: int = 32) -> dict:
    """Time the head phase two ways on the same images: running the frozen backbone every epoch
    (the textbook way) versus computing pooled features once and training the head on them
    (what :mod:`catdog.training` does). Writes ``feature_cache.json``/``.md``."""
    from catdog.datasets import make_dataset
    from catdog.models import build_model, head_model, set_trainable
    from catdog.training import TrainConfig, compile_model, extract_features
    from catdog.data import labels_of

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


# ---------------------------------------------------------------- one entry point for `catdog bench`
def run(which: str, model_path: str | Path | None = None, out_dir: str | Path = "reports/benchmarks",
        n_images: int | None = None) -> dict:
    """Run one named benchmark on the shipped (or given) model and its manifest's test split."""
    from catdog import paths
    from catdog.data import read_manifest
    from catdog.models import card_manifest, load_model

    model_path = Path(model_path or paths.default_model_path())
    manifest = card_manifest(model_path)
    if manifest is None:
        raise ValueError(f"{model_path}: its card names no manifest")
    test = read_manifest(manifest, "test")
    if which == "features":
        train_items = read_manifest(manifest, "train")
        n = n_images or 512
        balanced = [i for i in train_items if i.label == "cat"][: n // 2] + [i for i in train_items if i.label == "dog"][: n // 2]
        return feature_cache_benchmark(balanced, out_dir)
    if which == "gradcam":
        return gradcam_benchmark(load_model(model_path), [i.path for i in test[:: max(1, len(test) // (n_images or 64))]],
                                 out_dir, n_images=n_images or 64)
    if which == "faithfulness":
        n = n_images or 200
        return faithfulness_report(load_model(model_path), test[:: max(1, len(test) // n)][:n], out_dir)
    if which == "inference":
        # XLA is left out: on these CPUs it measured slower than the plain tf.function, and its
        # accuracy pass over 3,000 images at 224 px takes far longer than everything else together.
        return inference_benchmark(model_path, [i.path for i in test], out_dir, n_images=n_images or 1000,
                                   items=test, max_items=None, xla=False)
    if which == "openset":
        from catdog.openset import openset_report

        return openset_report(model_path, manifest, out_dir, max_test=n_images)
    raise ValueError(f"unknown benchmark {which!r}")
