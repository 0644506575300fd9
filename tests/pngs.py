"""Checks that a written figure is a real, drawn PNG of the expected size, not merely a file that exists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from catdog.figures import DPI

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# An image table whose cells are empty has ~200 distinct colours (text, anti-aliasing) and a
# plot a few hundred to ~1,500; one showing photos or heatmap overlays has tens of thousands.
PHOTO_COLOURS = 5000


def png_pixels(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """The RGB pixels of a valid, non-blank PNG (of ``size`` = (width, height) when given)."""
    path = Path(path)
    assert path.is_file(), f"{path} was not written"
    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    with Image.open(path) as image:
        image.verify()  # a truncated or corrupt file fails here
    with Image.open(path) as image:
        assert size is None or image.size == size, f"{path.name} is {image.size} px, expected {size}"
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 0, f"{path.name} is blank"
    return pixels


def shows_photos(pixels: np.ndarray) -> bool:
    """True when an image holds photographic content (many distinct colours), not only text and lines."""
    return len(np.unique(pixels.reshape(-1, 3), axis=0)) > PHOTO_COLOURS


def figure_size(width_in: float, height_in: float) -> tuple[int, int]:
    """Pixel size of a figure of this many inches, as catdog.figures saves it."""
    return round(width_in * DPI), round(height_in * DPI)


def table_size(rows: int, cols: int, cell: float = 2.4, row_titles: bool = True) -> tuple[int, int]:
    """Pixel size of ``catdog.figures.image_table_figure`` with this many rows and columns."""
    return figure_size(cell * cols + (1.2 if row_titles else 0), cell * max(rows, 1) + 0.6)
