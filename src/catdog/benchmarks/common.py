"""What every benchmark shares: the model it measures, timing, and writing its report."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from catdog.bundle import Bundle
from catdog.images import Batch, load_batch

ModelLike = Bundle | str | Path


def write_report(out_dir: str | Path, name: str, result: dict, markdown: str) -> Path:
    """Write ``<name>.json`` and ``<name>.md`` into ``out_dir`` (created if needed)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / f"{name}.md").write_text(markdown)
    return out_dir


def machine_environment() -> dict:
    """The machine and library versions a measurement was made with, for its report."""
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def as_bundle(model: ModelLike | None) -> Bundle:
    """``model`` as a Bundle: a Bundle as is, else the model file's (default: the shipped model).

    Benchmarks run the Keras graph unless they name another engine, so their rows stay comparable.
    """
    return model if isinstance(model, Bundle) else Bundle.load(model, engine="keras")


def keras_model_of(model: keras.Model | ModelLike) -> keras.Model:
    """The Keras model to explain: a Bundle's or a model file's; a Keras model as is (heatmaps need no card)."""
    return model if isinstance(model, keras.Model) else as_bundle(model).model


def skipped_rows(batch: Batch) -> list[dict[str, str]]:
    """The files a batch left out, as JSON rows."""
    return [{"path": str(path), "reason": reason} for path, reason in batch.errors]


def timing_images(paths: Sequence[Any], size: int, n_images: int, at_least: int, who: str) -> tuple[np.ndarray, Batch]:
    """The first ``n_images`` readable ``paths`` decoded at ``size`` (float32), to time a model on.

    Fewer than ``at_least`` readable images is an error naming the first unreadable file and why.
    """
    batch = load_batch(paths, size, limit=n_images)
    if len(batch.paths) < at_least:
        first = f" (first unreadable: {batch.errors[0][0]}: {batch.errors[0][1]})" if batch.errors else ""
        raise ValueError(f"{who}: need at least {at_least} readable images, got {len(batch.paths)}{first}")
    return batch.inputs.astype(np.float32), batch


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

