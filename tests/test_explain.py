"""Tests for catdog.explain: heatmap PNGs for files and folders, calibrated from the model's Bundle."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import real_photos
from PIL import Image

from catdog.bundle import Bundle
from catdog.card import ModelCard
from catdog.explain import explain_paths
from catdog.figures import explained_figure
from catdog.images import load_batch, load_original
from catdog.metrics import apply_temperature
from catdog.models import build_model


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """A small random CNN saved with a card whose temperature is 2."""
    keras.utils.set_random_seed(1)
    path = tmp_path_factory.mktemp("model") / "cnn.keras"
    build_model("simple_cnn", 64, weights=None).save(path)
    ModelCard(model_file=path.name, backbone="simple_cnn", image_size=64, temperature=2.0).save(path)
    return path


@pytest.fixture(scope="module")
def cat_dog() -> list[Path]:
    return load_batch(real_photos("cat", 4), 32, limit=1).paths + load_batch(real_photos("dog", 4), 32, limit=1).paths


def test_explain_paths_skips_corrupt_file_and_writes_panels(model_file, cat_dog, tmp_path):
    folder = tmp_path / "in"
    (folder / "cats").mkdir(parents=True)
    (folder / "dogs").mkdir()
    shutil.copy(cat_dog[0], folder / "cats" / "1.jpg")
    shutil.copy(cat_dog[1], folder / "dogs" / "1.jpg")  # same stem in another folder
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"

    rows = explain_paths(model_file, [folder], out, method="gradcampp", batch_size=2)

    assert [Path(r["path"]).name for r in rows] == ["broken.jpg", "1.jpg", "1.jpg"]  # input order kept
    bad, *good = rows
    assert bad["status"] == "skipped" and bad["error"] and "panel" not in bad
    assert not list(out.glob("broken*"))
    assert len({Path(r["panel"]).name for r in good}) == 2
    bundle = Bundle.load(model_file)
    logits = bundle.explainer.predict_logits(load_batch([r["path"] for r in good], 64).inputs)
    for row, z in zip(good, logits):
        assert row["status"] == "ok" and row["method"] == "gradcampp" and row["explained"] == row["predicted"]
        for kind in ("gray", "heatmap", "overlay", "panel"):
            assert Path(row[kind]).is_file(), row[kind]
        assert load_original(row["overlay"]).shape[:2] == load_original(row["path"]).shape[:2]
        assert row["p_dog"] == pytest.approx(float(apply_temperature(z, 2.0)), abs=1e-6)  # the card's temperature
        assert 0.5 <= row["confidence"] <= 1.0
    figure = explained_figure(rows, tmp_path / "panels.png")
    assert figure is not None and (tmp_path / "panels.png").is_file()


def test_explain_paths_non_utf8_file_name_and_bundle_layer(model_file, cat_dog, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    weird = folder / os.fsdecode(b"caf\xff.jpg")  # not UTF-8 on disk
    shutil.copy(cat_dog[0], weird)
    out = tmp_path / os.fsdecode(b"out_\xe9")

    rows = explain_paths(Bundle.load(model_file), [weird], out, target="dog", layer_name="relu3")

    (row,) = rows
    assert row["status"] == "ok" and row["explained"] == "dog"
    assert sorted(os.listdir(os.fsencode(out))) == [b"caf\xff_" + k + b".png"
                                                    for k in (b"gray", b"heatmap", b"overlay", b"panel")]
    for kind in ("heatmap", "overlay", "panel"):
        with Image.open(row[kind]) as im:
            assert im.format == "PNG"
    with Image.open(row["gray"]) as gray:
        assert np.asarray(gray).shape == load_original(weird).shape[:2]


def test_explain_paths_unknown_method_is_a_clear_error(model_file, cat_dog, tmp_path):
    with pytest.raises(ValueError, match="unknown method"):
        explain_paths(model_file, cat_dog, tmp_path, method="lime")
