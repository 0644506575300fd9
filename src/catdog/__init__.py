"""catdog: cat-vs-dog photo classification with transfer learning and Grad-CAM heatmaps.

The conventions every part relies on are in :mod:`catdog.conventions`: class order
``("cat", "dog")``, raw RGB 0..255 in, one sigmoid output p(dog) after a Dense layer named
``"logit"``. A saved model and everything known about it (card, calibration, "neither"
detector) is one :class:`catdog.bundle.Bundle`.

Heavy modules (TensorFlow) are imported lazily, so ``import catdog`` is fast.
"""

from __future__ import annotations

from catdog.conventions import CLASS_NAMES, VERSION

__version__ = VERSION


def load(path=None, **options):
    """A saved model as a :class:`catdog.bundle.Bundle`; with no argument, the shipped model."""
    from catdog.bundle import Bundle

    return Bundle.load(path, **options)


def load_model(path=None):
    """Load a saved catdog Keras model (``.keras``); with no argument, the shipped model."""
    return load(path).model

__all__ = ["CLASS_NAMES", "VERSION", "__version__", "load", "load_model"]
