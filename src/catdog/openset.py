"""Open-set rejection: flag images that are neither a cat nor a dog.

A two-class sigmoid always answers "cat" or "dog", often confidently, for a photo of a
rocket or a screenshot of text. :class:`OpenSetDetector` scores how unlike the training
photos an image's pooled backbone features (layer ``"pool"``) are; prediction
(:meth:`catdog.bundle.Bundle.predict`, ``catdog predict``) labels images scoring above the
stored threshold ``"neither"``. How often it rejects non-pet images and real pets is measured
by :func:`catdog.benchmarks.openset_report`.

Method: class-conditional Gaussians with one shared covariance on the trained model's
pooled features, score = the smaller Mahalanobis distance to the two class means (Lee et al.
2018, "A simple unified framework for detecting out-of-distribution samples", without input
pre-processing or layer ensembles), computed on L2-normalised features (Mueller & Hein 2025,
"Mahalanobis++"). The normalisation matters: feature norms vary a lot between images, and on
raw features flat colours, noise and gradients landed *closer* to the class means than real
pets did (measured with ImageNet MobileNetV2 at 224 px, 500 train photos per class: raw
features rejected 53% of real non-pet photos and 66% of synthetic images, normalised ones
100% and 97%, each at a 0.7% false-rejection rate on held-out pets).
Chosen over kNN distance because the detector stays small and fixed-size (two means + one
d x d precision matrix, ~6.5 MB at d=1280, whatever the train set size; kNN must ship every
train feature), scoring is one matrix product per class, and it was at least as good as
kNN (k = 1 or 10, also normalised) in the same measurement.
The covariance is estimated with Ledoit-Wolf shrinkage (``sklearn.covariance.LedoitWolf``):
the plain empirical covariance is singular whenever there are fewer train images than
feature dimensions (smoke runs) and badly conditioned otherwise.

The threshold is the ``quantile`` (default 99th percentile) of the scores of *validation*
photos, so at most 1% of real cat/dog photos like the validation set are rejected.

That distance alone learned "looks like PetImages", not "contains a cat or a dog": it
rejected 11% of Oxford-IIIT dog photos and let 65% of cougars and raccoons through. So the
decision also uses what the photo shows: ``pet_prob``, the ImageNet probability of a dog breed
or domestic cat, and ``wild_prob``, that of a wild relative or look-alike (wolves, foxes, wild
cats, weasels and badgers), both from a FROZEN EfficientNet-Lite (:func:`catdog.inference.pet_branch`,
run in the same batched pass as the classifier). The shipped rule (:meth:`OpenSetDetector.decide`)
is a logistic combination, :data:`LOGISTIC`::

    neither = w1 * z + w2 * logit(pet_prob) + w3 * log(wild_prob / pet_prob) + b > 0

with ``z`` the distance in the model's own calibration units (:meth:`OpenSetDetector.relative_distance`):
a photo far from the training photos, not pet-like, or more like a cougar, fox or badger than like any
pet is rejected, each signal making up for the others. The threshold rule it replaced (still available
with ``logistic=None``)::

    neither = pet_prob < pet_low  or  (pet_prob < pet_high and distance > threshold)
              or  wild_prob > wild_ratio * pet_prob

:data:`PET_BRANCH`, :data:`PET_LOW`, :data:`PET_HIGH`, :data:`WILD_RATIO`, :data:`QUANTILE` and
:data:`LOGISTIC` are defaults chosen once on the *tune* half of the crosscheck collection
(:func:`catdog.benchmarks.crosscheck_half`, :func:`catdog.benchmarks.openset_design_search`,
:func:`catdog.benchmarks.openset_logistic_cv`) and reported on the other half in
``reports/benchmarks/openset.md``; :func:`fit_openset` itself uses PetImages train/validation
only, so anyone can refit. A detector file without a branch (older files) uses the distance alone.
The detector is saved beside the model as ``<stem>.openset.npz`` together with the SHA-256 of
the model file it was fitted on; loading it for a different model file is refused.

Only fitting (:func:`fit_openset`) imports TensorFlow, inside the function: loading and applying a
detector is numpy, so prediction from a TFLite file never pays for that import.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.covariance import LedoitWolf
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from catdog import paths
from catdog.card import ModelCard
from catdog.conventions import PetBranch
from catdog.data import Item, labels_of, manifest_hash, read_manifest, seeded_subset

if TYPE_CHECKING:
    import keras

# Defaults chosen on the tune half of crosscheck by `catdog bench openset-design` (reports/benchmarks/
# openset_design.md; how, in reports/NEITHER_DESIGN.md): among four frozen branches, two sources of the distance
# and a grid of rules, the best mean of near-miss and non-pet-photo rejection on the tune half with at most 2% of
# tune pet photos and 1% of PetImages validation photos rejected, within the 1.5x cost budget (1.36x measured).
# Tune half: 1.9% of pet photos, 89.9% of near misses, 95.4% of non-pet photos rejected. The wild rule is what
# catches cougars and raccoons (without it, at most 78% of near misses on any branch); the distance on the
# frozen branch's own features did worse than on the classifier's (at most 93.7% of non-pet photos).
PET_BRANCH: PetBranch = ("efficientnet_lite1", 240)
PET_LOW = 0.0  # below: "neither" whatever the distance (no such term was better)
PET_HIGH = 0.7  # at or above: kept whatever the distance (unless the wild rule rejects it)
WILD_RATIO: float | None = 2.0  # "neither" when wild_prob > WILD_RATIO * pet_prob; None: no wild rule
QUANTILE = 0.995  # the distance threshold: this quantile of validation distances
# The shipped rule since round 4 (reports/NEITHER_DESIGN.md): a logistic combination of RULE_SIGNALS, chosen over
# the threshold rule above by 5-fold cross-validation on the tune half (`catdog bench openset-logistic`,
# reports/benchmarks/openset_logistic_cv.md; cross-validated score 0.966 against 0.921, pet photos 1.9% against
# 2.3%) and then fitted on the whole tune half with the shipped model: (weights, bias) of "neither when
# rule_signals(z, pet_prob, wild_prob) @ weights + bias > 0", cut so that at most 2% of tune pet photos and 1% of
# the PetImages calibration photos are rejected. z is the distance in the model's own calibration units
# (OpenSetDetector.relative_distance), so a detector fitted for another model applies the same weights to its own z;
# they were fitted for the shipped model's. `catdog bench openset-logistic --model yours.keras` fits them for
# another model (its JSON's "whole_tune_half_fit"), to pass as fit_openset(..., logistic=(weights, bias)).
LOGISTIC: tuple[tuple[float, float, float], float] | None = (
    (4.9177737628019615, -0.5069530317132285, 1.2746477377882763), -3.0742183189770533)
RULE_SIGNALS = ("z", "logit(pet_prob)", "log(wild_prob / pet_prob)")

METHOD = ("class-conditional Mahalanobis distance on L2-normalised pooled features, shared Ledoit-Wolf "
          "covariance (Lee et al. 2018; Mueller & Hein 2025); score = min over the two classes")


def _normalize(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float64); an all-zero row stays zero."""
    x = np.atleast_2d(np.asarray(features, np.float64))
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def rule_signals(distance: np.ndarray, pet_prob: np.ndarray, wild_prob: np.ndarray) -> np.ndarray:
    """``(n, 3)``: the distance as given, ``logit(pet_prob)`` and ``log(wild_prob / pet_prob)``, the
    probabilities clipped to [1e-6, 1 - 1e-6] so that exact 0s and 1s stay finite."""
    pet = np.clip(np.asarray(pet_prob, np.float64), 1e-6, 1 - 1e-6)
    wild = np.clip(np.asarray(wild_prob, np.float64), 1e-6, 1 - 1e-6)
    return np.column_stack([np.asarray(distance, np.float64), np.log(pet / (1 - pet)), np.log(wild / pet)])


