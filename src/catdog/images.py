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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".heic", ".heif"})
# Formats a camera or phone writes that Pillow reads only through a plugin: named in the error.
PLUGIN_FORMATS = {".heic": "HEIC", ".heif": "HEIF"}
MAX_PIXELS = 50_000_000  # larger JPEGs are decoded downscaled; larger other formats are refused
log = logging.getLogger(__name__)
PathLike = str | os.PathLike
# Pillow's own bomb check would stop at ~179 MP; we apply MAX_PIXELS ourselves and
# decode big JPEGs at reduced scale, so raise Pillow's limit out of our way.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Below this many pixels on the short side a photo is not judged: `catdog predict` says "too small" and why,
# instead of a silent guess (CIFAR-size 32 px pets were classified at chance and mostly called "neither").
MIN_SIDE = 64


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


def _to_8bit(img: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float grayscale image scaled to 8-bit "L".

    Pillow's own ``convert`` clips these at 255, which turns most 16-bit photos pure white.
    16-bit and wider integers are scaled by their type's range (``I`` holds 16-bit PNGs
    and TIFFs, so values above 255 mean a 16-bit range); floats in [0, 1] by 255.
    """
    values = np.asarray(img)
    if img.mode == "F":
        values = np.nan_to_num(values.astype(np.float64))
        scale = 255.0 if values.max(initial=0.0) <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.round(values * scale), 0, 255).astype(np.uint8), "L")
    values = values.astype(np.int64)
    if img.mode.startswith("I;16") or values.max(initial=0) > 255:
        values = np.clip(values, 0, 65535) * 255 // 65535
    return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), "L")


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB; transparent pixels become white, high bit depths are scaled."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        return _to_8bit(img).convert("RGB")
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
    return open_rgb_sized(path, max_side)[0]


def open_rgb_sized(path: str | Path, max_side: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """:func:`open_rgb` plus the file's own upright ``(width, height)``, read from the header (no second decode)."""
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
            decoded = img.size
            img = ImageOps.exif_transpose(img)
            original = (height, width) if img.size != decoded else (width, height)  # EXIF rotated by 90 degrees
            return _to_rgb(img), original
    except ImageError:
        raise
    except UnidentifiedImageError:
        fmt = PLUGIN_FORMATS.get(path.suffix.lower())
        if fmt:
            raise ImageError(path, f"{fmt} image: Pillow reads {fmt} only with the pillow-heif plugin, "
                                   "which is not installed (convert the file to JPEG or PNG)") from None
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
    return load_image_sized(path, size)[0]


def load_image_sized(path: str | Path, size: int | tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`load_image` plus the file's own upright ``(width, height)`` (e.g. to flag photos too small to judge)."""
    height, width = (size, size) if isinstance(size, int) else size
    img, original = open_rgb_sized(path, max_side=max(height, width))
    if img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8), original


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
    for, ``errors`` ``(path, reason)`` for every file left out, and ``sizes`` each kept file's
    own upright ``(width, height)``.
    """

    paths: list[Path]
    inputs: np.ndarray
    originals: list[np.ndarray] | None
    errors: list[tuple[Path, str]]
    sizes: list[tuple[int, int]] = field(default_factory=list)


def load_batch(paths: Iterable[PathLike], size: int, *, originals: bool = False, max_side: int = 512,
               limit: int | None = None) -> Batch:
    """Decode ``paths`` for a model of input ``size`` (and their originals); unreadable files are listed, not fatal.

    ``limit`` stops after that many readable files. Any decoding failure, not only
    :class:`ImageError`, becomes an error entry: one odd file never stops a batch.
    """
    kept, inputs, full, errors, sizes = [], [], [], [], []
    for path in paths:
        if limit is not None and len(kept) >= limit:
            break
        path = Path(path)
        try:
            image, own_size = load_image_sized(path, size)
            original = load_original(path, max_side) if originals else None
        except ImageError as exc:
            errors.append((path, exc.reason))
            continue
        except Exception as exc:  # noqa: BLE001 - a decoder bug on one file must not lose the batch
            errors.append((path, f"{type(exc).__name__}: {exc}"))
            continue
        kept.append(path)
        inputs.append(image)
        sizes.append(own_size)
        if originals:
            full.append(original)
    stacked = np.stack(inputs) if inputs else np.zeros((0, size, size, 3), np.uint8)
    return Batch(kept, stacked, full if originals else None, errors, sizes)


# ---------------------------------------------------------------- finding image files
def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symlinks: a linked sub-folder is walked like any other
    except OSError:
        return False


def walk_files(folder: PathLike, _seen: set[tuple[int, int]] | None = None) -> Iterator[Path]:
    """Every non-hidden file below ``folder``, depth-first, sorted by name, following symlinked folders.

    A folder reached twice (a symlink loop, or two links to one folder) is walked once and
    logged. One directory listing is in memory at a time.
    """
    seen = set() if _seen is None else _seen
    try:
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen:
            log.warning("not following %s again: it leads to a folder already walked (symlink loop?)", folder)
            return
        seen.add((st.st_dev, st.st_ino))
        with os.scandir(folder) as it:
            entries = sorted(((e.name, e.path, _is_dir(e)) for e in it if not e.name.startswith(".")),
                             key=lambda e: e[0])
    except OSError as exc:
        log.warning("skipping unreadable folder %s: %s", folder, exc.strerror or exc)
        return
    for name, path, is_dir in entries:
        if is_dir:
            yield from walk_files(path, seen)
        elif os.path.isfile(path):
            yield Path(path)
        elif os.path.islink(path):  # a dangling link: say so rather than lose the file silently
            log.warning("skipping broken symlink %s -> %s", path, os.readlink(path))


def walk_images(folder: Path) -> Iterator[Path]:
    """Image files (by extension) below ``folder``: :func:`walk_files` filtered by :func:`is_image_name`."""
    return (p for p in walk_files(folder) if is_image_name(p.name))


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
