"""Decoding every awkward kind of file: clear errors for bad ones, RGB for the rest."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from catdog.images import MAX_PIXELS, ImageError, load_image, load_original, probe
from conftest import make_bad_files, real_photos


@pytest.fixture
def bad(tmp_path):
    return make_bad_files(tmp_path / "bad")


@pytest.mark.parametrize("kind, reason", [
    ("zero_byte", "empty file"), ("corrupt", "cannot decode"), ("truncated", "cannot decode"),
    ("text_as_jpg", "not an image"), ("thumbs_db", "not an image"),
])
def test_unusable_files_raise_an_error_naming_the_file(bad, kind, reason):
    with pytest.raises(ImageError) as err:
        load_image(bad[kind], 32)
    assert str(bad[kind]) in str(err.value) and reason in str(err.value)


@pytest.mark.parametrize("kind", ["png_alpha", "grayscale", "cmyk", "palette_gif", "one_pixel", "webp", "non_ascii"])
def test_odd_but_valid_images_become_rgb(bad, kind):
    arr = load_image(bad[kind], 48)
    assert arr.shape == (48, 48, 3) and arr.dtype == np.uint8


def test_transparent_pixels_become_white(tmp_path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(path)
    assert (load_image(path, 8) == 255).all()


def test_exif_orientation_is_respected(bad):
    info = probe(bad["exif_rotated"])
    assert (info.width, info.height) == (40, 60)
    assert load_original(bad["exif_rotated"]).shape == (60, 40, 3)


def test_real_photo_loads_at_model_size():
    arr = load_image(real_photos("cat", 1)[0], 224)
    assert arr.shape == (224, 224, 3) and arr.std() > 10


def test_huge_jpeg_is_downscaled_without_decoding_it_whole(tmp_path):
    path = tmp_path / "huge.jpg"
    side = int(MAX_PIXELS ** 0.5) + 600  # just over the limit: ~51 MP
    Image.new("RGB", (side, side), (30, 120, 200)).save(path, "JPEG", quality=50)
    info = probe(path)
    assert max(info.width, info.height) <= side // 2  # decoded in draft (reduced) mode
    assert load_image(path, 64).shape == (64, 64, 3)


def test_huge_png_is_refused_with_its_size(tmp_path):
    path = tmp_path / "huge.png"
    side = int(MAX_PIXELS ** 0.5) + 600
    Image.new("L", (side, side)).save(path)
    with pytest.raises(ImageError, match="too large"):
        probe(path)