def fit_logistic(pets: np.ndarray, non_pets: np.ndarray, petimages: np.ndarray, *, max_pets: float = 0.02,
                 max_petimages: float = 0.01) -> tuple[tuple[float, ...], float]:
    """``(weights, bias)``: "neither" where ``rows @ weights + bias > 0``, for :func:`rule_signals` rows.

    Logistic regression of pet photos and PetImages photos (0) against non-pet photos (1) on standardised
    signals with balanced class weights (scikit-learn), then cut at the most rejecting value that keeps at most
    ``max_pets`` of ``pets`` and ``max_petimages`` of ``petimages`` rejected. The standardisation and the cut
    are folded into the returned weights and bias, so applying them needs numpy only.
    """
    x = np.concatenate([pets, petimages, non_pets])
    y = np.r_[np.zeros(len(pets) + len(petimages)), np.ones(len(non_pets))]
    model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced")).fit(x, y)
    scaler, regression = model[0], model[1]
    weights = regression.coef_[0] / scaler.scale_
    bias = float(regression.intercept_[0] - weights @ scaler.mean_)
    # "higher": observed values, so at most that share of each set lies above the cut (as calibrate does)
    cut = max(np.quantile(pets @ weights + bias, 1 - max_pets, method="higher"),
              np.quantile(petimages @ weights + bias, 1 - max_petimages, method="higher"))
    return tuple(float(w) for w in weights), bias - float(cut)


