"""Tests for catdog.predict: file walking, calibrated rows, unreadable files, CSV output and resume."""

from __future__ import annotations

import csv
import inspect
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import need_imagenet_weights, real_photos

from catdog.card import ModelCard
from catdog.images import load_image
from catdog.metrics import sigmoid
from catdog.models import build_model, logit_model
from catdog.predict import COLUMNS, Predictor, count_image_files, iter_image_files, predict_to_csv

SIZE = 96
TEMPERATURE = 2.5


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> tuple[Path, keras.Model]:
    """A MobileNetV2 (ImageNet, random head) saved with a card (temperature 2.5, threshold 0.5), and itself."""
    need_imagenet_weights()  # else Keras would try to download them
    keras.utils.set_random_seed(0)
    model = build_model("mobilenet_v2", SIZE, weights="imagenet")
    path = tmp_path_factory.mktemp("model") / "pets.keras"
    model.save(path)
    ModelCard(model_file=path.name, backbone="mobilenet_v2", image_size=SIZE, temperature=TEMPERATURE).save(path)
    return path, model


@pytest.fixture(scope="module")
def model_path(saved_model) -> Path:
    return saved_model[0]


@pytest.fixture(scope="module")
def predictor(model_path) -> Predictor:
    return Predictor(model_path, reject=False, batch_size=4, progress=False)


@pytest.fixture
def photo_folder(tmp_path) -> Path:
    """pets/cats/{3 photos}, pets/dogs/{3 photos} plus a non-image file and a hidden file."""
    root = tmp_path / "pets"
    for label in ("cat", "dog"):
        (root / f"{label}s").mkdir(parents=True)
        for p in real_photos(label, 3, start=10):
            shutil.copy(p, root / f"{label}s" / p.name)
    (root / "notes.txt").write_text("not an image")
    (root / "cats" / ".hidden.jpg").write_bytes(b"junk")
    return root


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- finding files
def test_iter_image_files_walks_sorted_recursive_and_lazily(photo_folder):
    files = iter_image_files(photo_folder)
    assert inspect.isgenerator(files)
    found = list(files)
    assert len(found) == 6 and all(p.suffix == ".jpg" and not p.name.startswith(".") for p in found)
    assert [p.parent.name for p in found] == ["cats"] * 3 + ["dogs"] * 3
    assert found[:3] == sorted(found[:3], key=lambda p: p.name)
    single = found[0]
    assert list(iter_image_files([single, photo_folder / "dogs"])) == [single] + found[3:]
    assert count_image_files(photo_folder) == 6


def test_missing_path_and_empty_folder_give_clear_errors(tmp_path, photo_folder):
    missing = tmp_path / "nope" / "x.jpg"
    with pytest.raises(FileNotFoundError, match="nope"):
        iter_image_files([photo_folder, missing])  # checked up front, before anything is predicted
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match=r"no image files in .*empty"):
        iter_image_files(empty)
    with pytest.raises(FileNotFoundError, match="nope"):
        predict_to_csv([missing], tmp_path / "out.csv", reject=False)
    assert not (tmp_path / "out.csv").exists()


# ---------------------------------------------------------------- rows
def test_confidence_is_calibrated_with_the_card_temperature(saved_model, predictor, photo_folder):
    files = list(iter_image_files(photo_folder))
    rows = list(predictor.predict_paths(files))
    images = np.stack([load_image(p, SIZE) for p in files]).astype("float32")
    logits = logit_model(saved_model[1]).predict(images, verbose=0).reshape(-1)
    p_dog = np.array([r["p_dog"] for r in rows])
    assert predictor.temperature == TEMPERATURE
    np.testing.assert_allclose(p_dog, sigmoid(logits / TEMPERATURE), atol=2e-6)
    assert not np.allclose(p_dog, sigmoid(logits), atol=1e-3)  # T = 2.5 really changed the numbers
    for r in rows:
        assert set(r) == set(COLUMNS) and r["error"] == ""
        assert r["label"] == ("dog" if r["p_dog"] >= 0.5 else "cat")
        assert r["confidence"] == pytest.approx(max(r["p_dog"], r["p_cat"]), abs=1e-6)
        assert r["p_cat"] + r["p_dog"] == pytest.approx(1.0, abs=1e-6)
        assert r["uncertain"] == (abs(r["p_dog"] - 0.5) <= 0.1)
        assert r["ood_score"] is None  # no detector beside this model


