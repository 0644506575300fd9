"""Tests for catdog.gradcam (Grad-CAM, Grad-CAM++, Score-CAM, rendering, files) and the Grad-CAM benchmarks.

Small models keep the file fast: MobileNetV2 at 96 px with the local ImageNet weights,
the from-scratch CNN at 64 px, InceptionV3 at 75 px (random weights, layer lookup only).
Photos are real ones from the shared PetImages folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from catdog import gradcam, paths
from catdog.benchmarks import faithfulness_report, gradcam_benchmark, reference_gradcam
from catdog.gradcam import CamExplainer, deletion_drop, explain_paths, overlays_for, randomization_check, render
from catdog.images import ImageError, load_image, load_original
from catdog.models import build_model, card_path, load_card, set_trainable

PETS = paths.REPO_ROOT.parent / "shared" / "data" / "PetImages"
SHIPPED = paths.default_model_path()  # models/catdog_mobilenetv2.keras unless $CATDOG_MODEL is set

pytestmark = pytest.mark.skipif(not PETS.is_dir(), reason=f"real photos not found at {PETS}")


def _readable(folder: Path, n: int) -> list[Path]:
    """The first ``n`` decodable photos in ``folder`` (PetImages has a few broken files)."""
    found = []
    for path in sorted(folder.glob("*.jpg"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0):
        try:
            load_image(path, 32)
        except ImageError:
            continue
        found.append(path)
        if len(found) == n:
            break
    return found


@pytest.fixture(scope="module")
def photos() -> list[Path]:
    """Three cats then three dogs."""
    return _readable(PETS / "Cat", 3) + _readable(PETS / "Dog", 3)


@pytest.fixture(scope="module")
def mobilenet() -> keras.Model:
    """MobileNetV2 (ImageNet) at 96 px with a random head; backbone frozen as in saved catdog models."""
    keras.utils.set_random_seed(0)
    model = build_model("mobilenet_v2", 96, weights="imagenet")
    set_trainable(model, 0)
    return model


@pytest.fixture(scope="module")
def mobilenet_explainer(mobilenet) -> CamExplainer:
    return CamExplainer(mobilenet)


@pytest.fixture(scope="module")
def images96(photos) -> np.ndarray:
    return np.stack([load_image(p, 96) for p in photos])


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
    # A small CNN keeps this fast; the shipped-model test below covers a saved MobileNetV2.
    keras.utils.set_random_seed(2)
    model = build_model("simple_cnn", 64, weights=None)
    set_trainable(model, 0)  # frozen backbone, as saved catdog models have
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras", compile=False)
    images = np.stack([load_image(p, 64) for p in photos])
    explainer = CamExplainer(loaded)
    assert explainer.layer_name == "last_conv"
    original = CamExplainer(model)
    for method in ("gradcam", "scorecam"):
        np.testing.assert_allclose(explainer.explain(images, "dog", method), original.explain(images, "dog", method),
                                   atol=1e-4)


def test_wrong_image_size_and_target_are_clear_errors(mobilenet_explainer, images96):
    with pytest.raises(ValueError, match="load_image"):
        mobilenet_explainer.explain(np.zeros((1, 64, 64, 3)))
    with pytest.raises(ValueError, match="unknown target"):
        mobilenet_explainer.explain(images96, "horse")
    with pytest.raises(ValueError, match="unknown method"):
        mobilenet_explainer.explain(images96, method="lime")


# ---------------------------------------------------------------- rendering and files
def test_render_uses_original_resolution_and_rgb_order(photos):
    original = load_original(photos[0])[:150, :170]  # non-square, and not the model's input size
    cam = np.linspace(0, 1, 96 * 96, dtype=np.float32).reshape(96, 96)
    gray, heatmap, overlay = render(original, cam, alpha=0.4)
    assert gray.shape == (150, 170) and heatmap.shape == overlay.shape == (150, 170, 3)
    assert gray.dtype == heatmap.dtype == overlay.dtype == np.uint8
    _, hot, _ = render(original, np.ones((96, 96), np.float32))
    _, cold, _ = render(original, np.zeros((96, 96), np.float32))
    assert hot[0, 0, 0] > hot[0, 0, 2] and cold[0, 0, 2] > cold[0, 0, 0]  # jet: 1 is red, 0 is blue (RGB order)
    with pytest.raises(ValueError, match="viridis"):
        render(original, cam, colormap="no-such-map")


def test_explain_paths_skips_corrupt_file_and_writes_panels(cnn, photos, tmp_path):
    folder = tmp_path / "in"
    (folder / "cats").mkdir(parents=True)
    (folder / "dogs").mkdir()
    shutil.copy(photos[0], folder / "cats" / "1.jpg")
    shutil.copy(photos[3], folder / "dogs" / "1.jpg")  # same stem in another folder
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (folder / "notes.txt").write_text("not an image")
    model_path = tmp_path / "cnn.keras"
    cnn.save(model_path)
    card_path(model_path).write_text(json.dumps({"temperature": 2.0}))
    out = tmp_path / "out"

    rows = explain_paths(model_path, [folder], out, method="gradcampp", batch_size=2)

    assert [Path(r["path"]).name for r in rows] == ["broken.jpg", "1.jpg", "1.jpg"]
    bad, *good = rows
    assert bad["status"] == "skipped" and bad["error"] and "panel" not in bad
    assert not list(out.glob("broken*"))
    stems = {Path(r["panel"]).name for r in good}
    assert len(stems) == 2
    for row in good:
        for kind in ("gray", "heatmap", "overlay", "panel"):
            assert Path(row[kind]).is_file(), row[kind]
        assert load_original(row["overlay"]).shape[:2] == load_original(row["path"]).shape[:2]
        assert 0.5 <= row["confidence"] <= 1.0
    assert load_card(model_path)["temperature"] == 2.0


def test_overlays_for_gallery(cnn, photos, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"nope")
    overlays = overlays_for(cnn, [photos[0], broken, photos[4]], method="scorecam")
    assert list(overlays) == [photos[0], photos[4]]
    for path, overlay in overlays.items():
        assert overlay.dtype == np.uint8 and overlay.shape == load_original(path).shape


# ---------------------------------------------------------------- faithfulness and benchmarks
def test_deletion_and_randomization_report_numbers(cnn, photos):
    images = np.stack([load_image(p, 64) for p in photos])
    explainer = CamExplainer(cnn)
    for mode in ("blur", "grey"):
        result = deletion_drop(explainer, images, explainer.explain(images), 0.2, mode)
        assert len(result["drop_salient"]) == len(result["drop_random"]) == len(images)
        assert np.isfinite([result["mean_drop_salient"], result["mean_drop_random"]]).all()
    rho = randomization_check(cnn, images[:3])
    assert np.isnan(rho) or -1.0 <= rho <= 1.0


def test_benchmark_and_faithfulness_report_write_files(cnn, photos, tmp_path):
    speed = gradcam_benchmark(cnn, photos, tmp_path, n_images=4, batch_size=2)
    assert speed["n_images"] == 4 and speed["max_abs_map_difference"] < 1e-4 and speed["speedup"] > 0
    report = faithfulness_report(cnn, photos[:4], tmp_path, fractions=(0.2,), methods=("gradcam",),
                                 randomization_images=2)
    assert len(report["deletion"]) == 1
    for name in ("gradcam_speed.json", "gradcam_speed.md", "faithfulness.json", "faithfulness.md"):
        assert (tmp_path / name).is_file()


@pytest.mark.skipif(not SHIPPED.is_file(), reason=f"shipped model {SHIPPED} not trained yet")
def test_shipped_model_salient_pixels_matter_more_than_random():
    from catdog.data import DatasetError, read_manifest
    from catdog.models import card_manifest

    model = keras.models.load_model(SHIPPED, compile=False)
    try:
        test_items = read_manifest(card_manifest(SHIPPED), "test")
        cats, dogs = ([i.path for i in test_items if i.label == label][:4] for label in ("cat", "dog"))
        chosen = cats + dogs
    except (DatasetError, TypeError, OSError):  # no/moved manifest: fall back to the shared photos
        chosen = _readable(PETS / "Cat", 4) + _readable(PETS / "Dog", 4)
    images = np.stack([load_image(p, int(model.inputs[0].shape[1])) for p in chosen])
    explainer = CamExplainer(model)
    result = deletion_drop(explainer, images, explainer.explain(images), fraction=0.2, mode="blur")
    assert result["mean_drop_salient"] > result["mean_drop_random"], result
