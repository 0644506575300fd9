"""Tests for catdog.rendering: heatmap pictures at the photo's resolution, PNG files with any name, gallery overlays."""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest
from conftest import real_photos
from PIL import Image

from catdog.gradcam import CamExplainer
from catdog.images import load_batch, load_original
from catdog.models import build_model
from catdog.rendering import colormap_code, colormap_rgb, overlays, render, save_png, save_render


@pytest.fixture(scope="module")
def photo():
    return load_batch(real_photos("cat", 4), 32, limit=1).paths[0]


def test_render_uses_original_resolution_and_rgb_order(photo):
    original = load_original(photo)[:150, :170]  # non-square, and not the model's input size
    cam = np.linspace(0, 1, 96 * 96, dtype=np.float32).reshape(96, 96)
    gray, heatmap, overlay = render(original, cam, alpha=0.4)
    assert gray.shape == (150, 170) and heatmap.shape == overlay.shape == (150, 170, 3)
    assert gray.dtype == heatmap.dtype == overlay.dtype == np.uint8
    _, hot, _ = render(original, np.ones((96, 96), np.float32))
    _, cold, _ = render(original, np.zeros((96, 96), np.float32))
    assert hot[0, 0, 0] > hot[0, 0, 2] and cold[0, 0, 2] > cold[0, 0, 0]  # jet: 1 is red, 0 is blue (RGB order)
    with pytest.raises(ValueError, match="viridis"):
        render(original, cam, colormap="no-such-map")
    with pytest.raises(ValueError, match="alpha"):
        render(original, cam, alpha=1.5)
    assert colormap_code("viridis") != colormap_code("jet")


def test_save_png_non_utf8_name_round_trips_rgb_and_gray(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (21, 34, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (21, 34), dtype=np.uint8)
    name = os.fsdecode(b"caf\xff.png")  # not UTF-8: a surrogate escape in Python, raw bytes on disk
    for image, folder in ((rgb, "rgb"), (gray, "gray")):
        path = save_png(tmp_path / folder / name, image)  # the parent folder is created
        assert os.fsencode(path.name) == b"caf\xff.png" and path.is_file()
        with Image.open(path) as im:
            assert im.mode == ("RGB" if image.ndim == 3 else "L")
            np.testing.assert_array_equal(np.asarray(im), image)
    with pytest.raises(ValueError, match="uint8"):
        save_png(tmp_path / "float.png", rgb.astype(np.float32))


def test_save_render_writes_three_pngs(photo, tmp_path):
    original = load_original(photo, 200)
    parts = render(original, np.random.default_rng(1).random((8, 8), np.float32))
    files = save_render(tmp_path / "out", os.fsdecode(b"chat_\xe9"), *parts)  # Latin-1 byte, as old cameras name files
    assert list(files) == ["gray", "heatmap", "overlay"]
    for (kind, path), image in zip(files.items(), parts):
        assert path.name.endswith(f"_{kind}.png")
        with Image.open(path) as im:
            np.testing.assert_array_equal(np.asarray(im), image)


def test_overlays_for_gallery_skip_unreadable_files(tmp_path):
    keras.utils.set_random_seed(1)
    explainer = CamExplainer(build_model("simple_cnn", 64, weights=None))
    cat, dog = load_batch(real_photos("cat", 4), 32, limit=1).paths + load_batch(real_photos("dog", 4), 32, limit=1).paths
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"nope")
    result = overlays(explainer, [cat, broken, dog], method="scorecam", max_side=300)
    assert list(result) == [cat, dog]
    for path, overlay in result.items():
        assert overlay.dtype == np.uint8 and overlay.shape == load_original(path, 300).shape
    assert overlays(explainer, [broken]) == {}


def test_colormap_rgb_is_what_render_draws(photo):
    original = load_original(photo, 64)
    levels = np.linspace(0, 1, original.shape[0] * original.shape[1], dtype=np.float32).reshape(original.shape[:2])
    for name in ("jet", "viridis"):
        gray, heatmap, _ = render(original, levels, name)
        lut = colormap_rgb(name)
        assert lut.shape == (256, 3) and lut.dtype == np.uint8
        np.testing.assert_array_equal(heatmap, lut[gray])  # every heatmap pixel is the LUT colour of its level
    assert tuple(colormap_rgb("jet")[0]) == (0, 0, 128) and tuple(colormap_rgb("jet")[255]) == (128, 0, 0)
