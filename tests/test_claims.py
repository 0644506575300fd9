"""Tests that can fail: the claims that set catdog apart, each guarded against a plausible bug.

Most tests here need no shared data: their models are tiny (a from-scratch CNN at 32-48 px,
or a hand-built network whose evidence is known) and their images are generated at test time.
Those that need the shipped model or real photos skip with the reason when they are missing.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import catdog.openset as openset
import catdog.training as training
from catdog import paths
from catdog.bundle import Bundle
from catdog.card import ModelCard
from catdog.conventions import FEATURES_LAYER, LOGIT_LAYER
from catdog.explain import explain_paths
from catdog.faithfulness import deletion_drop, randomization_check
from catdog.gradcam import CamExplainer
from catdog.images import load_batch
from catdog.metrics import apply_temperature, sigmoid, threshold_analysis
from catdog.models import build_model
from catdog.tflite import TFLiteRunner
from catdog.training import TrainConfig, train
from interrupt import Interrupt


# ---------------------------------------------------------------- generated data
def _pet_like(rng: np.random.Generator, label: str, size: int) -> np.ndarray:
    """A generated 'photo': noise with a reddish (dog) or greenish (cat) blob somewhere."""
    img = rng.normal(128, 30, (size, size, 3))
    r = size // 4
    cy, cx = rng.integers(r, size - r, 2)
    yy, xx = np.mgrid[:size, :size]
    blob = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    img[blob, 0 if label == "dog" else 1] += 90
    return np.clip(img, 0, 255).astype(np.uint8)


def _write_manifest(folder: Path, counts: dict[str, int], size: int = 40, seed: int = 0) -> Path:
    """Generated JPEGs and a manifest naming them: ``counts`` images per class and split."""
    rng = np.random.default_rng(seed)
    rows = []
    for split, n in counts.items():
        for label in ("cat", "dog"):
            for k in range(n):
                path = folder / split / f"{label}{k}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(_pet_like(rng, label, size)).save(path, quality=95)
                rows.append((str(path), label, split))
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        csv.writer(f).writerows([("path", "label", "split"), *rows])
    return manifest


# ---------------------------------------------------------------- run folders
def test_new_run_dir_never_reuses_a_folder(tmp_path):
    first = paths.new_run_dir(tmp_path, "run")
    (first / "results.json").write_text("{}")
    second = paths.new_run_dir(tmp_path, "run")
    assert second != first and second.name == "run-2" and not any(second.iterdir())
    stamped = {paths.new_run_dir(tmp_path / "t") for _ in range(3)}  # same second: still three folders
    assert len(stamped) == 3 and (first / "results.json").read_text() == "{}"


# ---------------------------------------------------------------- Grad-CAM against an independent reference
def keras_example_gradcam(model: keras.Model, conv_layer: str, image: np.ndarray, dog: bool) -> np.ndarray:
    """Grad-CAM written the Keras example's way, one image per tape; shares no code with catdog.gradcam.

    The cat map explains -logit (p(cat) = sigmoid(-logit)). ReLU, cv2 bilinear resize, then min-max.
    """
    grad_model = keras.Model(model.inputs, [model.get_layer(conv_layer).output, model.get_layer(LOGIT_LAYER).output])
    x = tf.convert_to_tensor(image[None].astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        conv_out, logit = grad_model(x, training=False)
        score = logit[:, 0] if dog else -logit[:, 0]
    grads = tape.gradient(score, conv_out)
    pooled = tf.reduce_mean(grads, axis=(0, 1, 2))
    heat = (conv_out[0] @ pooled[..., None])[..., 0].numpy()
    heat = np.maximum(heat, 0)
    h, w = image.shape[:2]
    heat = cv2.resize(heat, (w, h), interpolation=cv2.INTER_LINEAR)
    span = heat.max() - heat.min()
    return (heat - heat.min()) / span if span > 1e-6 * max(np.abs(heat).max(), 1e-30) else np.zeros_like(heat)


def _compare_with_reference(model: keras.Model, images: np.ndarray) -> None:
    explainer = CamExplainer(model)
    both = explainer.explain_both(images)
    for cls in ("cat", "dog"):
        reference = np.stack([keras_example_gradcam(model, explainer.layer_name, im, cls == "dog") for im in images])
        np.testing.assert_allclose(both[cls], reference, atol=2e-3, err_msg=f"{cls} maps")
    # Without the ReLU the cat map would be the dog map turned upside down.
    assert not np.allclose(both["cat"], 1.0 - both["dog"], atol=1e-3)


def test_gradcam_matches_keras_example_reference_on_both_classes_small_cnn():
    keras.utils.set_random_seed(3)
    model = build_model("simple_cnn", 64, weights=None)
    rng = np.random.default_rng(0)
    images = np.stack([_pet_like(rng, label, 64) for label in ("cat", "dog", "cat", "dog")]).astype(np.float32)
    _compare_with_reference(model, images)


def test_gradcam_matches_keras_example_reference_on_both_classes_mobilenet():
    from conftest import need_imagenet_weights, real_photos
    need_imagenet_weights()
    keras.utils.set_random_seed(0)
    model = build_model("mobilenet_v2", 96, weights="imagenet")
    photos = [p for label in ("cat", "dog") for p in load_batch(real_photos(label, 6), 32, limit=2).paths]
    _compare_with_reference(model, load_batch(photos, 96).inputs)


# ---------------------------------------------------------------- localisation on the shipped model
SHIPPED = paths.default_model_path()


def _half(path: Path, size: int) -> np.ndarray:
    """A photo shrunk to (size/2)x(size/2), centred on a grey (size x size/2) strip."""
    strip = np.full((size, size // 2, 3), 127, np.uint8)
    small = np.asarray(Image.open(path).convert("RGB").resize((size // 2, size // 2), Image.BILINEAR))
    strip[size // 4: size // 4 + size // 2] = small
    return strip


def _shipped_bundle() -> Bundle:
    """The shipped model; skip when it or the shared photos its manifest names are missing."""
    from conftest import need_shared
    need_shared()  # checked first: loading the model takes seconds
    if not SHIPPED.is_file():
        pytest.skip(f"shipped model {SHIPPED} not found")
    return Bundle.load(SHIPPED)


def _shipped_test_photos(bundle: Bundle, label: str, n: int) -> list[Path]:
    """The first ``n`` readable test-split photos of ``label`` from the shipped model's manifest; skip if absent."""
    from conftest import need_shared

    from catdog.data import read_manifest
    need_shared()  # the manifest names photos in the shared folder
    manifest = bundle.manifest
    if manifest is None or not manifest.is_file():
        pytest.skip(f"the manifest of {SHIPPED} is missing")
    items = [i for i in read_manifest(manifest, "test") if i.label == label][: n * 3]
    if not items or not Path(items[0].path).is_file():
        pytest.skip(f"test photos named by {manifest} not found (set CATDOG_SHARED)")
    return load_batch([i.path for i in items], 32, limit=n).paths


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gradcam", "gradcampp", "scorecam"])
def test_cat_map_lands_on_the_cat_and_dog_map_on_the_dog(method):
    bundle = _shipped_bundle()
    size = bundle.image_size
    cats, dogs = _shipped_test_photos(bundle, "cat", 2), _shipped_test_photos(bundle, "dog", 2)
    composites = np.stack([np.concatenate([_half(c, size), _half(d, size)], axis=1) for c, d in zip(cats, dogs)])
    both = bundle.explainer.explain_both(composites.astype(np.float32), method=method)
    left = lambda m: m[:, :, : size // 2].sum(axis=(1, 2)) / np.maximum(m.sum(axis=(1, 2)), 1e-9)  # noqa: E731
    cat_left, dog_left = left(both["cat"]), left(both["dog"])
    assert (cat_left > 0.6).all() and (dog_left < 0.4).all(), (cat_left, dog_left)


# ---------------------------------------------------------------- faithfulness on a network with known evidence
SIZE_H = 32


def hand_built_model() -> keras.Model:
    """A catdog-shaped network whose evidence is known: red pixels say dog, green pixels say cat.

    Channel 0 of ``last_conv`` is relu(red - green), channel 1 relu(green - red) (pixels scaled to
    [-1, 1]); the logit is 200 x (mean of channel 0 - mean of channel 1).
    """
    inputs = keras.Input((SIZE_H, SIZE_H, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")(inputs)
    conv = keras.layers.Conv2D(2, 1, activation="relu", name="last_conv")
    x = conv(x)
    x = keras.layers.GlobalAveragePooling2D(name=FEATURES_LAYER)(x)
    dense = keras.layers.Dense(1, name=LOGIT_LAYER)
    out = keras.layers.Activation("sigmoid", name="prob")(dense(x))
    model = keras.Model(inputs, out, name="hand_built")
    kernel = np.zeros((1, 1, 3, 2), np.float32)
    kernel[0, 0, :, 0], kernel[0, 0, :, 1] = (1, -1, 0), (-1, 1, 0)  # input RGB -> output channel
    conv.set_weights([kernel, np.zeros(2, np.float32)])
    dense.set_weights([np.array([[200.0], [-200.0]], np.float32), np.zeros(1, np.float32)])
    return model


def _patch_images(n: int, seed: int = 0) -> np.ndarray:
    """Grey noise, each with one red (even index) or green (odd) 4x4 patch at a random place."""
    rng = np.random.default_rng(seed)
    images = rng.normal(127.5, 6, (n, SIZE_H, SIZE_H, 3))
    for k in range(n):
        y, x = rng.integers(0, SIZE_H - 4, 2)
        images[k, y:y + 4, x:x + 4, k % 2] += 110
    return np.clip(images, 0, 255).astype(np.float32)


def test_deleting_salient_pixels_hurts_more_than_random_on_known_evidence():
    model = hand_built_model()
    images = _patch_images(6)
    explainer = CamExplainer(model)
    maps, logits = explainer.explain_with_logits(images)
    assert ((logits >= 0) == (np.arange(6) % 2 == 0)).all()  # red patches read as dog, green as cat
    for mode in ("blur", "grey"):
        result = deletion_drop(explainer, images, maps, fraction=0.1, mode=mode)
        salient, random = np.array(result["drop_salient"]), np.array(result["drop_random"])
        assert (salient > random + 0.1).all(), result


def test_randomization_check_detects_maps_that_ignore_the_weights():
    rho = randomization_check(hand_built_model(), _patch_images(6), seed=0)
    assert np.isfinite(rho) and rho < 0.8, rho  # kept (not re-initialised) weights give exactly 1


# ---------------------------------------------------------------- fitting on validation, never on test
def _split_logits(monkeypatch, val_logits, test_logits):
    """Make training.predict_logits return chosen logits per split (train logits: anything)."""
    def fake(model, items, batch_size=64):
        split = {i.split for i in items}
        assert len(split) == 1, split
        chosen = {"validation": val_logits, "test": test_logits}.get(split.pop())
        return np.asarray(chosen if chosen is not None else np.zeros(len(items)), np.float32)
    monkeypatch.setattr(training, "predict_logits", fake)


def test_temperature_is_fitted_on_validation_not_test(tmp_path, monkeypatch):
    manifest = _write_manifest(tmp_path / "data", {"train": 4, "validation": 20, "test": 20})
    # Labels in manifest order: 20 cats then 20 dogs per split. Validation logits are twice too
    # confident (best T = 2); test logits are twice too timid (best T = 0.5).
    rng = np.random.default_rng(0)
    base = np.concatenate([-rng.uniform(0.5, 3, 20), rng.uniform(0.5, 3, 20)])
    flips = rng.random(40) < 0.2
    base = np.where(flips, -base, base)
    _split_logits(monkeypatch, base * 2.0, base * 0.5)
    config = TrainConfig(backbone="simple_cnn", image_size=32, weights=None, head_epochs=1, batch_size=8,
                         openset_images=0, augment=False)
    card = train(manifest, tmp_path / "run", config).card
    from catdog.metrics import fit_temperature
    y = np.repeat([0, 1], 20)
    expected_val = fit_temperature(base * 2.0, y)
    assert card.temperature == pytest.approx(expected_val, rel=1e-4)
    assert abs(card.temperature - fit_temperature(base * 0.5, y)) > 1.0


def test_threshold_is_chosen_on_validation_not_test():
    y = np.repeat([0, 1], 50)
    rng = np.random.default_rng(0)
    p_val = np.clip(np.where(y == 1, 0.8, 0.3) + rng.normal(0, 0.05, 100), 0, 1)  # val separates at ~0.55
    p_test = np.clip(np.where(y == 1, 0.3, 0.1) + rng.normal(0, 0.02, 100), 0, 1)  # test at ~0.2
    (row,) = threshold_analysis(y, p_val, y, p_test, targets=(("dog", "precision", 0.99),))
    assert 0.35 < row["threshold"] <= 0.8, row
    assert row["test_recall"] < 0.5  # the validation threshold is too high for the shifted test set


def test_openset_detector_is_fitted_on_train_and_thresholded_on_validation(tmp_path, monkeypatch):
    manifest = _write_manifest(tmp_path / "data", {"train": 30, "validation": 30, "test": 30}, size=32)
    keras.utils.set_random_seed(0)
    model_path = tmp_path / "m.keras"
    build_model("simple_cnn", 32, weights=None).save(model_path)
    ModelCard(model_file=model_path.name, backbone="simple_cnn", image_size=32, manifest=str(manifest)).save(model_path)
    rng = np.random.default_rng(0)
    centre = rng.normal(0, 1, 8)
    # Train and test features sit near one point; validation's are shifted away from it, so only
    # validation scores give a high threshold.
    offset = {"train": 0.0, "validation": 1.5, "test": 0.0}
    returned: dict[str, np.ndarray] = {}

    def fake_features(model, items, sha, split, batch_size, cache):
        splits = {i.split for i in items}
        assert len(splits) == 1
        name = splits.pop()
        returned[name] = centre + offset[name] * rng.normal(0, 1, 8) + rng.normal(0, 0.3, (len(items), 8))
        return returned[name]
    monkeypatch.setattr(openset, "_features", fake_features)
    detector = openset.fit_openset(model_path, save=False, branch=None)
    assert sorted(returned) == ["train", "validation"], sorted(returned)  # test photos never seen
    val_scores = detector.score(returned["validation"])
    assert detector.threshold == pytest.approx(np.quantile(val_scores, 0.99, method="higher"), rel=1e-9)
    test_like = detector.score(centre + rng.normal(0, 0.3, (60, 8)))
    assert detector.threshold > np.quantile(test_like, 0.99) * 1.5
    assert detector.info["n_train"] == {"cat": 30, "dog": 30} and detector.info["n_validation"] == 60


# ---------------------------------------------------------------- explain uses the card's temperature
def test_explain_paths_confidence_uses_the_card_temperature(tmp_path):
    keras.utils.set_random_seed(4)
    model = build_model("simple_cnn", 32, weights=None)
    # A large logit bias makes the raw and calibrated probabilities clearly different.
    dense = model.get_layer(LOGIT_LAYER)
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel, bias + 3.0])
    path = tmp_path / "m.keras"
    model.save(path)
    ModelCard(model_file=path.name, backbone="simple_cnn", image_size=32, temperature=4.0).save(path)
    rng = np.random.default_rng(1)
    files = []
    for k in range(3):
        files.append(tmp_path / "img" / f"{k}.png")
        files[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(_pet_like(rng, "dog", 32)).save(files[-1])
    rows = explain_paths(path, files, tmp_path / "out")
    logits = CamExplainer(model).predict_logits(load_batch(files, 32).inputs)
    expected = apply_temperature(logits, 4.0)
    got = np.array([r["p_dog"] for r in rows])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.abs(got - sigmoid(logits)).max() > 0.05  # uncalibrated would differ


# ---------------------------------------------------------------- exact determinism
def test_two_seeded_runs_give_identical_weights_and_logits(tmp_path):
    manifest = _write_manifest(tmp_path / "data", {"train": 8, "validation": 4, "test": 4}, size=32)
    config = TrainConfig(backbone="simple_cnn", image_size=32, weights=None, head_epochs=2, batch_size=4,
                         openset_images=0, seed=7)
    runs = [train(manifest, tmp_path / f"run{k}", config) for k in range(2)]
    from catdog.data import read_manifest
    from catdog.inference import predict_logits
    items = read_manifest(manifest)
    weights = [r.model.get_weights() for r in runs]
    # Same seed, same CPU, same thread counts: bit-identical (no float noise allowed here).
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(predict_logits(runs[0].model, items), predict_logits(runs[1].model, items))
    assert runs[0].card.temperature == runs[1].card.temperature


# ---------------------------------------------------------------- TFLite: int8 executed, open-set on TFLite
@pytest.fixture(scope="module")
def small_bundle_files(tmp_path_factory):
    """A small CNN on generated images, saved with card, a fitted detector and float32 + int8 exports."""
    from catdog.export import export_tflite
    folder = tmp_path_factory.mktemp("tfl")
    manifest = _write_manifest(folder / "data", {"train": 20, "validation": 20, "test": 4}, size=48)
    config = TrainConfig(backbone="simple_cnn", image_size=48, weights=None, head_epochs=2, batch_size=8,
                         openset_images=0, augment=False)
    result = train(manifest, folder / "run", config)
    # The distance-only rule: the pet branch's ImageNet network is beside the point here.
    openset.fit_openset(result.model_path, branch=None)
    files = export_tflite(result.model_path, variants=("float32", "int8"))
    return result.model_path, files, manifest


def _generated_inputs(n: int, size: int, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([_pet_like(rng, ("cat", "dog")[k % 2], size) for k in range(n)]).astype(np.float32)


def _quantized(detail: dict) -> bool:
    """An int8 tensor with real quantization parameters (a scale > 0)."""
    return detail["dtype"] == np.int8 and detail["quantization"][0] > 0


def _graph_ops(interpreter: tf.lite.Interpreter) -> list[dict]:
    """The graph's operators (the XNNPACK delegate's stand-ins left out) with their tensors' details.

    ``_get_ops_details`` is the only listing of operators tf.lite.Interpreter offers.
    """
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    return [{"op": op["op_name"], "inputs": [tensors[i] for i in op["inputs"] if i >= 0],
             "outputs": [tensors[i] for i in op["outputs"]]}
            for op in interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]


def test_int8_tflite_is_full_integer_and_agrees_with_keras(small_bundle_files):
    model_path, files, _ = small_bundle_files
    int8 = Bundle.load(model_path, engine="tflite", variant="int8")
    runner = int8.runner
    assert isinstance(runner, TFLiteRunner) and runner.path == files["int8"]
    # Pixels in, floats out (callers keep passing 0..255), but everything between runs in int8: the input is
    # quantized first, every layer reads and writes int8 activations, and the outputs are dequantized last.
    # A dynamic-range file (int8 weights, float activations) has none of this.
    interpreter = runner.interpreter
    (image,) = interpreter.get_input_details()
    assert image["dtype"] == np.float32 and all(d["dtype"] == np.float32 for d in interpreter.get_output_details())
    ops = _graph_ops(interpreter)
    assert ops[0]["op"] == "QUANTIZE" and ops[0]["inputs"][0]["index"] == image["index"]
    assert _quantized(ops[0]["outputs"][0])
    layers = [op for op in ops if op["op"] in ("CONV_2D", "MAX_POOL_2D", "MEAN", "FULLY_CONNECTED")]
    assert [op["op"] for op in layers].count("CONV_2D") == 4  # simple_cnn's four convolutions
    for op in layers:
        assert _quantized(op["inputs"][0]) and _quantized(op["outputs"][0]), op["op"]
    makers = {t["index"]: op for op in ops for t in op["outputs"]}
    for output in interpreter.get_output_details():
        assert makers[output["index"]]["op"] == "DEQUANTIZE" and _quantized(makers[output["index"]]["inputs"][0])

    images = _generated_inputs(16, 48)
    keras_out = Bundle.load(model_path).predict(images, reject=False)
    out = int8.predict(images, reject=False)
    spread = np.ptp(keras_out["logit"])
    assert np.abs(out["logit"] - keras_out["logit"]).max() < 0.15 * spread + 0.05, (out["logit"], keras_out["logit"])
    assert np.corrcoef(out["logit"], keras_out["logit"])[0, 1] > 0.95


def test_tflite_runner_quantizes_inputs_and_dequantizes_outputs(small_bundle_files, tmp_path):
    """A full-integer file (int8 in and out) must give the float logits back through TFLiteRunner."""
    from catdog.inference import inference_model
    from catdog.models import load_model
    model_path, _, _ = small_bundle_files
    net = inference_model(load_model(model_path))
    representative = _generated_inputs(32, 48, seed=9)
    converter = tf.lite.TFLiteConverter.from_keras_model(net)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([im[None]] for im in representative)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    path = tmp_path / "full_int8.tflite"
    path.write_bytes(converter.convert())
    runner = TFLiteRunner(path)
    interpreter = runner.interpreter
    (image,) = interpreter.get_input_details()
    outputs = {d["index"]: d for d in interpreter.get_output_details()}
    # int8 on both ends with real parameters: pixels 0..255 map to -128..127 (a zero point to apply), and
    # each output has its own scale, so a runner that skipped or swapped any of them would be far off.
    assert _quantized(image) and image["quantization"][1] != 0
    assert set(outputs) == {d["index"] for d in runner._outputs.values()}
    assert all(_quantized(d) for d in outputs.values())
    images = _generated_inputs(8, 48)
    expected = net(images, training=False)
    got = runner.predict(images)
    for name in ("logit", "features"):
        want = expected[name].numpy().reshape(got[name].shape)
        step = runner._outputs[name]["quantization"][0]
        # Within a few output quantization steps of the float model: an ignored zero point is ~100 steps
        # off, raw integers or another tensor's scale thousands.
        assert np.abs(got[name] - want).max() <= 4 * step, (name, got[name], want)


def test_openset_scores_on_the_tflite_engine_match_keras(small_bundle_files):
    model_path, _, _ = small_bundle_files
    rng = np.random.default_rng(2)
    pets = _generated_inputs(8, 48)
    odd = rng.uniform(0, 255, (4, 48, 48, 3)).astype(np.float32)  # not like anything it was fitted on
    odd[:2] = 0.0
    images = np.concatenate([pets, odd])
    keras_out = Bundle.load(model_path, engine="keras").predict(images, reject=True)
    tfl = Bundle.load(model_path, engine="tflite", variant="float32").predict(images, reject=True)
    np.testing.assert_allclose(tfl["ood_score"], keras_out["ood_score"], rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(tfl["neither"], keras_out["neither"])
    assert np.isfinite(tfl["ood_score"]).all() and keras_out["neither"][8:].any()


# ---------------------------------------------------------------- the shipped model with its detector
@pytest.mark.slow
def test_shipped_model_with_its_detector_accepts_pets_and_rejects_non_photos(tmp_path):
    from catdog.predict import Predictor
    bundle = _shipped_bundle()
    if not bundle.has_detector:
        pytest.fail(f"{SHIPPED} ships without its 'neither' detector: `catdog predict` would refuse to run")
    photos = _shipped_test_photos(bundle, "cat", 4) + _shipped_test_photos(bundle, "dog", 4)
    rng = np.random.default_rng(0)
    odd = []
    for k in range(4):  # flat colour and noise: nothing like a pet photo
        file = tmp_path / f"odd{k}.png"
        array = np.full((200, 200, 3), (40 * k, 200, 90), np.uint8) if k < 2 else rng.integers(0, 255, (200, 200, 3))
        Image.fromarray(array.astype(np.uint8)).save(file)
        odd.append(file)
    rows = list(Predictor(SHIPPED, reject=True).predict_paths(photos + odd))  # a stale detector raises here
    labels = [r["label"] for r in rows]
    # Pets are kept (one classification slip per class allowed: 98.8% is not 100%); non-photos rejected.
    assert "neither" not in labels[:8], rows
    assert labels[:4].count("cat") >= 3 and labels[4:8].count("dog") >= 3, labels
    assert labels[8:] == ["neither"] * 4, rows


# ---------------------------------------------------------------- two-phase resume
@pytest.mark.slow
def test_head_done_finetune_interrupted_resumes_the_finetune_only(tmp_path, monkeypatch):
    from conftest import need_imagenet_weights
    need_imagenet_weights()
    manifest = _write_manifest(tmp_path / "data", {"train": 8, "validation": 4, "test": 2}, size=48)
    config = TrainConfig(backbone="mobilenet_v2", image_size=48, head_epochs=1, finetune_epochs=3, finetune_layers=5,
                         schedule="plateau", warmup_epochs=0, batch_size=8, patience=10, openset_images=0, augment=False)
    original = training._callbacks
    monkeypatch.setattr(training, "_callbacks", lambda run_dir, phase, *a, **k: original(run_dir, phase, *a, **k) + (
        [Interrupt(after_epoch=1)] if phase == "finetune" else []))
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(manifest, run, config)
    state = json.loads((run / "state.json").read_text())
    assert list(state["done"]) == ["head"] and not (run / "model.keras").exists()
    head_features = (run / "features" / "train.npz").stat().st_mtime_ns
    monkeypatch.setattr(training, "_callbacks", original)
    phases_fitted = []
    real_fit = training._fit
    monkeypatch.setattr(training, "_fit", lambda model, tr, va, **k: phases_fitted.append(
        (k["phase"], tr is not None)) or real_fit(model, tr, va, **k))
    result = train(manifest, run, config)
    assert phases_fitted == [("head", False), ("finetune", True)]  # head reloaded, not retrained
    with (run / "history_finetune.csv").open() as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["0", "1", "2"]
    with (run / "history.csv").open() as f:
        assert [r["phase"] for r in csv.DictReader(f)] == ["head", "finetune", "finetune", "finetune"]
    assert (run / "features" / "train.npz").stat().st_mtime_ns == head_features  # features not re-extracted
    assert set(result.card.phases) == {"head", "finetune"}
