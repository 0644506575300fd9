"""The "neither" decision that generalises: frozen ImageNet pet probability + feature distance,
the crosscheck split, the ``too small`` flag, and a CLI-trained model predicting with rejection on."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import real_photos
from PIL import Image

from catdog import paths
from catdog.benchmarks import crosscheck_dir, crosscheck_half, read_crosscheck
from catdog.bundle import Bundle
from catdog.cli import main
from catdog.images import load_batch
from catdog.inference import KerasRunner
from catdog.models import build_model
from catdog.openset import (LOGISTIC, PET_BRANCH, PET_HIGH, PET_LOW, QUANTILE, WILD_RATIO, OpenSetDetector,
                            fit_logistic, load_for_model, openset_path, rule_signals)
from catdog.predict import MIN_SIDE, Predictor

SHIPPED = paths.default_model_path()
needs_shipped = pytest.mark.skipif(not SHIPPED.exists(), reason="shipped model not present")
PET_SOURCES_PER_TEST = 2  # real pet photos per crosscheck source


def _crosscheck() -> list[dict[str, str]]:
    try:
        return read_crosscheck()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def _detector(sha: str, branch=PET_BRANCH, wild_ratio=None) -> OpenSetDetector:
    rng = np.random.default_rng(0)
    det = OpenSetDetector.fit(rng.normal(size=(40, 8)), np.repeat([0, 1], 20), {"model_sha256": sha})
    det.threshold = 3.0
    return det.with_rule(branch, 0.1, 0.5, wild_ratio)


# ---------------------------------------------------------------- the split and the rule
def test_crosscheck_split_depends_on_the_file_name_only(tmp_path):
    name = "pets/dog/oxford_beagle_12.jpg"
    assert crosscheck_half(name) == crosscheck_half(tmp_path / name, root=tmp_path)  # where the folder is: no matter
    halves = [crosscheck_half(f"other/x/{k}.jpg") for k in range(400)]
    assert set(halves) == {"tune", "report"} and 150 < halves.count("tune") < 250  # about half each


def test_rule_keeps_clear_pets_rejects_clear_non_pets_and_lets_distance_decide_between():
    det = _detector("x")
    distance = np.array([100.0, 0.0, 100.0, 0.0, 100.0])
    pet = np.array([0.9, 0.05, 0.3, 0.3, 0.5])
    np.testing.assert_array_equal(det.decide(distance, pet), [False, True, True, False, False])
    with pytest.raises(ValueError, match="needs pet_prob"):
        det.decide(distance)
    legacy = _detector("x", branch=None)  # a detector file from before the pet branch: distance alone
    np.testing.assert_array_equal(legacy.decide(distance), distance > 3.0)


def test_wild_rule_rejects_what_looks_more_like_a_wild_relative_than_a_pet():
    det = _detector("x", wild_ratio=2.0)
    distance = np.zeros(4)  # near PetImages: only the wild rule can reject these
    pet = np.array([0.3, 0.3, 0.9, 0.2])
    wild = np.array([0.61, 0.59, 0.1, 0.0])
    np.testing.assert_array_equal(det.decide(distance, pet, wild), [True, False, False, False])
    np.testing.assert_array_equal(_detector("x").decide(distance, pet, wild), [False] * 4)  # no wild rule
    with pytest.raises(ValueError, match="needs wild_prob"):
        det.decide(distance, pet)
    assert "wild_prob > 2 x pet_prob" in det.rule_text()


def test_the_logistic_rule_decides_on_the_distance_in_the_models_own_units(tmp_path):
    det = _detector("x", wild_ratio=2.0)
    det.info["validation_score_median"] = 1.0  # z = (distance - 1) / (3 - 1)
    np.testing.assert_allclose(det.relative_distance([1.0, 3.0, 5.0]), [0.0, 1.0, 2.0])
    weights, bias = (2.0, -1.0, 1.0), -1.0
    det.with_rule(PET_BRANCH, 0.1, 0.5, 2.0, logistic=(weights, bias))
    assert det.needs_wild and "+2 x z -1 x logit(pet_prob) +1 x log(wild_prob / pet_prob) -1 > 0" in det.rule_text()
    distance = np.array([1.0, 11.0, 1.0, 1.5])
    pet = np.array([0.9, 0.9, 0.2, 0.5])
    wild = np.array([0.01, 0.01, 0.6, 0.5])
    expected = rule_signals((distance - 1) / 2, pet, wild) @ np.array(weights) + bias > 0
    # by hand: z 0, a sure pet: -7.7 -> kept; z 5: +2.3 -> rejected; 3x more wild than pet: +1.5 -> rejected;
    # z 0.25, pet_prob = wild_prob = 0.5: -0.5 -> kept
    np.testing.assert_array_equal(expected, [False, True, True, False])
    np.testing.assert_array_equal(det.decide(distance, pet, wild), expected)
    # the threshold rule would decide the third photo the other way (pet_prob 0.2 is above pet_low, z is low)
    assert not _detector("x").decide(distance, pet, wild)[2]
    with pytest.raises(ValueError, match="needs wild_prob"):
        det.decide(distance, pet)
    model = tmp_path / "m.keras"
    model.write_bytes(b"model bytes")
    det.info["model_sha256"] = paths.file_sha256(model)
    det.save(openset_path(model))
    loaded = load_for_model(model)
    assert loaded.logistic == (weights, bias)
    np.testing.assert_array_equal(loaded.decide(distance, pet, wild), expected)
    with pytest.raises(ValueError, match="3 values"):
        det.with_rule(PET_BRANCH, logistic=((1.0, 2.0), 0.0))
    det.info["validation_score_median"] = det.threshold  # identical calibration photos: z is undefined
    with pytest.raises(ValueError, match="threshold above the median"):
        det.with_rule(PET_BRANCH, logistic=(weights, bias))
    del det.info["validation_score_median"]  # never calibrated
    with pytest.raises(ValueError, match="calibrated"):
        det.with_rule(PET_BRANCH, logistic=(weights, bias))


def test_fit_logistic_keeps_both_limits_on_the_photos_it_was_fitted_on():
    rng = np.random.default_rng(2)
    pets = np.column_stack([rng.normal(0, 1, 300), rng.normal(3, 1, 300), rng.normal(-4, 1, 300)])
    petimages = np.column_stack([rng.normal(0, 0.5, 2000), rng.normal(4, 1, 2000), rng.normal(-5, 1, 2000)])
    non_pets = np.column_stack([rng.normal(3, 1, 400), rng.normal(-2, 1, 400), rng.normal(0, 1, 400)])
    weights, bias = fit_logistic(pets, non_pets, petimages)
    rejected = {name: rows @ np.array(weights) + bias > 0
                for name, rows in (("pets", pets), ("petimages", petimages), ("non_pets", non_pets))}
    assert 0 < rejected["pets"].mean() <= 0.02 and rejected["petimages"].mean() <= 0.01
    assert rejected["non_pets"].mean() > 0.95
    assert weights[0] > 0 and weights[1] < 0  # farther: more "neither"; more pet-like: less


def test_cross_validation_decides_every_tune_photo_once_by_each_design():
    from catdog.benchmarks import cross_validate_designs
    rng = np.random.default_rng(3)
    kinds = np.array(["pet photo"] * 200 + ["near miss"] * 100 + ["non-pet photo"] * 100 + ["pet drawing"] * 30)
    pet = np.r_[rng.uniform(0.6, 1, 200), rng.uniform(0.1, 0.4, 100), rng.uniform(0, 0.3, 100), rng.uniform(0, 1, 30)]
    wild = np.r_[rng.uniform(0, 0.1, 200), pet[200:300] * 2.5, rng.uniform(0, 0.05, 100), rng.uniform(0, 0.1, 30)]
    distance = np.r_[rng.uniform(0, 1, 300), rng.uniform(2, 3, 100), rng.uniform(0, 3, 30)]
    tune = {"pet": pet, "wild": wild, "distance": distance, "z": distance}
    val_distance = rng.uniform(0, 1, 1000)
    petimages = {"pet": rng.uniform(0.6, 1, 1000), "wild": rng.uniform(0, 0.1, 1000), "distance": val_distance,
                 "z": val_distance}
    out = cross_validate_designs(tune, kinds, petimages, folds=5, seed=0)
    assert set(out) == {"grid", "logistic"}
    for rejected in out.values():
        assert rejected.dtype == bool and rejected.shape == kinds.shape
        assert rejected[kinds == "pet photo"].mean() <= 0.05 and rejected[kinds == "non-pet photo"].mean() > 0.9
    again = cross_validate_designs(tune, kinds, petimages, folds=5, seed=0)
    assert all((again[name] == out[name]).all() for name in out)


def test_detector_round_trip_keeps_the_rule_and_refuses_another_model(tmp_path):
    model = tmp_path / "m.keras"
    model.write_bytes(b"model bytes")
    path = openset_path(model)
    saved = _detector(paths.file_sha256(model), wild_ratio=4.0)
    saved.save(path)
    with np.load(path) as data:  # a symmetric matrix: only its upper triangle is stored
        assert "precision" not in data.files and data["precision_upper"].size == 8 * 9 // 2
    loaded = load_for_model(model)
    np.testing.assert_array_equal(loaded.precision, saved.precision)
    assert loaded.branch == PET_BRANCH and (loaded.pet_low, loaded.pet_high, loaded.wild_ratio) == (0.1, 0.5, 4.0)
    assert loaded.threshold == 3.0 and "pet_prob < 0.1" in loaded.info["rule"]
    other = tmp_path / "other.keras"
    other.write_bytes(b"other bytes")
    path.replace(openset_path(other))
    with pytest.raises(ValueError, match="different model file"):
        load_for_model(other)


# ---------------------------------------------------------------- the frozen ImageNet branch
def test_pet_branch_runs_in_the_same_pass_and_tells_pets_from_non_photos():
    size = 180  # the photos' own size: the branch sees them as prediction would, not blurred by a round trip
    runner = KerasRunner(build_model("simple_cnn", size, weights=None), branch=PET_BRANCH)
    photos = load_batch(real_photos("cat", 3, start=40) + real_photos("dog", 3, start=40), size).inputs
    flat = np.stack([np.full((size, size, 3), c, np.uint8) for c in (0, 128, 255)])
    noise = np.random.default_rng(0).integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    out = runner.predict(np.concatenate([photos, flat, noise]))
    assert set(out) == {"logit", "features", "pet_prob", "wild_prob"} and out["wild_prob"].shape == (12,)
    assert np.all((out["pet_prob"] >= 0) & (out["pet_prob"] + out["wild_prob"] <= 1 + 1e-6))  # disjoint classes
    # real cats and dogs: far more pet-like than flat colours and noise (0.40-0.77 measured with Lite1 at 240 px,
    # which spreads its softmax more than Lite0), and wild relatives far behind
    assert out["pet_prob"][:6].min() > 3 * out["pet_prob"][6:].max()
    assert np.all(out["wild_prob"][:6] < out["pet_prob"][:6] / 1.5)
    # flat colours and noise: low (0.06-0.12 measured, the softmax spreads over 1000 classes), so
    # the rule's distance term, not pet_prob < PET_LOW alone, is what rejects them
    assert out["pet_prob"][6:].max() < 0.3


def test_branch_features_are_the_frozen_imagenet_networks_pooled_features():
    """The design search's second distance is measured on the branch's own features: its pooled layer, not the
    logits or the unpooled map, at the branch's size, with the same pet_prob as prediction computes."""
    import keras

    from catdog.benchmarks.neither_design import _branch_signals
    from catdog.conventions import FEATURES_LAYER
    from catdog.efficientnet_lite import imagenet_classifier
    model = build_model("simple_cnn", 96, weights=None)
    photos = load_batch(real_photos("cat", 2, start=50) + real_photos("dog", 2, start=50), 96).inputs
    signals_of = _branch_signals(model, PET_BRANCH, batch_size=3)
    signals = signals_of(photos)
    lite = imagenet_classifier(*PET_BRANCH)
    resized = keras.ops.image.resize(photos.astype("float32"), PET_BRANCH[1:] * 2, interpolation="bilinear")
    pooled = keras.Model(lite.inputs, lite.get_layer(FEATURES_LAYER).output).predict(resized, verbose=0)
    assert signals["features"].shape == (4, pooled.shape[1])
    np.testing.assert_allclose(signals["features"], pooled, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(signals["pet"], KerasRunner(model, branch=PET_BRANCH).predict(photos)["pet_prob"],
                               atol=1e-5)
    np.testing.assert_allclose(signals_of(photos[:2])["features"], signals["features"][:2], atol=1e-5)  # built once, reused


# ---------------------------------------------------------------- photos too small to judge
def test_photos_under_the_minimum_size_are_flagged_not_guessed(tmp_path):
    model = tmp_path / "tiny.keras"
    build_model("simple_cnn", 48, weights=None).save(model)
    sizes = {"tiny.png": (32, 32), "thin.png": (200, MIN_SIDE - 1), "ok.png": (MIN_SIDE, MIN_SIDE)}
    for name, size in sizes.items():
        Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8)).save(tmp_path / name)
    rows = {r["path"].split("/")[-1]: r for r in
            Predictor(model, reject=False, progress=False).predict_paths([tmp_path / n for n in sizes])}
    for name in ("tiny.png", "thin.png"):
        w, h = sizes[name]
        assert rows[name]["label"] == "too small"
        assert rows[name]["error"] == f"too small: {w}x{h} px, catdog needs at least {MIN_SIDE} px on the short side"
        assert rows[name]["confidence"] is None and rows[name]["p_cat"] is None and rows[name]["p_dog"] is None
    assert rows["ok.png"]["label"] in ("cat", "dog") and rows["ok.png"]["error"] == ""


