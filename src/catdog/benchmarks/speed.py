"""Inference speed (Keras, tf.function, TFLite; rejection on and off) and the cached-feature head phase."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from catdog.benchmarks.common import (ModelLike, as_bundle, cost_ratio, images_per_second, machine_environment,
                                      skipped_rows, timing_images, write_report)
from catdog.conventions import DEFAULT_TFLITE_VARIANTS
from catdog.data import Item, labels_of, read_manifest, seeded_subset
from catdog.datasets import make_dataset
from catdog.export import classifier_tflite, export_tflite
from catdog.images import load_batch
from catdog.inference import KerasRunner, extract_features
from catdog.metrics import apply_temperature
from catdog.models import build_model, head_model, set_trainable
from catdog.tflite import TFLiteRunner, tflite_path
from catdog.training import TrainConfig, compile_model

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
    bundle = as_bundle(model)
    model_path, keras_model, size = bundle.path, bundle.model, bundle.image_size
    temperature, threshold = bundle.temperature, bundle.threshold
    images, speed_batch = timing_images(paths, size, n_images, max(batch_sizes), "inference_benchmark")
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
              "engines": rows, "errors": errors, "skipped": skipped_rows(speed_batch) + skipped_rows(item_batch),
              "max_seconds_per_measurement": max_seconds, "environment": machine_environment()}
    write_report(out_dir, "inference", result, _inference_markdown(result))
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


# ---------------------------------------------------------------- the cost of networks, side by side
COST_ENGINES = ("keras tf.function", "tflite float32")


def cost_comparison(models: Sequence[ModelLike], paths: Sequence[Any], out_dir: str | Path,
                    batch_sizes: Sequence[int] = (1, 32), *, n_images: int = 256, max_seconds: float = 15.0) -> dict:
    """Images/second of several models' classifiers in one run (Keras graph and float32 TFLite, batch 1 and 32);
    writes ``model_cost.{json,md}``.

    Each model runs alone, without its "neither" branch, on the first ``n_images`` readable ``paths`` decoded at
    its own input size (decoding excluded); the first model is the reference the others are divided by. One run
    on one machine state, so the ratios compare networks rather than moments of a busy machine.
    """
    if len(models) < 2:
        raise ValueError("cost_comparison needs at least two models (the first is the reference)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, model in enumerate(models):
            bundle = as_bundle(model)
            images, batch = timing_images(paths, bundle.image_size, n_images, max(batch_sizes), "cost_comparison")
            keras_runner = KerasRunner(bundle.model)
            tflite_runner = TFLiteRunner(classifier_tflite(bundle.model, Path(tmp) / f"model{k}.tflite"))
            agreement = np.abs(tflite_runner.predict(images[:32])["logit"] - keras_runner.predict(images[:32])["logit"])
            row: dict[str, Any] = {"model": str(bundle.path), "backbone": bundle.card.backbone if bundle.card else None,
                                   "image_size": bundle.image_size, "n_images": int(len(images)),
                                   "parameters": int(bundle.model.count_params()),
                                   "file_mb": round(bundle.path.stat().st_size / 1e6, 2),
                                   "max_abs_logit_diff_tflite": float(agreement.max()),
                                   "skipped": skipped_rows(batch)}
            for name, fn in zip(COST_ENGINES, (keras_runner.predict, tflite_runner.predict)):
                row[name] = {f"batch_{b}": images_per_second(fn, images, b, max_seconds=max_seconds)
                             for b in batch_sizes}
            rows.append(row)
    for row in rows:
        row["relative_to_first"] = {name: {b: round(row[name][b]["images_per_second"]
                                                    / rows[0][name][b]["images_per_second"], 3) for b in row[name]}
                                    for name in COST_ENGINES}
    result = {"models": rows, "batch_sizes": list(batch_sizes), "n_images": min(row["n_images"] for row in rows),
              "max_seconds_per_measurement": max_seconds, "environment": machine_environment()}
    write_report(out_dir, "model_cost", result, _cost_markdown(result))
    return result


def _cost_markdown(result: dict) -> str:
    sizes = result["batch_sizes"]
    env = result["environment"]
    header = " | ".join(f"{engine} @ batch {b}" for engine in COST_ENGINES for b in sizes)
    lines = ["# The cost of each network (classifier alone, one run)", "",
             f"{result['n_images']} or more real images preloaded at each model's own size (decoding excluded), "
             "warmed up; "
             f"{env['cpu_count']} CPU cores, 1-min load average at the end {env['load_average_1min']}. "
             "Images/second, and in brackets relative to the first model.", "",
             f"| model | backbone | px | parameters | file MB | {header} |",
             "|---|---|---:|---:|---:|" + "---:|" * (len(COST_ENGINES) * len(sizes))]
    for row in result["models"]:
        cells = [f"{row[e][f'batch_{b}']['images_per_second']} ({row['relative_to_first'][e][f'batch_{b}']:.2f}x)"
                 for e in COST_ENGINES for b in sizes]
        lines.append(f"| `{row['model']}` | {row['backbone']} | {row['image_size']} | {row['parameters']:,} | "
                     f"{row['file_mb']} | " + " | ".join(cells) + " |")
    worst = max(r["max_abs_logit_diff_tflite"] for r in result["models"])
    lines += ["", f"The TFLite files are converted from the Keras graphs in the same run; largest logit difference "
              f"between the two on the first 32 images of any model: {worst:.1e}."]
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
        "environment": machine_environment(),
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
    write_report(out_dir, "feature_cache", result, md)
    return result
