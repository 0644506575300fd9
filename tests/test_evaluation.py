"""Tests for catdog.evaluation: report folders, evaluating and comparing saved models (tiny real models)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import keras
import numpy as np
import pytest

from catdog import evaluation as ev
from catdog.bundle import Bundle
from catdog.card import ModelCard
from catdog.data import prepare, read_manifest
from catdog.metrics import apply_temperature
from catdog.models import build_model
from catdog.paths import data_mirror

# --------------------------------------------------------------------------- write_report


def _real_photos(n_per_class: int = 6) -> list[Path]:
    root = data_mirror()
    if root is None or not (root / "Cat").is_dir():
        pytest.skip("shared PetImages not available")
    return [
        p
        for cls in ("Cat", "Dog")
        for p in sorted((root / cls).glob("*.jpg"), key=lambda q: int(q.stem) if q.stem.isdigit() else 0)[:n_per_class]
    ]


def test_write_report(tmp_path):
    photos = _real_photos()
    y = np.array([0] * 6 + [1] * 6)
    logits = np.array([-4.0, -2.5, 3.0, -1.0, 1.5, -6.0, 5.0, 2.0, -3.5, -0.5, 4.0, 7.0])  # 4 wrong
    history = tmp_path / "history.csv"
    history.write_text(
        "epoch,phase,accuracy,loss,val_accuracy,val_loss,learning_rate\n"
        + "".join(
            f"{e},{'head' if e < 3 else 'finetune'},{0.8 + 0.03 * e},{0.5 - 0.05 * e},{0.82 + 0.02 * e},"
            f"{0.45 - 0.03 * e},0.001\n"
            for e in range(6)
        )
    )
    overlay = {str(photos[2]): np.zeros((40, 60, 3), dtype=np.uint8)}
    out = tmp_path / "run"
    result = ev.write_report(
        out, paths=photos, y_true=y, logits=logits, temperature=2.0, history_csv=history,
        overlays=overlay, extra={"model": "test", "split": "test"},
    )
    assert result == out
    for name in ev.REPORT_FILES:
        assert (out / name).stat().st_size > 0, name

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["temperature"] == 2.0 and metrics["model"] == "test"
    assert metrics["calibrated"]["accuracy"] == pytest.approx(8 / 12)
    assert metrics["uncalibrated"]["accuracy"] == pytest.approx(8 / 12)
    assert metrics["calibrated"]["log_loss"] != pytest.approx(metrics["uncalibrated"]["log_loss"])

    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "label", "p_dog", "predicted", "correct", "confidence"]
    assert [r["path"] for r in rows] == [str(p) for p in photos]
    assert [r["label"] for r in rows] == ["cat"] * 6 + ["dog"] * 6
    p_cal = apply_temperature(logits, 2.0)
    np.testing.assert_allclose([float(r["p_dog"]) for r in rows], p_cal, atol=1e-6)
    assert [r["predicted"] for r in rows] == ["dog" if q >= 0.5 else "cat" for q in p_cal]
    assert [r["correct"] for r in rows].count("False") == 4
    np.testing.assert_allclose([float(r["confidence"]) for r in rows], np.maximum(p_cal, 1 - p_cal), atol=1e-6)

    before = (out / "metrics.json").read_bytes()
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        ev.write_report(out, paths=photos, y_true=y, logits=-logits)
    assert (out / "metrics.json").read_bytes() == before


def test_write_report_without_history_and_with_bad_inputs(tmp_path):
    out = tmp_path / "r"
    ev.write_report(out, paths=["missing-1.jpg", "missing-2.jpg"], y_true=[0, 1], logits=[2.0, -2.0])
    assert (out / "misclassified.png").stat().st_size > 0  # unreadable files become placeholders
    assert not (out / "training_curves.png").exists()
    with pytest.raises(ValueError, match="paths"):
        ev.write_report(tmp_path / "r2", paths=["a.jpg"], y_true=[0, 1], logits=[2.0, -2.0])
    with pytest.raises(ValueError, match="extra"):
        ev.write_report(tmp_path / "r3", paths=["a.jpg"], y_true=[0], logits=[2.0], extra={"temperature": 3})


# --------------------------------------------------------------------------- evaluate / compare_models

HISTORY = ("epoch,phase,accuracy,loss,val_accuracy,val_loss,learning_rate\n"
           "0,scratch,0.5,0.7,0.5,0.69,0.001\n1,scratch,0.6,0.65,0.55,0.68,0.001\n")


def _save_untrained(folder: Path, manifest: Path | None, *, temperature: float = 2.0, seed: int = 0) -> Path:
    """An untrained 48 px CNN saved with a card (temperature, manifest and history relative to it)."""
    folder.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)  # two models with other seeds make different mistakes
    path = folder / "model.keras"
    build_model("simple_cnn", 48, weights=None).save(path)
    (folder / "history.csv").write_text(HISTORY)
    ModelCard(model_file=path.name, backbone="simple_cnn", image_size=48, temperature=temperature,
              manifest=os.path.relpath(manifest, folder) if manifest else None, history="history.csv").save(path)
    return path


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory) -> Path:
    root = data_mirror()
    if root is None or not (root / "Cat").is_dir():
        pytest.skip("shared PetImages not available")
    pets = tmp_path_factory.mktemp("pets")
    for cls in ("Cat", "Dog"):
        (pets / cls).mkdir()
        for photo in sorted((root / cls).glob("*.jpg"), key=lambda q: int(q.stem) if q.stem.isdigit() else 0)[:8]:
            (pets / cls / photo.name).symlink_to(photo)
    out = tmp_path_factory.mktemp("data")
    prepare(pets, out, val_fraction=0.25, test_fraction=0.5, seed=0)
    return out / "manifest.csv"


@pytest.fixture(scope="module")
def untrained(tmp_path_factory, tiny_manifest) -> Path:
    return _save_untrained(tmp_path_factory.mktemp("model"), tiny_manifest)


def test_evaluate_takes_every_model_fact_from_the_card(untrained, tiny_manifest, tmp_path, monkeypatch):
    drawn = []
    real_overlays = ev.heatmap_overlays
    monkeypatch.setattr(ev, "heatmap_overlays", lambda explainer, paths: drawn.append(
        real_overlays(explainer, paths)) or drawn[-1])
    out = ev.evaluate(untrained, split="test", out_dir=tmp_path / "r")  # manifest: the card's
    metrics = json.loads((out / "metrics.json").read_text())
    wrong = metrics["calibrated"]["counts"]["fp"] + metrics["calibrated"]["counts"]["fn"]
    assert wrong > 0 and len(drawn) == 1 and len(drawn[0]) == wrong  # a Grad-CAM overlay per mistake
    assert all(o.dtype == np.uint8 and o.ndim == 3 for o in drawn[0].values())
    assert metrics["temperature"] == 2.0 and metrics["image_size"] == 48
    assert Path(metrics["manifest"]).resolve() == tiny_manifest.resolve()
    test_items = read_manifest(tiny_manifest, "test")
    assert metrics["calibrated"]["n_images"] == len(test_items)
    assert "threshold_analysis" in metrics  # thresholds chosen on validation, applied to test
    for name in ev.REPORT_FILES:  # training_curves.png from the card's history
        assert (out / name).stat().st_size > 0, name
    with open(out / "predictions.csv", newline="") as f:
        assert [r["path"] for r in csv.DictReader(f)] == [i.path for i in test_items]
    with pytest.raises(FileExistsError):
        ev.evaluate(untrained, split="test", out_dir=out)


def test_evaluate_accepts_a_bundle_and_another_input_size(untrained, tmp_path):
    out = ev.evaluate(Bundle.load(untrained), split="validation", out_parent=tmp_path, name="at64", heatmaps=False,
                      image_size=64)
    assert out == tmp_path / "at64"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["image_size"] == 64 and metrics["split"] == "validation" and metrics["temperature"] == 2.0
    assert "threshold_analysis" not in metrics  # only for the test split


def test_evaluate_without_a_manifest_says_what_to_pass(tmp_path):
    model = _save_untrained(tmp_path / "bare", None)
    with pytest.raises(ValueError, match="names no data manifest"):
        ev.evaluate(model, out_dir=tmp_path / "r")


def test_compare_models_reports_each_model_and_their_ensemble(untrained, tiny_manifest, tmp_path):
    other = _save_untrained(tmp_path / "other", tiny_manifest, temperature=1.0, seed=1)
    out = ev.compare_models([untrained, Bundle.load(other)], splits=["test"], out_dir=tmp_path / "c")
    report = json.loads((out / "comparison.json").read_text())
    assert [r["model"] for r in report["rows"]] == [str(untrained), str(other), "ensemble of 2 (mean calibrated logit)"]
    first = report["rows"][0]
    assert first["vs_first"]["only_a_correct"] == first["vs_first"]["only_b_correct"] == 0  # itself
    n_test = len(read_manifest(tiny_manifest, "test"))
    assert all(0 <= r["errors"] <= n_test for r in report["rows"])
    assert (out / "wrong_by_all_test.png").stat().st_size > 0
    assert "| model | split |" in (out / "comparison.md").read_text()
    with pytest.raises(FileExistsError, match="already holds a comparison"):
        ev.compare_models([untrained], splits=["test"], out_dir=out)
