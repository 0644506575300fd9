"""Reading images robustly: one decode path for scanning, training, prediction and heatmaps.

Every pixel catdog feeds a model comes from :func:`load_image`, so training, evaluation,
``catdog predict`` and Grad-CAM see identical inputs. Decoding uses Pillow because it
reads every format users have (JPEG, PNG, GIF, BMP, WebP), honours EXIF orientation,
and converts grayscale, palette, RGBA and CMYK images to RGB; ``tf.io.decode_image``
ignores EXIF orientation and does not read WebP.
"""

from __future__ import annotations

import warnings
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp"})
MAX_PIXELS = 50_000_000  # larger JPEGs are decoded downscaled; larger other formats are refused
log = logging.getLogger(__name__)
PathLike = str | os.PathLike
# Pillow's own bomb check would stop at ~179 MP; we apply MAX_PIXELS ourselves and
# decode big JPEGs at reduced scale, so raise Pillow's limit out of our way.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageError(ValueError):
    """An image that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class ImageInfo:
    """What a scan learns about one file."""

    width: int
    height: int
    format: str
    mode: str


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB; transparent pixels become white."""
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")  # L, 1, I, F, P, CMYK, YCbCr, LAB, HSV


def open_rgb(path: str | Path, max_side: int | None = None) -> Image.Image:
    """Decode ``path`` fully into an upright RGB image.

    ``max_side`` lets big JPEGs decode at a reduced scale (fast, low memory). Raises
    :class:`ImageError` for missing, empty, truncated, non-image or oversized files.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageError(path, f"cannot read file ({exc.strerror or exc})") from None
    if size == 0:
        raise ImageError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about odd EXIF/ICC data; we only need pixels
            img = Image.open(path)
            width, height = img.size
            if width * height > MAX_PIXELS or (max_side and max(width, height) > 2 * max_side):
                if img.format == "JPEG":
                    target = max_side or int(max(width, height) * (MAX_PIXELS / (width * height)) ** 0.5)
                    img.draft("RGB", (target, target))
                elif width * height > MAX_PIXELS:
                    raise ImageError(
                        path,
                        f"image too large ({width}x{height} = {width * height / 1e6:.0f} MP, "
                        f"limit {MAX_PIXELS / 1e6:.0f} MP for non-JPEG files)",
                    )
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(path, "not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(path, f"cannot decode image ({exc})") from None


def probe(path: str | Path) -> ImageInfo:
    """Fully decode ``path`` once and describe it; raises :class:`ImageError` if unusable."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with Image.open(path) as raw:
                fmt, mode = raw.format or "?", raw.mode
        except Exception:  # open_rgb below produces the precise message
            fmt, mode = "?", "?"
    img = open_rgb(path, max_side=1024)
    return ImageInfo(img.width, img.height, fmt, mode)


def load_image(path: str | Path, size: int | tuple[int, int]) -> np.ndarray:
    """Return ``path`` as a ``(H, W, 3)`` uint8 RGB array resized to ``size`` (bilinear, antialiased)."""
    height, width = (size, size) if isinstance(size, int) else size
    img = open_rgb(path, max_side=max(height, width))
    if img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def load_original(path: str | Path, max_side: int = 2048) -> np.ndarray:
    """Return ``path`` as an upright RGB uint8 array at its own resolution (capped at ``max_side``)."""
    img = open_rgb(path, max_side=max_side)
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8)


def is_image_name(path: str | Path) -> bool:
    """True if ``path`` has an image file extension catdog reads."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


@dataclass
class Batch:
    """Images decoded for a model, with what could not be read.

    ``paths`` are the files kept (input order), ``inputs`` their ``(N, size, size, 3)`` uint8
    model inputs, ``originals`` their upright RGB arrays at (capped) own resolution when asked
    for, and ``errors`` ``(path, reason)`` for every file left out.
    """

    paths: list[Path]
    inputs: np.ndarray
    originals: list[np.ndarray] | None
    errors: list[tuple[Path, str]]


def load_batch(paths: Iterable[PathLike], size: int, *, originals: bool = False, max_side: int = 512,
               limit: int | None = None) -> Batch:
    """Decode ``paths`` for a model of input ``size`` (and their originals); unreadable files are listed, not fatal.

    ``limit`` stops after that many readable files. Any decoding failure, not only
    :class:`ImageError`, becomes an error entry: one odd file never stops a batch.
    """
    kept, inputs, full, errors = [], [], [], []
    for path in paths:
        if limit is not None and len(kept) >= limit:
            break
        path = Path(path)
        try:
            image = load_image(path, size)
            original = load_original(path, max_side) if originals else None
        except ImageError as exc:
            errors.append((path, exc.reason))
            continue
        except Exception as exc:  # noqa: BLE001 - a decoder bug on one file must not lose the batch
            errors.append((path, f"{type(exc).__name__}: {exc}"))
            continue
        kept.append(path)
        inputs.append(image)
        if originals:
            full.append(original)
    stacked = np.stack(inputs) if inputs else np.zeros((0, size, size, 3), np.uint8)
    return Batch(kept, stacked, full if originals else None, errors)


# ---------------------------------------------------------------- finding image files
def walk_images(folder: Path) -> Iterator[Path]:
    """Image files below ``folder``, depth-first, sorted by name; one directory listing in memory at a time."""
    try:
        with os.scandir(folder) as it:
            entries = sorted(((e.name, e.path, e.is_dir(follow_symlinks=False)) for e in it
                              if not e.name.startswith(".")), key=lambda e: e[0])
    except OSError as exc:
        log.warning("skipping unreadable folder %s: %s", folder, exc.strerror or exc)
        return
    for name, path, is_dir in entries:
        if is_dir:
            yield from walk_images(Path(path))
        elif is_image_name(name) and os.path.isfile(path):
            yield Path(path)


def as_paths(paths: PathLike | Iterable[PathLike]) -> list[Path]:
    """One path or many, as a list of Paths."""
    if isinstance(paths, (str, os.PathLike)):
        return [Path(paths)]
    return [Path(p) for p in paths]


def iter_image_files(paths: PathLike | Iterable[PathLike]) -> Iterator[Path]:
    """Image files named by ``paths`` (files as given; folders walked recursively, sorted), lazily.

    Checks every argument up front: a missing path raises FileNotFoundError and a folder
    without image files ValueError, before anything is yielded. Files named explicitly are
    yielded whatever their extension (an unreadable one becomes an ``error`` row later).
    """
    roots = as_paths(paths)
    if not roots:
        raise ValueError("no paths given")
    for root in roots:
        if not root.exists():
            raise FileNotFoundError(f"no such file or folder: {root}")
        if root.is_dir() and next(walk_images(root), None) is None:
            raise ValueError(f"no image files in {root} (looked recursively for "
                             f"{', '.join(sorted(IMAGE_EXTENSIONS))})")

    def generate() -> Iterator[Path]:
        for root in roots:
            if root.is_dir():
                yield from walk_images(root)
            else:
                yield root

    return generate()