def test_unreadable_files_become_error_rows_and_the_rest_is_predicted(predictor, photo_folder):
    (photo_folder / "cats" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 300)
    (photo_folder / "dogs" / "empty.png").write_bytes(b"")
    rows = {f"{Path(r['path']).parent.name}/{Path(r['path']).name}": r for r in predictor.predict_paths(photo_folder)}
    assert len(rows) == 8
    broken = rows["cats/broken.jpg"]
    assert broken["label"] == "error" and ("decode" in broken["error"] or "not an image" in broken["error"])
    assert broken["p_dog"] is None and broken["confidence"] is None
    assert rows["dogs/empty.png"]["label"] == "error" and "empty file" in rows["dogs/empty.png"]["error"]
    good = [r for n, r in rows.items() if n not in ("cats/broken.jpg", "dogs/empty.png")]
    assert all(r["label"] in ("cat", "dog") and r["error"] == "" for r in good)


def test_reject_without_detector_is_a_clear_error(model_path):
    with pytest.raises(FileNotFoundError, match="fit_openset") as caught:
        Predictor(model_path, reject=True, progress=False)
    assert "catdog train" in str(caught.value) and "--no-reject" in str(caught.value)


def test_model_facts_come_from_the_bundle(model_path, predictor):
    assert predictor.model_path == model_path and predictor.bundle.path == model_path
    assert (predictor.temperature, predictor.threshold, predictor.image_size) == (TEMPERATURE, 0.5, SIZE)
    shared = Predictor(predictor.bundle, reject=False, progress=False)  # a loaded Bundle is used as is
    assert shared.bundle is predictor.bundle and shared.temperature == TEMPERATURE
    with pytest.raises(ValueError, match="unknown engine"):
        Predictor(model_path, engine="onnx", reject=False, progress=False)
    with pytest.raises(FileNotFoundError, match="model file not found"):
        Predictor(model_path.with_name("missing.keras"), reject=False, progress=False)


# ---------------------------------------------------------------- CSV + resume
class CountingPredictor(Predictor):
    """Counts the images that reach the model."""

    seen = 0

    def predict_arrays(self, images):
        CountingPredictor.seen += len(images)
        return super().predict_arrays(images)


def test_predict_to_csv_refuses_to_overwrite_and_resume_skips_finished_rows(model_path, photo_folder, tmp_path):
    counting = CountingPredictor(model_path, reject=False, batch_size=4, progress=False)
    out = tmp_path / "preds" / "out.csv"
    predict_to_csv(photo_folder, out, predictor=counting)
    first = _read_csv(out)
    assert len(first) == 6 and CountingPredictor.seen == 6 and tuple(first[0]) == COLUMNS
    assert all(Path(r["path"]).is_absolute() for r in first)

    before = out.read_bytes()
    with pytest.raises(FileExistsError, match="resume"):
        predict_to_csv(photo_folder, out, predictor=counting)
    assert out.read_bytes() == before

    # Simulate an interrupted run: two rows missing and a half-written line at the end.
    lines = before.decode().splitlines(keepends=True)
    out.write_text("".join(lines[:-2]) + lines[-2][:15])
    CountingPredictor.seen = 0
    predict_to_csv(photo_folder, out, resume=True, predictor=counting)
    resumed = _read_csv(out)
    assert CountingPredictor.seen == 2
    assert [r["path"] for r in resumed] == [r["path"] for r in first]
    assert [r["p_dog"] for r in resumed] == [r["p_dog"] for r in first]

    CountingPredictor.seen = 0
    predict_to_csv(photo_folder, out, resume=True, predictor=counting)  # nothing left: no model calls
    assert CountingPredictor.seen == 0 and len(_read_csv(out)) == 6


def test_predict_to_csv_rejects_a_foreign_csv_on_resume(photo_folder, tmp_path):
    out = tmp_path / "other.csv"
    out.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a catdog predictions CSV"):
        predict_to_csv(photo_folder, out, resume=True, reject=False)