# ---------------------------------------------------------------- the shipped model on real crosscheck photos
@needs_shipped
def test_shipped_detector_uses_the_pet_branch_and_the_chosen_rule():
    detector = load_for_model(SHIPPED)
    assert detector.branch == PET_BRANCH and 0 <= detector.pet_low < detector.pet_high <= 1
    assert (detector.pet_low, detector.pet_high, detector.wild_ratio) == (PET_LOW, PET_HIGH, WILD_RATIO)
    assert detector.info["quantile"] == QUANTILE
    assert detector.logistic == LOGISTIC and detector.info["rule"] == detector.rule_text()


@needs_shipped
def test_shipped_model_keeps_real_pets_from_every_source_and_rejects_real_non_pets():
    rows = [r for r in _crosscheck() if r["half"] == "tune"]  # fixed picks: the first files of the tune half
    pets = {}
    for r in rows:
        if r["kind"] == "pet photo" and len(pets.setdefault(r["source"], [])) < PET_SOURCES_PER_TEST:
            pets[r["source"]].append(r["path"])
    non_pets = [r["path"] for g in ("other/near_miss", "other/everyday", "other/objects", "other/animals")
                for r in [x for x in rows if x["group"] == g][:3]]
    pet_paths = [p for group in pets.values() for p in group]
    bundle = Bundle.load(SHIPPED)
    batch = load_batch(pet_paths + non_pets, bundle.image_size)
    assert len(batch.paths) == len(pet_paths) + len(non_pets)
    neither = bundle.predict(batch.inputs, reject=True)["neither"]
    kept = {p: not n for p, n in zip(pet_paths, neither[:len(pet_paths)])}
    assert all(kept.values()), [p for p, k in kept.items() if not k]
    rejected = neither[len(pet_paths):]
    assert rejected.sum() >= len(non_pets) - 1, [p for p, r in zip(non_pets, rejected) if not r]