def openset_path(model_path: str | Path) -> Path:
    """``<stem>.openset.npz`` beside the model."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + ".openset.npz")


@dataclass
class OpenSetDetector:
    """Mahalanobis distance of normalised pooled features to the nearer class mean; high = unlike cats and dogs."""

    means: np.ndarray  # (2, d): cat, dog
    precision: np.ndarray  # (d, d) shared inverse covariance
    threshold: float = float("inf")  # reject when score > threshold
    info: dict[str, Any] = field(default_factory=dict)
    branch: PetBranch | None = None  # the frozen ImageNet network giving pet_prob; None = distance alone
    pet_low: float = PET_LOW
    pet_high: float = PET_HIGH
    wild_ratio: float | None = None  # reject when wild_prob > wild_ratio * pet_prob; None: no such rule
    logistic: tuple[tuple[float, ...], float] | None = None  # (weights, bias): replaces the threshold rule

    def with_rule(self, branch: PetBranch | None = PET_BRANCH, pet_low: float = PET_LOW,
                  pet_high: float = PET_HIGH, wild_ratio: float | None = WILD_RATIO,
                  logistic: tuple[tuple[float, ...], float] | None = None) -> OpenSetDetector:
        """Set the decision rule (see :meth:`decide`); ``branch=None`` keeps the distance alone.

        With ``logistic`` (``(weights, bias)`` on :func:`rule_signals`) the logistic combination decides and
        ``pet_low``, ``pet_high`` and ``wild_ratio`` are kept for reference only.
        """
        if not 0 <= pet_low <= pet_high <= 1:
            raise ValueError(f"need 0 <= pet_low <= pet_high <= 1, got {pet_low}, {pet_high}")
        if wild_ratio is not None and not wild_ratio > 0:
            raise ValueError(f"wild_ratio must be None or > 0, got {wild_ratio}")
        if logistic is not None and len(logistic[0]) != len(RULE_SIGNALS):
            raise ValueError(f"logistic weights need {len(RULE_SIGNALS)} values ({', '.join(RULE_SIGNALS)}), "
                             f"got {len(logistic[0])}")
        median = self.info.get("validation_score_median", float("nan"))
        if logistic is not None and branch is not None and not self.threshold > median:
            # z would divide by zero (or be undefined), and every comparison with NaN says "keep"
            raise ValueError(f"the logistic rule measures the distance from the median validation distance "
                             f"({median:.3f}) to the threshold ({self.threshold:.3f}), which needs a calibrated "
                             "detector with the threshold above the median: calibrate it on more, varied photos")
        self.branch = None if branch is None else (str(branch[0]), int(branch[1]))
        self.pet_low, self.pet_high = float(pet_low), float(pet_high)
        self.wild_ratio = None if wild_ratio is None or branch is None else float(wild_ratio)
        self.logistic = (None if logistic is None or branch is None
                         else (tuple(float(w) for w in logistic[0]), float(logistic[1])))
        self.info["rule"] = self.rule_text()
        return self

    @property
    def needs_wild(self) -> bool:
        """True when the rule reads ``wild_prob`` (the wild rule or the logistic combination)."""
        return self.wild_ratio is not None or self.logistic is not None

    def relative_distance(self, distance: np.ndarray) -> np.ndarray:
        """The distance in this model's own units: 0 at the median of its validation distances, 1 at its threshold.

        The logistic weights act on this ``z``, not on the raw distance, whose scale differs from model to model.
        """
        median = self.info["validation_score_median"]
        return (np.asarray(distance, np.float64) - median) / (self.threshold - median)

    def rule_text(self) -> str:
        """The decision rule in words, with its constants."""
        if self.branch is None:
            return f"distance > {self.threshold:.3f}"
        source = f"pet_prob and wild_prob from a frozen ImageNet {self.branch[0]} at {self.branch[1]} px"
        if self.logistic is not None:
            terms = " ".join(f"{w:+.4g} x {name}" for w, name in zip(self.logistic[0], RULE_SIGNALS))
            median = self.info.get("validation_score_median", float("nan"))
            return (f"{terms} {self.logistic[1]:+.4g} > 0, z = (distance - {median:.3f}) / "
                    f"({self.threshold:.3f} - {median:.3f}); {source}")
        wild = "" if self.wild_ratio is None else f" or wild_prob > {self.wild_ratio:g} x pet_prob"
        return (f"pet_prob < {self.pet_low} or (pet_prob < {self.pet_high} and distance > {self.threshold:.3f})"
                f"{wild}; {source}")

    def decide(self, distance: np.ndarray, pet_prob: np.ndarray | None = None,
               wild_prob: np.ndarray | None = None) -> np.ndarray:
        """True where an image is "neither": ``distance`` from :meth:`score`; ``pet_prob`` and ``wild_prob`` from
        the branch (``wild_prob`` only when :attr:`needs_wild`)."""
        far = np.asarray(distance, np.float64) > self.threshold
        if self.branch is None:
            return far
        needed = {"pet_prob": pet_prob, **({"wild_prob": wild_prob} if self.needs_wild else {})}
        missing = [name for name, value in needed.items() if value is None]
        if missing:
            raise ValueError(f"this detector's rule needs {' and '.join(missing)} from {self.branch[0]} at "
                             f"{self.branch[1]} px (run the model with "
                             "catdog.inference.KerasRunner(model, branch=detector.branch))")
        if self.logistic is not None:
            weights, bias = self.logistic
            return rule_signals(self.relative_distance(distance), pet_prob, wild_prob) @ np.asarray(weights) + bias > 0
        pet = np.asarray(pet_prob, np.float64)
        neither = (pet < self.pet_low) | ((pet < self.pet_high) & far)
        if self.wild_ratio is not None:
            neither |= np.asarray(wild_prob, np.float64) > self.wild_ratio * pet
        return neither

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, info: dict | None = None) -> OpenSetDetector:
        """Class means and a shared Ledoit-Wolf precision from train ``features`` and 0/1 ``labels``."""
        x = np.asarray(features, np.float64)
        y = np.asarray(labels).astype(int)
        if x.ndim != 2 or len(x) != len(y):
            raise ValueError(f"need features (n, d) and n labels, got {x.shape} and {y.shape}")
        counts = [int((y == k).sum()) for k in (0, 1)]
        if min(counts) < 2:
            raise ValueError(f"need at least 2 train images per class, got cat={counts[0]}, dog={counts[1]}")
        x = _normalize(x)
        means = np.stack([x[y == k].mean(axis=0) for k in (0, 1)])
        lw = LedoitWolf(assume_centered=True).fit(x - means[y])  # residuals around each class mean
        info = {"method": METHOD, "n_train": {"cat": counts[0], "dog": counts[1]}, "feature_dim": int(x.shape[1]),
                "shrinkage": float(lw.shrinkage_), **(info or {})}
        # Stored as float32 (half the file); scores are computed in float64 from these exact values.
        precision = (lw.precision_ + lw.precision_.T) / 2  # exactly symmetric, so its stored upper triangle is all of it
        return cls(means.astype(np.float32), precision.astype(np.float32), float("inf"), info)

    def score(self, features: np.ndarray) -> np.ndarray:
        """Distance to the nearer class mean, shape ``(n,)``; larger = less like a cat/dog photo."""
        x = _normalize(features)
        if x.shape[1] != self.means.shape[1]:
            raise ValueError(f"features have {x.shape[1]} dimensions, the detector {self.means.shape[1]}")
        precision, means = self._float64
        # (x - m) P (x - m) = xPx - 2 xPm + mPm: one (n, d) x (d, d) product for both classes, not one per class
        # (at d = 2560 that product is most of the detector's cost in prediction).
        xp = x @ precision
        d2 = (np.einsum("ij,ij->i", xp, x)[:, None] - 2 * xp @ means.T
              + np.einsum("kj,kj->k", means @ precision, means)[None, :])
        return np.sqrt(np.maximum(d2.min(axis=1), 0.0))

    @cached_property
    def _float64(self) -> tuple[np.ndarray, np.ndarray]:
        """Precision and means in float64, converted once: a d x d copy per batch is not free at d = 2560."""
        return self.precision.astype(np.float64), self.means.astype(np.float64)

    def calibrate(self, features: np.ndarray, quantile: float = 0.99) -> OpenSetDetector:
        """Set the threshold to the ``quantile`` of validation scores (at most 1 - quantile rejected)."""
        if not 0 < quantile <= 1:
            raise ValueError(f"quantile must be in (0, 1], got {quantile}")
        scores = self.score(features)
        # "higher": an observed score, so at most (1 - quantile) of these images lie above it.
        self.threshold = float(np.quantile(scores, quantile, method="higher"))
        self.info.update({"quantile": quantile, "n_validation": int(len(scores)), "threshold": self.threshold,
                          "validation_rejection_rate": float(np.mean(scores > self.threshold)),
                          "validation_score_median": float(np.median(scores))})
        return self

    def save(self, path: str | Path) -> Path:
        """Write ``.npz`` (means, precision, threshold, info as JSON), replacing atomically."""
        buffer = io.BytesIO()
        rule = {} if self.branch is None else {"branch_variant": np.array(self.branch[0]),
                                                "branch_size": np.int64(self.branch[1]),
                                                "pet_low": np.float64(self.pet_low), "pet_high": np.float64(self.pet_high)}
        if self.wild_ratio is not None:
            rule["wild_ratio"] = np.float64(self.wild_ratio)
        if self.logistic is not None:
            rule["logistic_weights"] = np.array(self.logistic[0], np.float64)
            rule["logistic_bias"] = np.float64(self.logistic[1])
        # The precision matrix is symmetric: its upper triangle is all there is to store (half the file;
        # d = 2560 for a two-member ensemble would otherwise take 26 MB).
        upper = self.precision[np.triu_indices(len(self.precision))]
        np.savez(buffer, means=self.means, precision_upper=upper, threshold=np.float64(self.threshold),
                 info=np.array(json.dumps(self.info)), **rule)
        return paths.atomic_write(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> OpenSetDetector:
        """Read a detector written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"open-set detector not found: {path} (fit one with catdog.openset.fit_openset)")
        with np.load(path) as data:  # no pickle needed: info is a JSON string
            if "precision_upper" in data:
                d = data["means"].shape[1]
                precision = np.zeros((d, d), data["precision_upper"].dtype)
                precision[np.triu_indices(d)] = data["precision_upper"]
                precision = precision + np.triu(precision, 1).T
            else:  # files written before the triangle was stored
                precision = data["precision"]
            detector = cls(data["means"], precision, float(data["threshold"]), json.loads(str(data["info"])))
            if "branch_variant" in data:  # files from before the pet branch decide by distance alone
                detector.branch = (str(data["branch_variant"]), int(data["branch_size"]))
                detector.pet_low, detector.pet_high = float(data["pet_low"]), float(data["pet_high"])
                detector.wild_ratio = float(data["wild_ratio"]) if "wild_ratio" in data else None
                if "logistic_weights" in data:
                    detector.logistic = (tuple(float(w) for w in data["logistic_weights"]),
                                         float(data["logistic_bias"]))
        return detector

    def check_model(self, model_path: str | Path) -> None:
        """Raise ValueError unless this detector was fitted on exactly ``model_path``'s bytes."""
        if self.info.get("model_sha256") != paths.file_sha256(model_path):
            raise ValueError(f"the open-set detector beside {model_path} was fitted on a different model file "
                             f"({self.info.get('model_file', '?')}); refit it with catdog.openset.fit_openset")


