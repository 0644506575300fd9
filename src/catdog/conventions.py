"""The contract every part of catdog relies on: class order, the model's named layers, the version.

- Class order is fixed: ``CLASS_NAMES = ("cat", "dog")``, so label 0 is cat and 1 is dog.
- Every model takes raw RGB pixels in 0..255 and outputs one sigmoid unit, p(dog). Its last
  Dense layer (:data:`LOGIT_LAYER`) produces the logit, used by calibration and the heatmaps;
  :data:`FEATURES_LAYER` is the pooled backbone output, used by the "neither" detector.
"""

from __future__ import annotations

VERSION = "0.1.0"
CLASS_NAMES: tuple[str, str] = ("cat", "dog")
LOGIT_LAYER = "logit"
FEATURES_LAYER = "pool"
# Prediction outputs that are one number per image: graphs give them as (n, 1), runners return (n,).
SCALAR_OUTPUTS = ("logit", "pet_prob", "wild_prob")
# TensorFlow Lite exports, <stem>.<variant>.tflite beside the model (see catdog.export), and those
# `catdog export` writes by default.
TFLITE_VARIANTS = ("float32", "float16", "dynamic", "int8")
DEFAULT_TFLITE_VARIANTS = ("float32", "float16", "int8")
PetBranch = tuple[str, int]  # a frozen ImageNet network for "neither": (EfficientNet-Lite variant, input size)