def test_crosscheck_folder_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CATDOG_CROSSCHECK", str(tmp_path))
    assert crosscheck_dir() == tmp_path
    with pytest.raises(FileNotFoundError, match="files.tsv not found"):
        read_crosscheck()


# ---------------------------------------------------------------- a model trained by the CLI
def test_cli_trained_model_predicts_with_rejection_on(class_folders, tmp_path, capsys):
    assert main(["data", "prepare", str(class_folders), "--out", str(tmp_path / "data"), "--seed", "1"]) == 0
    assert main(["train", "--manifest", str(tmp_path / "data" / "manifest.csv"), "--backbone", "simple_cnn",
                 "--image-size", "48", "--batch-size", "8", "--head-epochs", "1", "--weights", "none",
                 "--run-dir", str(tmp_path / "run"), "--openset-images", "8"]) == 0
    model = tmp_path / "run" / "model.keras"
    stored = load_for_model(model)  # catdog train stores the rule with the detector
    assert stored.branch == PET_BRANCH and stored.logistic == LOGISTIC
    flat = tmp_path / "in" / "flat.png"
    flat.parent.mkdir()
    Image.fromarray(np.full((96, 96, 3), 200, np.uint8)).save(flat)
    capsys.readouterr()
    out = tmp_path / "pred.csv"
    assert main(["predict", str(flat.parent), "--model", str(model), "--out", str(out)]) == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["label"] in ("cat", "dog", "neither") and rows[0]["ood_score"] != ""
    bundle = Bundle.load(model)  # the same bundle computes pet_prob in its rejecting pass
    out = bundle.predict(load_batch([flat], bundle.image_size).inputs, reject=True)
    assert np.isfinite(out["pet_prob"]).all() and out["pet_prob"][0] < 0.3 and np.isfinite(out["wild_prob"]).all()
    assert out["neither"][0] == bundle.detector.decide(out["ood_score"], out["pet_prob"], out["wild_prob"])[0]
    assert rows[0]["label"] == ("neither" if out["neither"][0] else rows[0]["label"])
    assert json.loads((tmp_path / "run" / "train_config.json").read_text())["openset_images"] == 8


