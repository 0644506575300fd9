"""Model builders: shapes, preprocessing inside the model, local ImageNet weights, Grad-CAM reachability."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from catdog import paths
from catdog.models import (LAST_CONV_LAYER, backbone_layers, build_model, feature_model, head_model,
                           image_size_of, load_model, logit_model, resolve_weights, save_model, set_trainable,
                           with_input_size)
from catdog.images import load_image
from conftest import real_photos

WEIGHTS = paths.weights_dir()
needs_weights = pytest.mark.skipif(WEIGHTS is None, reason="no local ImageNet weights (../shared/weights)")


@pytest.mark.parametrize("backbone, size, weights", [
    ("mobilenet_v2", 64, None), ("inception_v3", 75, None), ("simple_cnn", 64, None)])
def test_builders_output_one_probability_and_expose_the_last_conv_layer(backbone, size, weights):
    model = build_model(backbone, size, weights=weights)
    x = np.stack([load_image(p, size) for p in real_photos("dog", 2)]).astype("float32")
    p = model.predict(x, verbose=0)
    assert p.shape == (2, 1) and ((p > 0) & (p < 1)).all()
    conv = model.get_layer(LAST_CONV_LAYER[backbone])
    grad_model = keras.Model(model.input, [conv.output, model.get_layer("logit").output])
    fmap, logit = grad_model(x)
    assert len(fmap.shape) == 4 and logit.shape == (2, 1)
    np.testing.assert_allclose(keras.ops.sigmoid(logit).numpy(), p, atol=1e-5)


@needs_weights
def test_mobilenet_preprocesses_inside_and_loads_local_weights_at_any_size():
    size = 96
    model = build_model("mobilenet_v2", size, weights="imagenet")
    reference = keras.applications.MobileNetV2(include_top=False, weights=resolve_weights("mobilenet_v2", "imagenet"),
                                               input_shape=(size, size, 3), pooling="avg")
    x = np.stack([load_image(p, size) for p in real_photos("cat", 3)]).astype("float32")
    ours = feature_model(model).predict(x, verbose=0)  # raw 0..255 pixels in
    theirs = reference.predict(keras.applications.mobilenet_v2.preprocess_input(x.copy()), verbose=0)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    random_init = feature_model(build_model("mobilenet_v2", size, weights=None)).predict(x, verbose=0)
    assert np.abs(random_init - theirs).max() > 0.1


@needs_weights
def test_resolve_weights_accepts_file_folder_imagenet_and_none(tmp_path):
    file = resolve_weights("mobilenet_v2", "imagenet")
    assert file.endswith(".h5")
    assert resolve_weights("mobilenet_v2", WEIGHTS) == file
    assert resolve_weights("mobilenet_v2", file) == file
    assert resolve_weights("mobilenet_v2", None) is None
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        resolve_weights("mobilenet_v2", tmp_path / "missing.h5")


def test_inception_falls_back_to_keras_download_without_a_local_file():
    # No InceptionV3 weights exist on these machines: "imagenet" stays "imagenet" (Keras downloads it).
    if WEIGHTS is not None and (WEIGHTS / "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5").exists():
        pytest.skip("a local InceptionV3 file exists here")
    assert resolve_weights("inception_v3", "imagenet") == "imagenet"


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_model("resnet", 96)
    with pytest.raises(ValueError, match="needs image_size >= 75"):
        build_model("inception_v3", 64, weights=None)


def test_set_trainable_keeps_batchnorm_frozen_and_head_trainable():
    model = build_model("mobilenet_v2", 64, weights=None)
    assert set_trainable(model, 0) == 0
    assert {w.path.split("/")[0] for w in model.trainable_weights} == {"logit"}
    n = set_trainable(model, 20)
    top = backbone_layers(model)[-20:]
    assert n == sum(not isinstance(layer, keras.layers.BatchNormalization) for layer in top) > 0
    assert not any(layer.trainable for layer in backbone_layers(model) if isinstance(layer, keras.layers.BatchNormalization))


def test_head_and_logit_models_share_weights_with_the_classifier():
    model = build_model("simple_cnn", 64)
    x = np.stack([load_image(p, 64) for p in real_photos("cat", 2)]).astype("float32")
    features = feature_model(model).predict(x, verbose=0)
    np.testing.assert_allclose(head_model(model).predict(features, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    logits = logit_model(model).predict(x, verbose=0)
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), model.predict(x, verbose=0), atol=1e-5)


def test_sub_models_are_built_once_so_repeated_predictions_do_not_retrace():
    model = build_model("simple_cnn", 32, weights=None)
    x = np.random.default_rng(0).uniform(0, 255, (5, 32, 32, 3)).astype("float32")
    for _ in range(4):  # what evaluation and training do, split after split
        logit_model(model).predict(x, verbose=0)
        feature_model(model).predict(x, verbose=0)
    assert logit_model(model) is logit_model(model) and feature_model(model) is feature_model(model)
    assert logit_model(model).predict_function.experimental_get_tracing_count() == 1
    assert logit_model(build_model("simple_cnn", 32, weights=None)) is not logit_model(model)


def test_with_input_size_keeps_the_weights_at_another_size():
    model = build_model("mobilenet_v2", 64, weights=None)
    model.get_layer("logit").bias.assign([0.7])  # a non-default weight that must carry over
    bigger = with_input_size(model, 96)
    assert image_size_of(bigger) == 96 and with_input_size(model, 64) is model
    reference = build_model("mobilenet_v2", 96, weights=None)
    reference.set_weights(model.get_weights())
    x = np.stack([load_image(p, 96) for p in real_photos("dog", 2)]).astype("float32")
    np.testing.assert_allclose(bigger.predict(x, verbose=0), reference.predict(x, verbose=0), atol=1e-6)
    assert bigger.get_layer(LAST_CONV_LAYER["mobilenet_v2"]).output.shape[1:3] == (3, 3)  # Grad-CAM still reaches it


def test_float16_weights_halve_the_file_and_load_as_float32(tmp_path):
    model = build_model("mobilenet_v2", 64, weights=None)
    rng = np.random.default_rng(0)
    bn = model.get_layer("bn_Conv1")  # small moving variances: float16 would lose them, so vectors stay float32
    bn.moving_variance.assign(rng.uniform(1e-7, 1e-5, bn.moving_variance.shape).astype("float32"))
    plain = save_model(model, tmp_path / "plain.keras")
    half = save_model(model, tmp_path / "half.keras", float16_weights=True)
    assert half.stat().st_size < 0.55 * plain.stat().st_size
    loaded = load_model(half)
    assert all(w.dtype == "float32" for w in loaded.weights)  # computed in float32 as before
    for original, stored in zip(model.weights, loaded.weights):
        want = original.numpy()
        if want.size >= 1024:  # kernels: exactly their float16 rounding
            np.testing.assert_array_equal(stored.numpy(), want.astype(np.float16).astype(np.float32))
        else:
            np.testing.assert_array_equal(stored.numpy(), want)
    x = np.stack([load_image(p, 64) for p in real_photos("cat", 2)]).astype("float32")
    np.testing.assert_allclose(logit_model(loaded).predict(x, verbose=0), logit_model(model).predict(x, verbose=0),
                               rtol=0.05, atol=0.05)
