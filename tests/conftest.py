"""Shared fixtures: small subsets of the real photos in ../shared and generated bad files."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from catdog import paths

REPO = Path(__file__).resolve().parents[1]
# The shared folder exactly as the code finds it ($CATDOG_SHARED, else ../shared); a path that
# does not exist when it is missing, so every test needing it skips instead of reading elsewhere.
SHARED = paths.shared_dir() or Path(os.environ.get("CATDOG_SHARED") or REPO.parent / "shared")
PET_IMAGES = SHARED / "data" / "PetImages"
WEIGHTS = paths.weights_dir()

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def need_shared() -> Path:
    """The shared folder, or skip the test with the reason."""
    if paths.shared_dir() is None:
        pytest.skip(f"shared folder not found at {SHARED} (set CATDOG_SHARED)")
    return SHARED


def need_imagenet_weights() -> None:
    """Skip unless the local ImageNet weights exist (Keras would otherwise try to download them)."""
    if paths.weights_dir() is None:
        pytest.skip("local ImageNet weights not found (set CATDOG_SHARED or CATDOG_WEIGHTS_DIR)")


def real_photos(label: str, n: int, start: int = 0) -> list[Path]:
    """The first ``n`` real photos of a class (sorted by number), from ../shared."""
    folder = PET_IMAGES / label.capitalize()
    if not folder.is_dir():
        pytest.skip(f"real photos not found at {folder} (set CATDOG_SHARED)")
    names = sorted(folder.iterdir(), key=lambda p: int(p.stem))
    return names[start:start + n]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep every test's scan cache out of ~/.cache."""
    monkeypatch.setenv("CATDOG_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def class_folders(tmp_path) -> Path:
    """``root/Cat`` and ``root/Dog`` with 12 real photos each (copied into tmp)."""
    root = tmp_path / "pets"
    for label in ("cat", "dog"):
        dest = root / label.capitalize()
        dest.mkdir(parents=True)
        for p in real_photos(label, 12):
            shutil.copy(p, dest / p.name)
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """16 real cats and 16 real dogs, linked (not copied) from ../shared into Cat/ and Dog/."""
    root = tmp_path_factory.mktemp("pets")
    for label in ("cat", "dog"):
        folder = root / label.capitalize()
        folder.mkdir()
        for photo in real_photos(label, 16):
            (folder / photo.name).symlink_to(photo)
    return root


def jpeg_bytes(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kwargs)
    return buf.getvalue()


def make_bad_files(folder: Path) -> dict[str, Path]:
    """Write one file of every awkward kind into ``folder``; returns name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
    good = jpeg_bytes(rgb)
    files = {
        "zero_byte": folder / "zero.jpg",
        "corrupt": folder / "corrupt.jpg",
        "truncated": folder / "truncated.jpg",
        "text_as_jpg": folder / "notes.jpg",
        "thumbs_db": folder / "Thumbs.db",
        "png_alpha": folder / "alpha.png",
        "grayscale": folder / "gray.jpg",
        "cmyk": folder / "cmyk.jpg",
        "palette_gif": folder / "palette.gif",
        "one_pixel": folder / "tiny.png",
        "webp": folder / "photo.webp",
        "exif_rotated": folder / "rotated.jpg",
        "non_ascii": folder / "chat_ü_猫.jpg",
    }
    files["zero_byte"].write_bytes(b"")
    files["corrupt"].write_bytes(b"\xff\xd8\xff\xe0" + bytes(rng.integers(0, 255, 500, dtype=np.uint8)))
    files["truncated"].write_bytes(good[: len(good) // 2])
    files["text_as_jpg"].write_text("this is not a picture\n")
    files["thumbs_db"].write_bytes(b"\xd0\xcf\x11\xe0" + b"\0" * 100)
    rgba = Image.fromarray(rng.integers(0, 255, (30, 30, 4), dtype=np.uint8), "RGBA")
    rgba.save(files["png_alpha"])
    rgb.convert("L").save(files["grayscale"], "JPEG")
    rgb.convert("CMYK").save(files["cmyk"], "JPEG")
    rgb.convert("P").save(files["palette_gif"])
    Image.new("RGB", (1, 1), (200, 10, 10)).save(files["one_pixel"])
    rgb.save(files["webp"], "WEBP")
    # 60 wide x 40 high stored, EXIF orientation 6 (rotate 90° CW on display) -> 40 wide x 60 high
    exif = Image.Exif()
    exif[0x0112] = 6
    files["exif_rotated"].write_bytes(jpeg_bytes(rgb, exif=exif.tobytes()))
    files["non_ascii"].write_bytes(good)
    return files


# What the shared smoke run sets over `--quick`: 16 real photos per class at 64 px, and the
# notebook extras on (user photos, methods compared, deletion test) so the notebook tests can
# check the same run instead of executing 01-05 a second time.
TINY_PIPELINE = {"max_per_class": 16, "image_size": 64, "finetune_layers": 5, "batch_size": 8, "n_samples": 4,
                 "openset_images": 20, "heatmaps": True, "n_gallery": 4, "n_images": 2, "compare_methods": True,
                 "faithfulness_images": 2, "colormap": "viridis", "alpha": 0.5, "n_predict": 3}


@pytest.fixture(scope="session")
def quick_pipeline(tiny_data, tmp_path_factory) -> tuple[Path, Path, dict]:
    """One `catdog pipeline --quick` (a config file plus -p overrides) on ``tiny_data``: (reports, run, config).

    The user-photo folder holds one real dog and one unreadable file.
    """
    from catdog import cli

    mine = tmp_path_factory.mktemp("mine")
    (mine / "my_dog.jpg").symlink_to(next(iter(sorted((tiny_data / "Dog").iterdir()))))
    (mine / "broken.jpg").write_bytes(b"not a photo")
    config = {**TINY_PIPELINE, "data_dir": str(tiny_data), "user_images_dir": str(mine)}
    reports = tmp_path_factory.mktemp("reports")
    config_file = tmp_path_factory.mktemp("config") / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(config))
    argv = ["pipeline", "--quick", "--config", str(config_file), "--reports", str(reports), "--name", "smoke",
            "-p", "head_epochs", "1", "-p", "finetune_epochs", "1"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CATDOG_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        assert cli.main(argv) == 0
    return reports, reports / "smoke", {**config, "head_epochs": 1, "finetune_epochs": 1}