# ---------------------------------------------------------------- choosing the rule on the tune half
def test_rule_search_keeps_both_limits_and_prefers_the_rule_that_rejects_more():
    from catdog.benchmarks.neither_design import DESIGN_LIMITS, _search_rules
    rng = np.random.default_rng(1)
    kinds = np.array(["pet photo"] * 200 + ["near miss"] * 100 + ["non-pet photo"] * 100)
    # pets: high pet_prob; near misses: pet-like distance, middling pet_prob, more wild than pet; others: far
    pet = np.r_[rng.uniform(0.6, 1, 200), rng.uniform(0.1, 0.4, 100), rng.uniform(0, 0.3, 100)]
    wild = np.r_[rng.uniform(0, 0.1, 200), pet[200:300] * 2.5, rng.uniform(0, 0.05, 100)]
    tune = {"pet": pet, "wild": wild, "distance": np.r_[rng.uniform(0, 1, 300), rng.uniform(2, 3, 100)]}
    val_pet = np.r_[rng.uniform(0.6, 1, 985), np.full(15, 0.004)]  # 1.5% of validation pets look unlike pets
    val = {"pet": val_pet, "wild": np.zeros(1000), "distance": rng.uniform(0, 1, 1000)}
    rules = _search_rules(tune, val, kinds)
    assert rules and all(r["rates"]["pet photo"] <= DESIGN_LIMITS["pet photo"] for r in rules)
    assert all(r["rates"]["PetImages validation"] <= DESIGN_LIMITS["PetImages validation"] for r in rules)
    assert all(r["pet_low"] <= 0.003 for r in rules)  # a higher pet_low would reject 1.5% of validation
    best = rules[0]
    assert best["wild_ratio"] is not None and best["rates"]["near miss"] == 1.0  # only the wild rule gets them
    assert [r["score"] for r in rules] == sorted((r["score"] for r in rules), reverse=True)


