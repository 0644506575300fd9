"""A saved model with everything known about it: one object for prediction, evaluation and heatmaps.

:class:`Bundle` holds a model file's Keras model (or its TFLite export), its
:class:`~catdog.card.ModelCard`, the calibration (temperature) and decision threshold, and
its "neither" detector. Every job (``catdog predict``, ``evaluate``, ``explain``, the
benchmarks, the notebooks) gets model facts from a bundle and nowhere else. The heavy parts
(the Keras model, the runner, the detector, the heatmap explainer) are loaded on first use, so
a TFLite bundle never loads Keras weights, and never imports TensorFlow: the modules that need it
are imported by the properties that use them, which makes ``catdog predict`` with a current export
start in about a second instead of five.
"""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from catdog import paths
from catdog.card import ModelCard
from catdog.metrics import apply_temperature
from catdog.openset import OpenSetDetector, load_for_model, openset_path
from catdog.tflite import TFLiteRunner, check_export, tflite_path

if TYPE_CHECKING:
    import keras

    from catdog.gradcam import CamExplainer
    from catdog.inference import KerasRunner

log = logging.getLogger(__name__)

ENGINES = ("auto", "keras", "tflite")


class Bundle:
    """One saved model (``.keras``) and its card, calibration, "neither" detector and runner."""

    def __init__(self, path: Path, card: ModelCard | None, *, engine: str = "auto", variant: str = "float32",
                 num_threads: int | None = None, model: keras.Model | None = None):
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r}; choose from {ENGINES}")
        self.path, self.card, self.requested_engine, self.variant = Path(path), card, engine, variant
        self.num_threads = num_threads
        if model is not None and engine == "auto":
            self.requested_engine = "keras"  # a model given in memory has no export on disk to match
        self._stale_detector = False  # set once a stale detector has been skipped (warned about)
        if model is not None:
            self.__dict__["model"] = model  # a given model fills the cached property

    @classmethod
    def load(cls, path: str | Path | None = None, *, engine: str = "auto", variant: str = "float32",
             num_threads: int | None = None) -> Bundle:
        """The bundle of ``path`` (default: the shipped model, or ``$CATDOG_MODEL``).

        ``engine``: ``"keras"`` runs the Keras graph; ``"tflite"`` the ``variant`` export beside the model
        (an error if it is missing or stale); ``"auto"`` (default) the float32 export when a current one
        sits beside the model (the same numbers to about 1e-4, about 2x faster on CPU), else Keras.

        A model without a card is usable: it is then uncalibrated (temperature 1) with threshold 0.5,
        and a warning says so.
        """
        path = Path(path) if path else paths.default_model_path()
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path} (train one with `catdog train` or "
                                    "notebooks/02_train.ipynb)")
        card = ModelCard.read(path)
        if card is None:
            log.warning("%s has no model card: using temperature 1 (uncalibrated) and threshold 0.5", path)
        return cls(path, card, engine=engine, variant=variant, num_threads=num_threads)

    # ------------------------------------------------------------ facts
    @cached_property
    def engine(self) -> str:
        """What runs the model: ``"keras"`` or ``"tflite"`` (``"auto"`` resolved on first use)."""
        if self.requested_engine != "auto":
            return self.requested_engine
        file = tflite_path(self.path, "float32")
        if not file.is_file():
            log.info("running the Keras model; `catdog export --variants float32` makes prediction about 2x faster")
            return "keras"
        try:
            branch = self.detector.branch if self.has_detector else None
            check_export(self.path, file, branch=branch)
        except ValueError as exc:  # a stale export (or detector) must not decide; the Keras graph is always right
            log.warning("%s; running the Keras model instead", exc)
            return "keras"
        self.variant = "float32"
        return "tflite"

    @property
    def temperature(self) -> float:
        """Calibration: p(dog) = sigmoid(logit / temperature)."""
        return self.card.temperature if self.card else 1.0

    @property
    def threshold(self) -> float:
        """Predicted dog when calibrated p(dog) >= threshold."""
        return self.card.threshold if self.card else 0.5

    @property
    def manifest(self) -> Path | None:
        """The data manifest the model was trained on, if its card names one."""
        return self.card.manifest_path if self.card else None

    @property
    def history(self) -> Path | None:
        """The training history CSV, if the card names one and it exists."""
        path = self.card.history_path if self.card else None
        return path if path is not None and path.is_file() else None

    @property
    def image_size(self) -> int:
        """The square input size the model runs at."""
        if "model" in self.__dict__ or self.engine == "keras":
            return int(self.model.inputs[0].shape[1])
        return self.runner.image_size

    def require_manifest(self) -> Path:
        """The training manifest; ValueError naming the model when its card has none."""
        if self.manifest is None:
            raise ValueError(f"{self.path}: its card names no data manifest; pass one (--manifest)")
        return self.manifest

    # ------------------------------------------------------------ loaded on first use
    @cached_property
    def model(self) -> keras.Model:
        """The Keras model (loaded on first use)."""
        from catdog.models import load_model

        return load_model(self.path)

    @cached_property
    def runner(self) -> KerasRunner | TFLiteRunner:
        """What computes logits and features: a compiled Keras function or the TFLite interpreter.

        The Keras runner here has no pet branch (prediction without rejection pays nothing for it);
        a TFLite export carries whatever outputs it was exported with.
        """
        if self.engine == "keras":
            from catdog.inference import KerasRunner

            return KerasRunner(self.model)
        file = tflite_path(self.path, self.variant)
        if not file.is_file():
            raise FileNotFoundError(f"{file} not found: export it first (`catdog export`)")
        check_export(self.path, file)
        runner = TFLiteRunner(file, self.num_threads)
        if self.has_detector and "features" not in runner.outputs:
            raise ValueError(f"{file} has no 'features' output, needed for the 'neither' scores; re-export it")
        return runner

    @cached_property
    def rejecting_runner(self) -> KerasRunner | TFLiteRunner:
        """The runner for prediction with rejection: also computes ``pet_prob`` when the detector's rule needs it.

        Keras: the classifier plus the detector's frozen ImageNet branch in one traced function.
        TFLite: the exported file, which must carry a ``pet_prob`` output.
        """
        detector = self.detector
        branch = detector.branch if detector is not None else None
        if branch is None:
            return self.runner
        if self.engine == "keras":
            from catdog.inference import KerasRunner

            return KerasRunner(self.model, branch=branch)
        needed = ["pet_prob"] + (["wild_prob"] if detector.needs_wild else [])
        missing = [name for name in needed if name not in self.runner.outputs]
        if missing:
            raise ValueError(f"{self.runner.path} has no {' or '.join(map(repr, missing))} output, needed by the "
                             f"'neither' detector ({branch[0]} at {branch[1]} px); re-export it (`catdog export`)")
        check_export(self.path, self.runner.path, branch=branch)
        return self.runner

    @property
    def has_detector(self) -> bool:
        """True when a "neither" detector file sits beside the model."""
        return openset_path(self.path).is_file()

    @cached_property
    def detector(self) -> OpenSetDetector | None:
        """The "neither" detector fitted on this model file (None if there is none).

        ValueError if the detector file beside the model was fitted on other model bytes (stale).
        """
        return load_for_model(self.path) if self.has_detector else None

    def _scoring_detector(self, reject: bool) -> OpenSetDetector | None:
        """The detector that scores a batch: a stale one is fatal when rejecting, else skipped with a warning."""
        if reject or not self._stale_detector:
            try:
                return self.detector
            except ValueError as exc:
                if reject:
                    raise
                log.warning("%s; ood_score left empty", exc)
                self._stale_detector = True
        return None

    @cached_property
    def explainer(self) -> CamExplainer:
        """Grad-CAM / Grad-CAM++ / Score-CAM for this model (compiled once, reused)."""
        from catdog.gradcam import CamExplainer

        return CamExplainer(self.model)

    # ------------------------------------------------------------ numbers
    def calibrated(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated p(dog) for logits."""
        return apply_temperature(logits, self.temperature)

    def predict(self, images: np.ndarray, *, reject: bool = True) -> dict[str, np.ndarray]:
        """Calibrated numbers for a batch of 0..255 RGB images at :attr:`image_size`.

        Returns ``logit``, ``p_dog`` (calibrated), ``ood_score`` (the feature distance; NaN without a
        detector), ``pet_prob`` and ``wild_prob`` (ImageNet probabilities of a pet and of a wild look-alike
        from the detector's frozen branch; NaN when not computed, e.g. ``reject`` off) and ``neither`` (True where the detector's rule rejects the
        image, see :meth:`catdog.openset.OpenSetDetector.decide`; never when ``reject`` is off).
        A stale detector is an error when ``reject`` is on; off, it is skipped (NaN scores, one warning).
        """
        detector = self._scoring_detector(reject)
        out = (self.rejecting_runner if reject and detector is not None else self.runner).predict(images)
        logits = out["logit"].astype(np.float64)
        nan = np.full(len(logits), np.nan)
        pet = out["pet_prob"].astype(np.float64) if "pet_prob" in out else nan
        wild = out["wild_prob"].astype(np.float64) if "wild_prob" in out else nan
        if detector is not None:
            score = detector.score(out["features"])
            neither = detector.decide(score, pet, wild) & reject if reject else np.zeros(len(logits), bool)
        else:
            score, neither = nan, np.zeros(len(logits), bool)
        return {"logit": logits, "p_dog": self.calibrated(logits), "ood_score": score, "pet_prob": pet,
                "wild_prob": wild, "neither": neither}

    def at_input_size(self, image_size: int) -> Bundle:
        """The same weights, card and calibration, run at another square input size (Keras engine)."""
        from catdog.models import with_input_size

        model = with_input_size(self.model, image_size)
        return Bundle(self.path, self.card, engine="keras", model=model)