def load_for_model(model_path: str | Path) -> OpenSetDetector:
    """The detector saved beside ``model_path``, checked against the model file."""
    detector = OpenSetDetector.load(openset_path(model_path))
    detector.check_model(model_path)
    return detector


# ---------------------------------------------------------------- fitting on a trained model
def _features(model: keras.Model, items: list[Item], sha: str, split: str, batch_size: int,
              cache: bool) -> np.ndarray:
    """Pooled features of ``items``, cached per model file (SHA-256), split and count."""
    from catdog.inference import extract_features
    from catdog.models import image_size_of

    cache_file = paths.cache_dir() / f"features-{sha[:16]}-{split}-{len(items)}.npz" if cache else None
    return extract_features(model, items, image_size_of(model), batch_size, cache_file)


def fit_openset(model_path: str | Path | None = None, manifest: str | Path | None = None,
                max_train: int | None = None, *, max_val: int | None = None, quantile: float = QUANTILE,
                batch_size: int = 32, save: bool = True, cache: bool = True, seed: int = 0,
                branch: PetBranch | None = PET_BRANCH, pet_low: float = PET_LOW,
                pet_high: float = PET_HIGH, wild_ratio: float | None = WILD_RATIO,
                logistic: tuple[tuple[float, ...], float] | None = LOGISTIC) -> OpenSetDetector:
    """Fit the detector on the TRAIN split's features, threshold it on the VALIDATION split, save it.

    The rule's ``branch``, ``pet_low``, ``pet_high``, ``wild_ratio`` and ``logistic`` are stored with it
    (defaults: the values chosen on crosscheck's tune half; ``branch=None``: distance alone; ``logistic=None``:
    the threshold rule). Only PetImages is used here.

    ``manifest`` defaults to the one named in the model card. ``max_train``/``max_val`` cap the
    images used (seeded subsets). Features are cached per model file in the catdog cache dir.
    Saved to ``<stem>.openset.npz`` beside the model unless ``save=False``.
    """
    from catdog.models import load_model

    model_path = Path(model_path) if model_path else paths.default_model_path()
    if not manifest:
        card = ModelCard.read(model_path)
        manifest = card.manifest_path if card else None
    if not manifest:
        raise ValueError(f"no manifest given and the card of {model_path} names none")
    model = load_model(model_path)
    sha = paths.file_sha256(model_path)
    items = read_manifest(manifest)
    train = seeded_subset([i for i in items if i.split == "train"], max_train, seed)
    val = seeded_subset([i for i in items if i.split == "validation"], max_val, seed)
    if not train or not val:
        raise ValueError(f"{manifest}: need train and validation images (have {len(train)} and {len(val)})")
    start = time.time()
    f_train = _features(model, train, sha, "train", batch_size, cache)
    f_val = _features(model, val, sha, "validation", batch_size, cache)
    info = {"model_file": Path(model_path).name, "model_sha256": sha, "manifest": str(Path(manifest).resolve()),
            "manifest_sha256": manifest_hash(manifest), "max_train": max_train, "max_val": max_val, "seed": seed,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    detector = OpenSetDetector.fit(f_train, labels_of(train), info).calibrate(f_val, quantile)
    detector.with_rule(branch, pet_low, pet_high, wild_ratio, logistic)
    detector.info["fit_seconds"] = round(time.time() - start, 1)
    if save:
        detector.save(openset_path(model_path))
    return detector


__all__ = ["PET_BRANCH", "PET_LOW", "PET_HIGH", "WILD_RATIO", "QUANTILE", "LOGISTIC", "RULE_SIGNALS", "METHOD",
           "OpenSetDetector", "rule_signals", "fit_logistic", "openset_path", "load_for_model", "fit_openset"]
