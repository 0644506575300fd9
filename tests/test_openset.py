"""Tests for catdog.openset (the Mahalanobis detector, its file beside the model) and the open-set
report and non-pet images of catdog.benchmarks."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import need_imagenet_weights, real_photos

from catdog.benchmarks import crosscheck_dir, non_pet_images, openset_report, read_crosscheck
from catdog.card import ModelCard
from catdog.images import ImageError, load_image
from catdog.models import build_model
from catdog.openset import OpenSetDetector, fit_openset, load_for_model, openset_path
from catdog.predict import Predictor

# ImageNet MobileNetV2 features separate photos from non-photos poorly at 96 px; 128 px is the
# smallest size where they do (measured), and still fast.
SIZE = 128


def _readable(label: str, n: int, start: int) -> list[str]:
    out = []
    for p in real_photos(label, n + 10, start):
        try:
            load_image(p, SIZE)
            out.append(str(p))
        except ImageError:
            continue
    return out[:n]


@pytest.fixture(scope="module")
def pets_model(tmp_path_factory) -> Path:
    """MobileNetV2 (ImageNet, random head) + card + manifest: 50+50 train, 20+20 validation, 20+20 test photos."""
    folder = tmp_path_factory.mktemp("openset")
    rows = []
    for label in ("cat", "dog"):
        photos = _readable(label, 90, start=100)
        rows += [(p, label, "train") for p in photos[:50]] + [(p, label, "validation") for p in photos[50:70]]
        rows += [(p, label, "test") for p in photos[70:90]]
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        csv.writer(f).writerows([("path", "label", "split"), *rows])
    need_imagenet_weights()  # else Keras would try to download them
    keras.utils.set_random_seed(0)
    path = folder / "pets.keras"
    build_model("mobilenet_v2", SIZE, weights="imagenet").save(path)
    # The manifest is named relative to the card, as training writes it.
    ModelCard(model_file=path.name, backbone="mobilenet_v2", image_size=SIZE, temperature=1.5,
              manifest=manifest.name).save(path)
    return path


@pytest.fixture(scope="module")
def detector(pets_model) -> OpenSetDetector:
    return fit_openset(pets_model)


def test_fit_and_threshold_on_gaussian_features():
    rng = np.random.default_rng(0)
    direction = rng.normal(size=(2, 16)) * 3
    train = np.concatenate([direction[0] + rng.normal(size=(200, 16)), direction[1] + rng.normal(size=(200, 16))])
    labels = np.repeat([0, 1], 200)
    val = np.concatenate([direction[k] + rng.normal(size=(100, 16)) for k in (0, 1)])
    det = OpenSetDetector.fit(train, labels).calibrate(val, 0.99)
    assert np.mean(det.score(val) > det.threshold) <= 0.01  # at most 1% of validation rejected
    far = -direction[0] * 2 + rng.normal(size=(50, 16))  # pointing away from both classes
    assert (det.score(far) > det.threshold).mean() > 0.9
    assert det.info["n_train"] == {"cat": 200, "dog": 200} and det.info["n_validation"] == 200
    with pytest.raises(ValueError, match="2 train images per class"):
        OpenSetDetector.fit(train[:3], np.array([0, 0, 1]))


def test_the_score_is_the_mahalanobis_distance_to_the_nearer_class_mean():
    """Checked against SciPy's own Mahalanobis distance on L2-normalised features, class by class."""
    from scipy.spatial.distance import mahalanobis

    rng = np.random.default_rng(1)
    features = np.concatenate([rng.normal(1, 1, (40, 6)), rng.normal(-1, 1, (40, 6))])
    det = OpenSetDetector.fit(features, np.repeat([0, 1], 40))
    queries = rng.normal(0, 2, (7, 6))
    unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    expected = [min(mahalanobis(q, m, det.precision.astype(np.float64)) for m in det.means.astype(np.float64))
                for q in unit]
    np.testing.assert_allclose(det.score(queries), expected, rtol=1e-9)
    assert len(set(np.argmin([[mahalanobis(q, m, det.precision) for m in det.means] for q in unit], 1))) == 2


