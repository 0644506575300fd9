"""Tests for catdog.export (TFLite), catdog.tflite.TFLiteRunner and catdog.benchmarks.inference_benchmark."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import need_imagenet_weights, real_photos

from catdog.benchmarks import cost_comparison, inference_benchmark
from catdog.card import ModelCard
from catdog.data import Item
from catdog.export import export_tflite, representative_images
from catdog.images import load_image
from catdog.models import build_model, logit_model
from catdog.predict import Predictor
from catdog.tflite import TFLiteRunner, check_export, export_info_path, tflite_path

SIZE = 96


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path, keras.Model]:
    """A MobileNetV2 (ImageNet, random head) saved with a card, its float32 TFLite export, and itself."""
    need_imagenet_weights()  # else Keras would try to download them
    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("export") / "pets.keras"
    model = build_model("mobilenet_v2", SIZE, weights="imagenet")
    model.save(path)
    ModelCard(model_file=path.name, backbone="mobilenet_v2", image_size=SIZE, temperature=1.7).save(path)
    files = export_tflite(path, variants=("float32",))
    return path, files["float32"], model


@pytest.fixture(scope="module")
def photos() -> list[Path]:
    return real_photos("cat", 4, start=20) + real_photos("dog", 4, start=20)


def test_float32_tflite_logits_match_keras_on_real_images(exported, photos):
    model_path, tflite_file, model = exported
    assert tflite_file == tflite_path(model_path, "float32") and tflite_file.name == "pets.float32.tflite"
    info = json.loads(export_info_path(model_path).read_text())
    assert info["files"]["float32"]["bytes"] == tflite_file.stat().st_size and len(info["model_sha256"]) == 64

    images = np.stack([load_image(p, SIZE) for p in photos]).astype("float32")
    expected = logit_model(model).predict(images, verbose=0).reshape(-1)
    runner = TFLiteRunner(tflite_file)
    assert runner.image_size == SIZE
    for batch in (images, images[:1], images[:5]):  # the runner resizes its input for each batch size
        np.testing.assert_allclose(runner.predict(batch)["logit"], expected[:len(batch)], atol=1e-3)
    whole = runner.predict(images)
    assert whole["features"].shape == (8, 1280)
    # A batch larger than invoke_batch runs as several calls (3 + 3 + 2 here): same rows, same order.
    split = TFLiteRunner(tflite_file, invoke_batch=3).predict(images)
    for name in ("logit", "features"):
        np.testing.assert_allclose(split[name], whole[name], rtol=1e-5, atol=1e-5)


def test_tflite_engine_gives_the_same_rows_as_keras(exported, photos):
    model_path = exported[0]
    keras_rows = list(Predictor(model_path, engine="keras", reject=False, progress=False).predict_paths(photos))
    lite = Predictor(model_path, engine="tflite", reject=False, progress=False)
    lite_rows = list(lite.predict_paths(photos))
    assert lite.temperature == 1.7
    assert [r["label"] for r in lite_rows] == [r["label"] for r in keras_rows]
    np.testing.assert_allclose([r["p_dog"] for r in lite_rows], [r["p_dog"] for r in keras_rows], atol=1e-4)


def test_missing_or_stale_exports_are_refused(exported, tmp_path):
    model_path, _, model = exported
    with pytest.raises(FileNotFoundError, match="export"):
        Predictor(model_path, engine="tflite", variant="int8", reject=False, progress=False)
    with pytest.raises(ValueError, match="unknown TFLite variant"):
        export_tflite(model_path, variants=("int4",))
    stale = _stale_copy(model_path, model, tmp_path)
    with pytest.raises(ValueError, match="different version"):
        Predictor(stale, engine="tflite", reject=False, progress=False)
    with pytest.raises(ValueError, match="different version"):
        check_export(stale, tmp_path / "pets.float32.tflite")
    check_export(model_path, tflite_path(model_path))  # the fresh export passes


def _stale_copy(model_path: Path, model: keras.Model, folder: Path) -> Path:
    """The model changed after export (another head bias) beside the old export's files: a stale export."""
    stale = folder / model_path.name
    kernel, bias = model.get_layer("logit").get_weights()
    model.get_layer("logit").set_weights([kernel, bias + 1.0])
    try:
        model.save(stale)
    finally:
        model.get_layer("logit").set_weights([kernel, bias])
    tflite_path(stale).write_bytes(tflite_path(model_path).read_bytes())
    export_info_path(stale).write_text(export_info_path(model_path).read_text())
    return stale


