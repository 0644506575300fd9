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
from catdog.openset import PET_BRANCH, OpenSetDetector, load_for_model, openset_path
from catdog.predict import MIN_SIDE, Predictor

SHIPPED = paths.default_model_path()
needs_shipped = pytest.mark.skipif(not SHIPPED.exists(), reason="shipped model not present")
PET_SOURCES_PER_TEST = 2  # real pet photos per crosscheck source


def _crosscheck() -> list[dict[str, str]]:
    try:
        return read_crosscheck()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def _detector(sha: str, branch=PET_BRANCH) -> OpenSetDetector:
    rng = np.random.default_rng(0)
    det = OpenSetDetector.fit(rng.normal(size=(40, 8)), np.repeat([0, 1], 20), {"model_sha256": sha})
    det.threshold = 3.0
    return det.with_rule(branch, 0.1, 0.5)


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


def test_detector_round_trip_keeps_the_rule_and_refuses_another_model(tmp_path):
    model = tmp_path / "m.keras"
    model.write_bytes(b"model bytes")
    path = openset_path(model)
    _detector(paths.file_sha256(model)).save(path)
    loaded = load_for_model(model)
    assert loaded.branch == PET_BRANCH and (loaded.pet_low, loaded.pet_high) == (0.1, 0.5)
    assert loaded.threshold == 3.0 and "pet_prob < 0.1" in loaded.info["rule"]
    other = tmp_path / "other.keras"
    other.write_bytes(b"other bytes")
    path.replace(openset_path(other))
    with pytest.raises(ValueError, match="different model file"):
        load_for_model(other)


# ---------------------------------------------------------------- the frozen ImageNet branch
def test_pet_branch_runs_in_the_same_pass_and_tells_pets_from_non_photos():
    runner = KerasRunner(build_model("simple_cnn", 96, weights=None), branch=PET_BRANCH)
    photos = load_batch(real_photos("cat", 3, start=40) + real_photos("dog", 3, start=40), 96).inputs
    flat = np.stack([np.full((96, 96, 3), c, np.uint8) for c in (0, 128, 255)])
    noise = np.random.default_rng(0).integers(0, 256, (3, 96, 96, 3), dtype=np.uint8)
    out = runner.predict(np.concatenate([photos, flat, noise]))
    assert set(out) == {"logit", "features", "pet_prob"} and out["pet_prob"].shape == (12,)
    assert np.all((out["pet_prob"] >= 0) & (out["pet_prob"] <= 1 + 1e-6))
    assert out["pet_prob"][:6].min() > 0.5  # real cats and dogs
    # flat colours and noise: low (0.06-0.12 measured, the softmax spreads over 1000 classes), so
    # the rule's distance term, not pet_prob < PET_LOW alone, is what rejects them
    assert out["pet_prob"][6:].max() < 0.3


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
def test_shipped_detector_uses_the_pet_branch():
    detector = load_for_model(SHIPPED)
    assert detector.branch == PET_BRANCH and 0 < detector.pet_low < detector.pet_high <= 1


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
    assert load_for_model(model).branch == PET_BRANCH  # catdog train stores the rule with the detector
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
    assert np.isfinite(out["pet_prob"]).all() and out["pet_prob"][0] < 0.3
    assert out["neither"][0] == bundle.detector.decide(out["ood_score"], out["pet_prob"])[0]
    assert rows[0]["label"] == ("neither" if out["neither"][0] else rows[0]["label"])
    assert json.loads((tmp_path / "run" / "train_config.json").read_text())["openset_images"] == 8
