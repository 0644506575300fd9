"""Tests for catdog.bundle.Bundle: model facts from the card, a card-less model, the "neither" detector
beside the model (fresh or stale), and the shipped model's numbers against Predictor's rows."""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import real_photos

from catdog import paths
from catdog.bundle import Bundle
from catdog.card import ModelCard
from catdog.images import load_batch
from catdog.metrics import sigmoid
from catdog.models import build_model
from catdog.openset import OpenSetDetector, openset_path
from catdog.predict import Predictor

SHIPPED = paths.REPO_ROOT / "models" / paths.SHIPPED_MODEL_NAME
needs_shipped = pytest.mark.skipif(not SHIPPED.is_file(), reason=f"shipped model {SHIPPED} not found")
SIZE = 32


@pytest.fixture(scope="module")
def shipped() -> Bundle:
    return Bundle.load(SHIPPED)


@pytest.fixture(scope="module")
def bare_model(tmp_path_factory) -> Path:
    """A small from-scratch CNN saved without a card (nor a detector)."""
    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("bare") / "bare.keras"
    build_model("simple_cnn", SIZE, weights=None).save(path)
    return path


def _copy(model: Path, folder: Path) -> Path:
    """The model file copied into ``folder`` (same bytes, so a detector fitted on it matches)."""
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / model.name
    copy.write_bytes(model.read_bytes())
    return copy


def _detector(bundle: Bundle, model_sha256: str, threshold: float) -> OpenSetDetector:
    """A detector with random means for ``bundle``'s feature width, tied to ``model_sha256``."""
    dim = int(bundle.model.get_layer("pool").output.shape[-1])
    rng = np.random.default_rng(0)
    return OpenSetDetector(rng.normal(size=(2, dim)).astype(np.float32), np.eye(dim, dtype=np.float32), threshold,
                           {"model_sha256": model_sha256, "model_file": "other.keras"})


def _images(n: int, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (n, size, size, 3)).astype(np.float32)


# ---------------------------------------------------------------- facts
@needs_shipped
def test_shipped_model_facts_come_from_its_card(shipped):
    card = ModelCard.read(SHIPPED)
    assert shipped.path == SHIPPED and shipped.card == card and shipped.requested_engine == "auto"
    assert shipped.temperature == card.temperature and shipped.temperature != 1.0
    assert shipped.threshold == card.threshold
    assert shipped.manifest == (SHIPPED.parent / card.manifest).resolve() and shipped.manifest.is_file()
    assert shipped.require_manifest() == shipped.manifest
    assert shipped.history == card.history_path
    if card.members:  # an ensemble has no training history of its own (its members have)
        assert shipped.history is None and len(card.config["members"]) == len(card.members)
    else:
        assert shipped.history.is_file()
    assert shipped.has_detector
    assert "model" not in vars(shipped)  # the facts above need no Keras weights
    assert shipped.image_size == card.image_size == 288


def test_a_model_without_a_card_is_uncalibrated_with_a_warning(bare_model, caplog):
    with caplog.at_level(logging.WARNING, logger="catdog.bundle"):
        bundle = Bundle.load(bare_model)
    assert "no model card" in caplog.text and "temperature 1" in caplog.text
    assert bundle.card is None and (bundle.temperature, bundle.threshold) == (1.0, 0.5)
    assert bundle.manifest is None and bundle.history is None and bundle.image_size == SIZE
    assert not bundle.has_detector and bundle.detector is None
    with pytest.raises(ValueError, match="names no data manifest"):
        bundle.require_manifest()
    out = bundle.predict(_images(3))
    np.testing.assert_allclose(out["p_dog"], sigmoid(out["logit"]), atol=1e-6)
    assert np.isnan(out["ood_score"]).all() and not out["neither"].any()


def test_missing_model_and_unknown_engine_are_clear_errors(bare_model):
    with pytest.raises(FileNotFoundError, match="model file not found.*catdog train"):
        Bundle.load(bare_model.with_name("missing.keras"))
    with pytest.raises(ValueError, match="unknown engine"):
        Bundle.load(bare_model, engine="onnx")


def test_another_input_size_keeps_card_and_calibration(bare_model, tmp_path):
    model = _copy(bare_model, tmp_path)
    ModelCard(model_file=model.name, backbone="simple_cnn", image_size=SIZE, temperature=2.0, threshold=0.4).save(model)
    bundle = Bundle.load(model)
    bigger = bundle.at_input_size(48)
    assert bigger.image_size == 48 and bundle.image_size == SIZE
    assert (bigger.path, bigger.temperature, bigger.threshold) == (model, 2.0, 0.4)
    np.testing.assert_allclose(bigger.calibrated(np.array([2.0])), sigmoid(np.array([1.0])))
    assert Bundle.load(model, engine="tflite").at_input_size(48).engine == "keras"  # the weights, not the export


# ---------------------------------------------------------------- the "neither" detector
def test_a_stale_detector_is_refused_when_used(bare_model, tmp_path, caplog):
    model = _copy(bare_model, tmp_path)
    bundle = Bundle.load(model)
    _detector(bundle, "0" * 64, threshold=1.0).save(openset_path(model))  # fitted on other bytes
    assert bundle.has_detector
    with pytest.raises(ValueError, match="different model file"):
        bundle.detector  # noqa: B018
    with pytest.raises(ValueError, match="different model file"):
        bundle.predict(_images(2), reject=True)
    with caplog.at_level(logging.WARNING, logger="catdog.bundle"):
        out = bundle.predict(_images(2), reject=False)  # not rejecting: scores left empty, with a warning
    assert np.isnan(out["ood_score"]).all() and not out["neither"].any() and "ood_score left empty" in caplog.text
    with pytest.raises(ValueError, match="different model file"):
        Predictor(bundle, reject=True, progress=False)


def test_a_matching_detector_scores_and_rejects_only_when_asked(bare_model, tmp_path):
    model = _copy(bare_model, tmp_path)
    bundle = Bundle.load(model)
    _detector(bundle, paths.file_sha256(model), threshold=-1.0).save(openset_path(model))  # rejects everything
    images = _images(3)
    rejected, kept = bundle.predict(images, reject=True), bundle.predict(images, reject=False)
    assert np.isfinite(rejected["ood_score"]).all() and rejected["neither"].all()
    np.testing.assert_array_equal(kept["ood_score"], rejected["ood_score"])
    assert not kept["neither"].any()
    np.testing.assert_array_equal(kept["p_dog"], rejected["p_dog"])


# ---------------------------------------------------------------- numbers
@needs_shipped
def test_bundle_predict_matches_predictor_rows_on_real_photos(shipped):
    photos = real_photos("cat", 2, start=30) + real_photos("dog", 2, start=30)
    batch = load_batch(photos, shipped.image_size)
    assert batch.paths == photos  # these photos are readable
    out = shipped.predict(batch.inputs)
    np.testing.assert_allclose(out["p_dog"], sigmoid(out["logit"] / shipped.temperature), atol=1e-12)
    rows = list(Predictor(shipped, reject=True, batch_size=3, progress=False).predict_paths(photos))
    assert [r["path"] for r in rows] == [str(p) for p in photos]
    for k, row in enumerate(rows):
        assert row["p_dog"] == pytest.approx(out["p_dog"][k], abs=1e-6)
        assert row["ood_score"] == pytest.approx(out["ood_score"][k], abs=1e-4)
        dog = out["p_dog"][k] >= shipped.threshold
        assert row["label"] == ("neither" if out["neither"][k] else "dog" if dog else "cat")
    assert [r["label"] for r in rows] == ["cat", "cat", "dog", "dog"]  # the shipped model gets these right