def test_the_auto_engine_runs_a_current_float32_export_and_otherwise_keras(exported, photos, tmp_path, caplog):
    from catdog.bundle import Bundle
    model_path, _, model = exported
    auto = Bundle.load(model_path)
    assert auto.engine == "tflite" and auto.variant == "float32" and "model" not in auto.__dict__
    assert Bundle.load(model_path, engine="keras").engine == "keras"
    images = np.stack([load_image(p, SIZE) for p in photos]).astype("float32")
    np.testing.assert_allclose(auto.predict(images, reject=False)["p_dog"],
                               Bundle.load(model_path, engine="keras").predict(images, reject=False)["p_dog"], atol=1e-4)

    bare = tmp_path / "bare" / model_path.name  # no export beside it
    bare.parent.mkdir()
    bare.write_bytes(model_path.read_bytes())
    assert Bundle.load(bare).engine == "keras"
    stale = _stale_copy(model_path, model, tmp_path)
    with caplog.at_level("WARNING", logger="catdog.bundle"):
        assert Bundle.load(stale).engine == "keras"
    assert "different version" in caplog.text and "running the Keras model instead" in caplog.text


def test_prediction_from_a_current_export_never_imports_tensorflow(exported, photos):
    """`catdog predict` on a current export must start without TensorFlow's ~5 s import (CLI and Python API)."""
    model_path = exported[0]
    script = f"""
import json, sys
from catdog.cli import main
from catdog.predict import Predictor
code = main(["predict", {str(photos[0])!r}, "--model", {str(model_path)!r}, "--no-reject"])
predictor = Predictor({str(model_path)!r}, reject=False, progress=False)
rows = list(predictor.predict_paths({[str(p) for p in photos[:2]]!r}))
print(json.dumps({{"code": code, "engine": predictor.bundle.engine, "labels": [r["label"] for r in rows],
                  "imported": [m for m in ("tensorflow", "keras") if m in sys.modules]}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 0 and result["engine"] == "tflite"
    assert result["labels"][0] in ("cat", "dog") and len(result["labels"]) == 2
    assert result["imported"] == []


def test_representative_images_are_a_seeded_subset_of_the_card_manifest(exported, tmp_path):
    model_path = exported[0]
    with pytest.raises(ValueError, match="names no readable manifest"):
        representative_images(model_path, SIZE, n=2)  # this card names no manifest
    photos = real_photos("cat", 6, start=40) + real_photos("dog", 6, start=40)
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        csv.writer(f).writerows([("path", "label", "split"),
                                 *[(p, "cat" if "Cat" in str(p) else "dog", "train") for p in photos]])
    model = tmp_path / "m.keras"
    model.write_bytes(model_path.read_bytes())
    ModelCard(model_file=model.name, backbone="mobilenet_v2", image_size=SIZE, manifest=manifest.name).save(model)
    images = representative_images(model, SIZE, n=4, seed=1)
    assert images.shape == (4, SIZE, SIZE, 3) and images.dtype == np.float32
    np.testing.assert_array_equal(images, representative_images(model, SIZE, n=4, seed=1))  # seeded
    chosen = {img.tobytes() for img in images}
    others = {img.tobytes() for seed in range(2, 6) for img in representative_images(model, SIZE, n=4, seed=seed)}
    assert others - chosen  # other seeds pick other photos
    everything = {img.tobytes() for img in representative_images(model, SIZE, n=100)}
    assert len(everything) == len(photos) and chosen <= everything  # n larger than the split: all of it


def test_inference_benchmark_writes_speed_and_accuracy(exported, photos, tmp_path):
    model_path, _, model = exported
    # 3 cats and 4 dogs: unbalanced, so even a model answering one class for all has an accuracy that
    # depends on the labels (1/2 whatever they are with 4 and 4)
    labelled = photos[1:]
    items = [Item(str(p), "cat" if "Cat" in str(p) else "dog", "test") for p in labelled]
    result = inference_benchmark(model_path, photos, tmp_path, batch_sizes=(1, 4), n_images=8, items=items,
                                 variants=("float32",), xla=False, max_seconds=0.2)
    engines = {r["engine"]: r for r in result["engines"]}
    assert set(engines) == {"keras model.predict", "tf.function", "tflite float32"}
    assert result["batch_sizes"] == [1, 4] and result["n_images"] == 8 and result["n_accuracy_items"] == 7
    assert (result["temperature"], result["threshold"]) == (1.7, 0.5)  # the card's
    # accuracy with the card's calibration, worked out here from the Keras model's own logits
    images = np.stack([load_image(p, SIZE) for p in labelled]).astype("float32")
    logits = logit_model(model).predict(images, verbose=0).reshape(-1)
    labels = np.array([item.label == "dog" for item in items])
    accuracy = round(float(((1 / (1 + np.exp(-logits / 1.7)) >= 0.5) == labels).mean()), 4)
    for name, r in engines.items():
        assert r["accuracy"] == accuracy, name
        for b in (1, 4):  # each batch size asked for, timed on whole batches of the preloaded images
            speed = r[f"batch_{b}"]
            assert speed["images_per_second"] > 0 and speed["images"] % b == 0, (name, speed)
            assert speed["images_per_second"] * speed["ms_per_batch"] / 1000 == pytest.approx(b, rel=0.05)
        assert 3 <= r["batch_1"]["images"] <= 8 and r["batch_4"]["images"] == 8  # at least 3 batches, if there are
    assert engines["tf.function"]["max_abs_logit_diff"] == 0  # the reference itself
    assert engines["keras model.predict"]["max_abs_logit_diff"] == 0  # same graph, so its logits are the reference's
    assert engines["tflite float32"]["max_abs_logit_diff"] < 1e-3
    assert engines["tflite float32"]["label_disagreements"] == 0
    assert engines["tflite float32"]["file_mb"] == round(tflite_path(model_path).stat().st_size / 1e6, 2)
    assert json.loads((tmp_path / "inference.json").read_text())["engines"] == result["engines"]
    table = [line for line in (tmp_path / "inference.md").read_text().splitlines() if line.startswith("| ")]
    assert table[0].startswith("| engine | img/s @ batch 1 | img/s @ batch 4 |")
    assert [line.split(" | ")[1:3] for line in table[1:]] == [
        [str(r["batch_1"]["images_per_second"]), str(r["batch_4"]["images_per_second"])] for r in result["engines"]]


def test_an_export_made_for_another_pet_branch_is_refused_when_rejecting(tmp_path):
    """Refitting the detector with another branch after exporting must not leave pet_prob from the old network."""
    from catdog import paths
    from catdog.bundle import Bundle
    from catdog.conventions import FEATURES_LAYER
    from catdog.openset import OpenSetDetector, openset_path
    path = tmp_path / "small.keras"
    model = build_model("simple_cnn", 48, weights=None)
    model.save(path)
    dim = int(model.get_layer(FEATURES_LAYER).output.shape[-1])
    rng = np.random.default_rng(0)
    detector = OpenSetDetector.fit(rng.normal(size=(20, dim)), np.repeat([0, 1], 10),
                                   {"model_sha256": paths.file_sha256(path)})
    detector.threshold = 1e9
    detector.with_rule(("efficientnet_lite0", 64), 0.0, 0.5, 2.0).save(openset_path(path))
    export_tflite(path, variants=("float32",))
    images = rng.uniform(0, 255, (2, 48, 48, 3)).astype(np.float32)
    assert np.isfinite(Bundle.load(path, engine="tflite").predict(images, reject=True)["pet_prob"]).all()
    detector.with_rule(("efficientnet_lite0", 96), 0.0, 0.5, 2.0).save(openset_path(path))
    with pytest.raises(ValueError, match="exported with the pet branch"):
        Bundle.load(path, engine="tflite").predict(images, reject=True)
    assert Bundle.load(path, engine="tflite").predict(images, reject=False)["logit"].shape == (2,)
    assert Bundle.load(path).engine == "keras"  # auto never serves pet_prob from the old branch


def test_cost_comparison_times_each_classifier_alone_and_divides_by_the_first(exported, photos, tmp_path):
    model_path, _, _ = exported
    small = tmp_path / "small.keras"
    keras.utils.set_random_seed(1)
    build_model("mobilenet_v2", 64, weights=None).save(small)
    ModelCard(model_file=small.name, backbone="mobilenet_v2", image_size=64).save(small)
    result = cost_comparison([model_path, small], photos, tmp_path / "out", batch_sizes=(1, 4), n_images=8,
                             max_seconds=0.2)
    first, second = result["models"]
    assert (first["image_size"], second["image_size"]) == (SIZE, 64)
    assert first["n_images"] == second["n_images"] == result["n_images"] == len(photos)
    assert first["parameters"] > 0 and second["file_mb"] > 0
    for row in (first, second):
        assert row["max_abs_logit_diff_tflite"] < 1e-3  # the timed TFLite file is the same classifier
        for engine in ("keras tf.function", "tflite float32"):
            for b in ("batch_1", "batch_4"):
                speed = row[engine][b]["images_per_second"]
                assert speed > 0
                assert row["relative_to_first"][engine][b] == round(speed / first[engine][b]["images_per_second"], 3)
    assert first["relative_to_first"]["tflite float32"]["batch_4"] == 1.0
    md = (tmp_path / "out" / "model_cost.md").read_text()
    assert str(small) in md and "(1.00x)" in md
    with pytest.raises(ValueError, match="at least two models"):
        cost_comparison([model_path], photos, tmp_path / "one")
    with pytest.raises(ValueError, match="got 0 .first unreadable: .*gone.jpg"):  # says which file and why
        cost_comparison([model_path, small], [tmp_path / "gone.jpg"], tmp_path / "none")