@needs_shipped
def test_crosscheck_accuracy_scores_the_classifier_alone_per_kind_and_source(tmp_path):
    """A small crosscheck-shaped folder: right and wrong labels, another half, an unreadable file and a non-pet."""
    from catdog.benchmarks import crosscheck_accuracy
    cats, dogs = real_photos("cat", 3, start=60), real_photos("dog", 3, start=60)

    def name(group: str, half: str, k: int) -> str:  # the k-th file name of a group that falls in ``half``
        names = (f"{group}/src_{n}.jpg" for n in range(1000))
        return [n for n in names if crosscheck_half(n) == half][k]

    files = [(name("pets/cat", "report", k), "cat", "a", p) for k, p in enumerate(cats[:2])]
    files += [(name("pets/dog", "report", 0), "dog", "b", dogs[0]),
              (name("pets/dog", "report", 1), "dog", "b", cats[2]),    # a cat filed as a dog: the model must be wrong
              (name("pets/dog", "tune", 0), "dog", "b", cats[2]),      # the other half: not counted
              (name("pets_art/dog", "report", 0), "dog", "c", dogs[1]),
              (name("other/near_miss", "report", 0), "other", "d", dogs[2]),
              (name("pets/dog", "report", 2), "dog", "b", None)]       # unreadable
    with open(tmp_path / "files.tsv", "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(["file", "group", "label", "source_repo"])
        for file, label, source, photo in files:
            (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / file).write_bytes(photo.read_bytes() if photo else b"not a jpeg")
            writer.writerow([file, file.split("/")[0], label, source])

    result = crosscheck_accuracy(SHIPPED, tmp_path / "out", crosscheck=tmp_path, progress=False)
    photos = result["by_kind"]["pet photo"]
    assert (photos["n"], photos["correct"], result["unreadable"]) == (4, 3, 1)
    assert result["by_source"]["pet photo, a"]["correct"] == 2 and result["by_source"]["pet photo, b"]["n"] == 2
    assert result["by_kind"]["pet drawing"] == {**result["by_kind"]["pet drawing"], "n": 1, "correct": 1}
    assert [w["file"] for w in result["wrong_pet_photos"]] == [files[3][0]] and not result["target"]["met"]
    assert "**not met**" in (tmp_path / "out" / "crosscheck_accuracy.md").read_text()
