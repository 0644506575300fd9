"""Tests for catdog.faithfulness (deletion test, randomisation check) and the faithfulness report built on them."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import need_shared, real_photos

from catdog import paths
from catdog.benchmarks import faithfulness_report
from catdog.bundle import Bundle
from catdog.data import read_manifest
from catdog.faithfulness import deletion_drop, randomization_check, randomized_explainer
from catdog.gradcam import CamExplainer
from catdog.images import load_batch
from catdog.models import build_model

SHIPPED = paths.default_model_path()  # models/catdog.keras unless $CATDOG_MODEL is set


@pytest.fixture(scope="module")
def photos():
    """Three readable cats then three readable dogs."""
    return [p for label in ("cat", "dog") for p in load_batch(real_photos(label, 8), 32, limit=3).paths]


@pytest.fixture(scope="module")
def cnn() -> keras.Model:
    keras.utils.set_random_seed(1)
    return build_model("simple_cnn", 64, weights=None)


def test_deletion_and_randomization_report_numbers(cnn, photos):
    images = load_batch(photos, 64).inputs
    explainer = CamExplainer(cnn)
    maps = explainer.explain(images)
    for mode in ("blur", "grey"):
        result = deletion_drop(explainer, images, maps, 0.2, mode)
        assert len(result["drop_salient"]) == len(result["drop_random"]) == len(images)
        assert np.isfinite([result["mean_drop_salient"], result["mean_drop_random"]]).all()
        assert all(0.5 <= p <= 1.0 for p in result["p_original"])  # the predicted class's probability
    rho = randomization_check(cnn, images[:3])
    assert np.isnan(rho) or -1.0 <= rho <= 1.0


def test_deletion_rejects_bad_arguments(cnn, photos):
    images = load_batch(photos[:2], 64).inputs
    explainer = CamExplainer(cnn)
    maps = explainer.explain(images)
    with pytest.raises(ValueError, match="'blur' or 'grey'"):
        deletion_drop(explainer, images, maps, mode="noise")
    with pytest.raises(ValueError, match="fraction"):
        deletion_drop(explainer, images, maps, fraction=1.0)
    with pytest.raises(ValueError, match="do not match"):
        deletion_drop(explainer, images, maps[:, :32])


def test_faithfulness_report_writes_files(cnn, photos, tmp_path):
    report = faithfulness_report(cnn, photos[:4], tmp_path, fractions=(0.2,), methods=("gradcam",),
                                 randomization_images=2)
    assert len(report["deletion"]) == 1
    for name in ("faithfulness.json", "faithfulness.md"):
        assert (tmp_path / name).is_file()


@pytest.mark.skipif(not SHIPPED.is_file(), reason=f"shipped model {SHIPPED} not trained yet")
def test_shipped_model_salient_pixels_matter_more_than_random():
    need_shared()  # the manifest names photos in the shared folder
    bundle = Bundle.load(SHIPPED)
    manifest = bundle.manifest
    if manifest is None or not manifest.is_file():  # a missing input is a skip, never a switch to other photos
        pytest.skip(f"the manifest of {SHIPPED} is missing")
    test_items = read_manifest(manifest, "test")
    chosen = [i.path for label in ("cat", "dog") for i in [i for i in test_items if i.label == label][:4]]
    if not all(Path(p).is_file() for p in chosen):
        pytest.skip(f"test photos named by {manifest} not found (set CATDOG_SHARED)")
    images = load_batch(chosen, bundle.image_size).inputs
    explainer = bundle.explainer
    result = deletion_drop(explainer, images, explainer.explain(images), fraction=0.2, mode="blur")
    assert result["mean_drop_salient"] > result["mean_drop_random"], result


def test_one_randomized_copy_serves_every_method(cnn, photos):
    images = load_batch(photos[:4], 64).inputs
    explainer = CamExplainer(cnn)
    copy = randomized_explainer(explainer, seed=3)
    assert not np.allclose(copy.model.get_layer("logit").get_weights()[0], cnn.get_layer("logit").get_weights()[0])
    for method in ("gradcam", "gradcampp"):  # the copy given is the copy used: same rho as building it afresh
        assert randomization_check(explainer, images, method, randomized=copy) == pytest.approx(
            randomization_check(explainer, images, method, seed=3), nan_ok=True)
    assert randomization_check(explainer, images, randomized=explainer) == pytest.approx(1.0)  # itself: identical maps
