"""Tests for catdog.benchmarks helpers: throughput timing and the independent reference Grad-CAM.

The benchmarks themselves are exercised in test_export (inference), test_openset (open-set
report) and test_gradcam (Grad-CAM speed, faithfulness, reference vs CamExplainer).
"""

from __future__ import annotations

import time

import keras
import numpy as np
import pytest

from catdog.benchmarks import cost_ratio, images_per_second, reference_gradcam
from catdog.models import build_model

SIZE = 32


@pytest.fixture(scope="module")
def cnn() -> keras.Model:
    keras.utils.set_random_seed(3)
    return build_model("simple_cnn", SIZE, weights=None)


def test_images_per_second_times_full_batches_after_warmup():
    calls = []
    result = images_per_second(lambda b: calls.append(len(b)), np.zeros((10, 2, 2, 3)), 4, warmup=1)
    assert calls == [4, 4, 4]  # one warm-up batch, then both full batches (the last 2 images are left out)
    assert result["images"] == 8 and result["images_per_second"] > 0 and result["ms_per_batch"] >= 0
    with pytest.raises(ValueError, match="at least 4 images"):
        images_per_second(len, np.zeros((3, 2, 2, 3)), 4)


def test_cost_ratio_pairs_rounds_so_a_slowdown_midway_hits_both_sides():
    clock = {"slow": 1.0, "calls": 0}

    def work(units: float):
        def fn(batch):
            clock["calls"] += 1
            if clock["calls"] == 8:  # a background job starts: everything after runs 4x slower
                clock["slow"] = 4.0
            time.sleep(0.002 * units * clock["slow"])
        return fn

    ratio = cost_ratio(work(1), work(3), np.zeros((1, 2, 2, 3)), rounds=7)
    assert 2.4 < ratio < 3.6  # the other side costs 3x; timed apart, the slowdown would have skewed it


def test_reference_gradcam_maps_are_normalised_at_input_size(cnn):
    images = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 3)).astype(np.float32)
    maps = reference_gradcam(cnn, images, target="dog")
    assert maps.shape == (3, SIZE, SIZE) and maps.dtype == np.float32
    assert maps.min() >= 0 and maps.max() <= 1
    for m in maps:  # min-max normalised: spans [0, 1], or all zeros when flat
        assert (m.min(), m.max()) == (0.0, 1.0) or not m.any()
    np.testing.assert_array_equal(reference_gradcam(cnn, images, target=["dog", "cat", "dog"])[[0, 2]], maps[[0, 2]])
    np.testing.assert_array_equal(reference_gradcam(cnn, images, target=[1, 0, 1]),
                                  reference_gradcam(cnn, images, target=["dog", "cat", "dog"]))
    assert reference_gradcam(cnn, images[:0]).shape == (0, SIZE, SIZE)


def test_reference_gradcam_rejects_unknown_targets(cnn):
    images = np.zeros((2, SIZE, SIZE, 3), np.float32)
    with pytest.raises(ValueError, match="unknown target"):
        reference_gradcam(cnn, images, target="horse")
    with pytest.raises(ValueError, match="0/'cat' or 1/'dog'"):
        reference_gradcam(cnn, images, target=[0, 2])
