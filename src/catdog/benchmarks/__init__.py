"""Benchmarks: measured numbers about catdog's models and heatmaps, written as JSON + Markdown.

Each benchmark function takes what it measures, writes ``<name>.json`` and ``<name>.md``
into ``out_dir`` and returns the same numbers as a dict. Model facts (temperature,
threshold, manifest, image size) come from a :class:`~catdog.bundle.Bundle`: pass a model
path or a Bundle. :func:`run` is the one entry point of ``catdog bench``.

- :mod:`~catdog.benchmarks.common`: timing helpers and report writing
- :mod:`~catdog.benchmarks.heatmaps`: Grad-CAM speed and faithfulness
- :mod:`~catdog.benchmarks.speed`: inference speed per engine, the cached-feature head phase
- :mod:`~catdog.benchmarks.crosscheck`: the "neither" report and the classifier on other collections' pets
- :mod:`~catdog.benchmarks.neither_design`: choosing the "neither" rule on the tune half
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from catdog.benchmarks.common import as_bundle, cost_ratio, images_per_second
from catdog.benchmarks.crosscheck import (CROSSCHECK_ENV, GROUPS, KINDS, crosscheck_accuracy, crosscheck_dir,
                                          crosscheck_half, non_pet_images, openset_report, read_crosscheck)
from catdog.benchmarks.heatmaps import faithfulness_report, gradcam_benchmark, reference_gradcam
from catdog.benchmarks.neither_design import cross_validate_designs, openset_design_search, openset_logistic_cv
from catdog.benchmarks.speed import cost_comparison, feature_cache_benchmark, inference_benchmark
from catdog.conventions import CLASS_NAMES
from catdog.data import read_manifest


def run(which: str, model_path: str | Path | None = None, out_dir: str | Path = "reports/benchmarks",
        n_images: int | None = None, against: Sequence[str | Path] = ()) -> dict:
    """Run one named benchmark on the shipped (or given) model and its manifest's test split.

    ``against``: for ``cost``, the models whose speed is compared with this one's.
    """
    if which == "cost" and not against:
        raise ValueError("the cost benchmark compares models: name at least one with --against")
    bundle = as_bundle(model_path)
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
    if which == "cost":
        return cost_comparison([bundle, *against], [i.path for i in test], out_dir, n_images=n_images or 256)
    if which == "openset":
        return openset_report(bundle, manifest, out_dir, max_test=n_images)
    if which == "crosscheck":
        return crosscheck_accuracy(bundle, out_dir)
    if which == "openset-design":
        return openset_design_search(bundle, out_dir, max_val=n_images)
    if which == "openset-logistic":
        return openset_logistic_cv(bundle, out_dir)
    raise ValueError(f"unknown benchmark {which!r}")


__all__ = ["GROUPS", "CROSSCHECK_ENV", "KINDS", "crosscheck_dir", "crosscheck_half", "read_crosscheck", "cost_ratio",
           "images_per_second", "reference_gradcam", "gradcam_benchmark", "faithfulness_report", "inference_benchmark",
           "feature_cache_benchmark", "cost_comparison", "non_pet_images", "crosscheck_accuracy", "openset_report",
           "openset_design_search", "cross_validate_designs", "openset_logistic_cv", "run"]
