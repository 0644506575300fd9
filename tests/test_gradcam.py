"""Tests for catdog.gradcam: Grad-CAM, Grad-CAM++ and Score-CAM maps, the method registry, and the speed benchmark.

Small models keep the file fast: MobileNetV2 at 96 px with the local ImageNet weights,
the from-scratch CNN at 64 px, InceptionV3 at 75 px (random weights, layer lookup only).
Photos are real ones from the shared PetImages folder.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import need_imagenet_weights, real_photos

from catdog import gradcam
from catdog.benchmarks import gradcam_benchmark, reference_gradcam
from catdog.gradcam import CamExplainer
from catdog.images import load_batch
from catdog.models import build_model, set_trainable


@pytest.fixture(scope="module")
def photos() -> list[Path]:
    """Three readable cats then three readable dogs (PetImages has a few broken files)."""
    return [p for label in ("cat", "dog") for p in load_batch(real_photos(label, 8), 32, limit=3).paths]


@pytest.fixture(scope="module")
def mobilenet() -> keras.Model:
    """MobileNetV2 (ImageNet) at 96 px with a random head; backbone frozen as in saved catdog models."""
    need_imagenet_weights()  # else Keras would try to download them
    keras.utils.set_random_seed(0)
    model = build_model("mobilenet_v2", 96, weights="imagenet")
    set_trainable(model, 0)
    return model


@pytest.fixture(scope="module")
def mobilenet_explainer(mobilenet) -> CamExplainer:
    return CamExplainer(mobilenet)


@pytest.fixture(scope="module")
def images96(photos) -> np.ndarray:
    return load_batch(photos, 96).inputs


@pytest.fixture(scope="module")
def cnn() -> keras.Model:
    keras.utils.set_random_seed(1)
    return build_model("simple_cnn", 64, weights=None)


# ---------------------------------------------------------------- layers
def test_last_conv_layer_found_for_each_backbone(mobilenet, cnn):
    inception = build_model("inception_v3", 75, weights=None)
    assert gradcam.find_conv_layer(mobilenet) == "out_relu"
    assert gradcam.find_conv_layer(cnn) == "last_conv"
    assert gradcam.find_conv_layer(inception) == "mixed10"
    renamed = keras.Model(mobilenet.inputs, mobilenet.outputs, name="something_else")  # fallback: last 4-D before pool
    assert gradcam.find_conv_layer(renamed) == "out_relu"
    assert CamExplainer(cnn, layer_name="relu3").layer_name == "relu3"


def test_unknown_layer_name_lists_conv_layers(mobilenet):
    with pytest.raises(ValueError, match="no_such_layer") as info:
        CamExplainer(mobilenet, layer_name="no_such_layer")
    assert "out_relu" in str(info.value) and "block_16_project" in str(info.value)
    with pytest.raises(ValueError, match="has no 4-D output"):
        CamExplainer(mobilenet, layer_name="pool")


# ---------------------------------------------------------------- the registry
def test_methods_registry_names_labels_and_weights():
    assert gradcam.METHODS == ("gradcam", "gradcampp", "scorecam")  # callers iterate it as names
    assert [gradcam.method_label(m) for m in gradcam.METHODS] == ["Grad-CAM", "Grad-CAM++", "Score-CAM"]
    assert all(callable(gradcam.REGISTRY[m].weights) for m in gradcam.METHODS)
    assert not gradcam.cam_method("scorecam").uses_gradients and gradcam.cam_method("gradcam").uses_gradients
    with pytest.raises(ValueError, match="unknown method 'lime'; choose from"):
        gradcam.method_label("lime")


# ---------------------------------------------------------------- maps
@pytest.mark.parametrize("method", gradcam.METHODS)
def test_maps_have_input_shape_and_unit_range(mobilenet_explainer, images96, method):
    maps = mobilenet_explainer.explain(images96, method=method)
    assert maps.shape == images96.shape[:3] and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0.0 and maps.max() <= 1.0
    assert (maps.reshape(len(maps), -1).max(axis=1) == 1.0).any()  # normalised, not all flat


def test_cat_and_dog_maps_differ_and_targets_agree(mobilenet_explainer, images96):
    both = mobilenet_explainer.explain_both(images96)
    assert both["cat"].shape == both["dog"].shape == images96.shape[:3]
    diff = np.abs(both["cat"] - both["dog"]).reshape(len(images96), -1).mean(axis=1)
    assert (diff > 0.05).all(), diff
    np.testing.assert_allclose(mobilenet_explainer.explain(images96, "cat"), both["cat"], atol=1e-5)
    classes = np.arange(len(images96)) % 2  # per-image class indices
    mixed = mobilenet_explainer.explain(images96, classes)
    expected = np.where(classes[:, None, None] == 1, both["dog"], both["cat"])
    np.testing.assert_allclose(mixed, expected, atol=1e-5)
    maps, logits = mobilenet_explainer.explain_with_logits(images96, "predicted")
    predicted = np.where((logits >= 0)[:, None, None], both["dog"], both["cat"])
    np.testing.assert_allclose(maps, predicted, atol=1e-5)


def test_flat_map_becomes_zeros_not_nan():
    maps = gradcam.upsample_and_normalize(np.zeros((2, 3, 3), np.float32), (8, 8)).numpy()
    assert maps.shape == (2, 8, 8) and np.isfinite(maps).all() and not maps.any()


def test_batched_gradcam_equals_per_image_reference(mobilenet, mobilenet_explainer, images96):
    target = np.array([0, 1, 1, 0, 1, 0])[: len(images96)]  # both signs; "predicted" is compared in the benchmark test
    reference = reference_gradcam(mobilenet, images96, target=target)
    batched = mobilenet_explainer.explain(images96, target, batch_size=4)  # uneven last batch too
    np.testing.assert_allclose(batched, reference, atol=1e-4)


def test_works_on_model_loaded_from_keras_file(photos, tmp_path):
    # A small CNN keeps this fast; the shipped-model test in test_faithfulness covers a saved MobileNetV2.
    keras.utils.set_random_seed(2)
    model = build_model("simple_cnn", 64, weights=None)
    set_trainable(model, 0)  # frozen backbone, as saved catdog models have
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras", compile=False)
    images = load_batch(photos, 64).inputs
    explainer = CamExplainer(loaded)
    assert explainer.layer_name == "last_conv"
    original = CamExplainer(model)
    for method in ("gradcam", "scorecam"):
        np.testing.assert_allclose(explainer.explain(images, "dog", method), original.explain(images, "dog", method),
                                   atol=1e-4)


def test_scorecam_batches_do_not_change_maps(cnn, photos):
    images = load_batch(photos, 64).inputs
    small = CamExplainer(cnn, top_k=8, scorecam_batch=8)  # one image per compiled call
    large = CamExplainer(cnn, top_k=8, scorecam_batch=64)
    np.testing.assert_allclose(small.explain(images, method="scorecam"), large.explain(images, method="scorecam"),
                               atol=1e-5)


def test_wrong_image_size_and_target_are_clear_errors(mobilenet_explainer, images96):
    with pytest.raises(ValueError, match="load_image"):
        mobilenet_explainer.explain(np.zeros((1, 64, 64, 3)))
    with pytest.raises(ValueError, match="unknown target"):
        mobilenet_explainer.explain(images96, "horse")
    with pytest.raises(ValueError, match="unknown method"):
        mobilenet_explainer.explain(images96, method="lime")


# ---------------------------------------------------------------- speed benchmark
def test_benchmark_writes_files_and_agrees_with_reference(cnn, photos, tmp_path):
    speed = gradcam_benchmark(cnn, photos, tmp_path, n_images=4, batch_size=2)
    assert speed["n_images"] == 4 and speed["max_abs_map_difference"] < 1e-4 and speed["speedup"] > 0
    for name in ("gradcam_speed.json", "gradcam_speed.md"):
        assert (tmp_path / name).is_file()


def test_feature_map_size_is_the_explained_layers_grid(mobilenet_explainer, cnn):
    assert mobilenet_explainer.feature_map_size == (3, 3)  # MobileNetV2 at 96 px: too coarse to localise
    assert CamExplainer(cnn).feature_map_size == (8, 8)  # three 2x poolings of 64 px