def test_rejects_synthetic_non_photos_and_accepts_real_pets(pets_model, detector, tmp_path):
    assert openset_path(pets_model).is_file()
    predictor = Predictor(pets_model, reject=True, progress=False)
    synthetic = [r["path"] for r in non_pet_images(tmp_path, groups=("synthetic",))]
    assert {Path(p).parent.name for p in synthetic} == {"synthetic"}
    rows = list(predictor.predict_paths(synthetic))
    rejected = np.mean([r["label"] == "neither" for r in rows])
    assert len(rows) >= 25 and rejected >= 0.75, [(Path(r["path"]).name, r["ood_score"]) for r in rows]
    assert all(r["confidence"] is None and r["p_dog"] is not None for r in rows if r["label"] == "neither")

    with open(detector.info["manifest"]) as f:
        test = [r["path"] for r in csv.DictReader(f) if r["split"] == "test"]
    pet_rows = list(predictor.predict_paths(test))
    accepted = np.mean([r["label"] in ("cat", "dog") for r in pet_rows])
    assert accepted >= 0.85, [(Path(r["path"]).name, r["ood_score"], detector.threshold) for r in pet_rows]

    # reject=False keeps the score but never answers "neither"
    predictor.reject = False
    again = list(predictor.predict_paths(synthetic[:4]))
    assert all(r["label"] in ("cat", "dog") for r in again)
    assert [r["ood_score"] for r in again] == [r["ood_score"] for r in rows[:4]]


def test_fit_uses_the_manifest_named_in_the_card(pets_model, detector):
    assert Path(detector.info["manifest"]) == ModelCard.read(pets_model).manifest_path
    assert detector.info["n_train"] == {"cat": 50, "dog": 50}
    with pytest.raises(ValueError, match="names none"):
        fit_openset(pets_model.with_name("no_card.keras"))


def test_detector_file_round_trips_with_the_model(pets_model, detector, tmp_path):
    loaded = load_for_model(pets_model)
    np.testing.assert_array_equal(loaded.means, detector.means)
    np.testing.assert_array_equal(loaded.precision, detector.precision)
    assert loaded.threshold == detector.threshold and loaded.info == detector.info
    features = np.random.default_rng(0).random((5, detector.means.shape[1]))
    np.testing.assert_array_equal(loaded.score(features), detector.score(features))
    # 99th percentile of the validation scores: at most 1% of validation photos rejected
    assert detector.info["validation_rejection_rate"] <= 0.01 and detector.info["n_validation"] == 40

    # The same detector beside a different model file (another head bias) is refused.
    other = tmp_path / "other.keras"
    model = keras.models.load_model(pets_model, compile=False)
    kernel, bias = model.get_layer("logit").get_weights()
    model.get_layer("logit").set_weights([kernel, bias + 1.0])
    model.save(other)
    detector.save(openset_path(other))
    with pytest.raises(ValueError, match="different model"):
        load_for_model(other)


def test_synthetic_images_are_varied(tmp_path):
    rows = non_pet_images(tmp_path, groups=("synthetic",))
    arrays = {Path(r["path"]).stem: np.asarray(load_image(r["path"], 64)) for r in rows
              if r["source"].startswith("generated")}
    assert len(arrays) >= 20
    assert all(a.shape == (64, 64, 3) and a.dtype == np.uint8 for a in arrays.values())
    assert arrays["text_0"].std() > 0 and arrays["flat_red"].reshape(-1, 3).std(axis=0).max() == 0
    with pytest.raises(ValueError, match="unknown group"):
        non_pet_images(tmp_path, groups=("cartoons",))


def test_openset_report_writes_json_markdown_and_galleries(pets_model, detector, tmp_path):
    try:
        crosscheck_dir()
        read_crosscheck()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    out = tmp_path / "report"
    result = openset_report(pets_model, out_dir=out, max_test=10, max_crosscheck=40, progress=False)
    saved = json.loads((out / "openset.json").read_text())
    assert saved["by_group"] == result["by_group"] and set(result["by_group"]) == {"tune", "report"}
    assert sum(r["n"] for half in result["by_group"].values() for r in half.values()) == 40
    assert result["petimages_test"]["n"] == 10 and result["synthetic_non_photos"]["n"] >= 25
    assert len(result["designs"]) >= 3  # every design on the same images
    chosen = next(d for name, d in result["designs"].items() if name.startswith("chosen"))
    assert chosen["report"]["PetImages test"] == result["petimages_test"]
    for name in result["galleries"]:
        assert (out / name).stat().st_size > 1000
    md = (out / "openset.md").read_text()
    assert "## Targets" in md and "exact 95% CI" in md and "tune = even first byte of sha1" in md
    with pytest.raises(FileExistsError):
        openset_report(pets_model, out_dir=out, max_test=10, max_crosscheck=4, progress=False)
