"""catdog: cat-vs-dog photo classification with transfer learning and Grad-CAM heatmaps.

Conventions used throughout the package:

- Class order is fixed: ``CLASS_NAMES = ("cat", "dog")``, so label 0 is cat and 1 is dog.
- Every model takes raw RGB pixels in 0..255 and outputs one sigmoid unit, p(dog).
  Its last Dense layer (named ``"logit"``) produces the logit, used by calibration and Grad-CAM.

Heavy modules (TensorFlow) are imported lazily, so ``import catdog`` is fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

CLASS_NAMES: tuple[str, str] = ("cat", "dog")


def load_model(path=None):
    """Load a saved catdog model (``.keras``); with no argument, the shipped model."""
    from catdog.models import load_model as _load

    return _load(path)
