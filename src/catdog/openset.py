"""Open-set rejection: flag images that are neither a cat nor a dog.

A two-class sigmoid always answers "cat" or "dog", often confidently, for a photo of a
rocket or a screenshot of text. :class:`OpenSetDetector` scores how unlike the training
photos an image's pooled backbone features (:func:`catdog.models.feature_model`) are;
:class:`catdog.predict.Predictor` labels images scoring above the stored threshold
``"neither"``.

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
The detector is saved beside the model as ``<stem>.openset.npz`` together with the SHA-256 of
the model file it was fitted on; loading it for a different model file is refused.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from catdog import CLASS_NAMES

log = logging.getLogger(__name__)

METHOD = ("class-conditional Mahalanobis distance on L2-normalised pooled features, shared Ledoit-Wolf "
          "covariance (Lee et al. 2018; Mueller & Hein 2025); score = min over the two classes")


def _normalize(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float64); an all-zero row stays zero."""
    x = np.atleast_2d(np.asarray(features, np.float64))
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


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

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, info: dict | None = None) -> OpenSetDetector:
        """Class means and a shared Ledoit-Wolf precision from train ``features`` and 0/1 ``labels``."""
        from sklearn.covariance import LedoitWolf

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
        return cls(means.astype(np.float32), lw.precision_.astype(np.float32), float("inf"), info)

    def score(self, features: np.ndarray) -> np.ndarray:
        """Distance to the nearer class mean, shape ``(n,)``; larger = less like a cat/dog photo."""
        x = _normalize(features)
        if x.shape[1] != self.means.shape[1]:
            raise ValueError(f"features have {x.shape[1]} dimensions, the detector {self.means.shape[1]}")
        precision = self.precision.astype(np.float64)
        d2 = np.empty((len(x), len(self.means)))
        for k, mean in enumerate(self.means.astype(np.float64)):
            diff = x - mean
            d2[:, k] = np.einsum("ij,ij->i", diff @ precision, diff)
        return np.sqrt(np.maximum(d2.min(axis=1), 0.0))

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

    def rejects(self, features: np.ndarray) -> np.ndarray:
        """True where the image is neither cat nor dog (score above the threshold)."""
        return self.score(features) > self.threshold

    def save(self, path: str | Path) -> Path:
        """Write ``.npz`` (means, precision, threshold, info as JSON), replacing atomically."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:  # a file object: np.savez would otherwise append ".npz" to the tmp name
            np.savez(f, means=self.means, precision=self.precision, threshold=np.float64(self.threshold),
                     info=np.array(json.dumps(self.info)))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> OpenSetDetector:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"open-set detector not found: {path} (fit one with catdog.openset.fit_openset)")
        with np.load(path) as data:  # no pickle needed: info is a JSON string
            return cls(data["means"], data["precision"], float(data["threshold"]), json.loads(str(data["info"])))

    def check_model(self, model_path: str | Path) -> None:
        """Raise ValueError unless this detector was fitted on exactly ``model_path``'s bytes."""
        from catdog.export import file_sha256

        expected = self.info.get("model_sha256")
        if expected != file_sha256(model_path):
            raise ValueError(f"the open-set detector beside {model_path} was fitted on a different model file "
                             f"({self.info.get('model_file', '?')}); refit it with catdog.openset.fit_openset")


def load_for_model(model_path: str | Path) -> OpenSetDetector:
    """The detector saved beside ``model_path``, checked against the model file."""
    detector = OpenSetDetector.load(openset_path(model_path))
    detector.check_model(model_path)
    return detector


# ---------------------------------------------------------------- fitting on a trained model
def _subset(items: list, n: int | None, seed: int) -> list:
    """A seeded random subset of ``n`` items, in their original order (all if ``n`` is None)."""
    if n is None or len(items) <= n:
        return items
    keep = np.sort(np.random.default_rng(seed).choice(len(items), n, replace=False))
    return [items[i] for i in keep]


def _features(model, items: list, sha: str, split: str, batch_size: int, cache: bool) -> np.ndarray:
    from catdog import paths
    from catdog.models import image_size_of
    from catdog.training import extract_features

    cache_file = paths.cache_dir() / f"features-{sha[:16]}-{split}-{len(items)}.npz" if cache else None
    return extract_features(model, items, image_size_of(model), batch_size, cache_file)


def fit_openset(model_path: str | Path | None = None, manifest: str | Path | None = None,
                max_train: int | None = None, *, max_val: int | None = None, quantile: float = 0.99,
                batch_size: int = 32, save: bool = True, cache: bool = True, seed: int = 0) -> OpenSetDetector:
    """Fit the detector on the TRAIN split's features, threshold it on the VALIDATION split, save it.

    ``manifest`` defaults to the one named in the model card. ``max_train``/``max_val`` cap the
    images used (seeded subsets). Features are cached per model file in the catdog cache dir.
    Saved to ``<stem>.openset.npz`` beside the model unless ``save=False``.
    """
    from catdog import paths
    from catdog.data import labels_of, manifest_hash, read_manifest
    from catdog.export import file_sha256
    from catdog.models import card_manifest, load_model

    model_path = Path(model_path) if model_path else paths.default_model_path()
    manifest = manifest or card_manifest(model_path)
    if not manifest:
        raise ValueError(f"no manifest given and the card of {model_path} names none")
    model = load_model(model_path)
    sha = file_sha256(model_path)
    items = read_manifest(manifest)
    train = _subset([i for i in items if i.split == "train"], max_train, seed)
    val = _subset([i for i in items if i.split == "validation"], max_val, seed)
    if not train or not val:
        raise ValueError(f"{manifest}: need train and validation images (have {len(train)} and {len(val)})")
    start = time.time()
    f_train = _features(model, train, sha, "train", batch_size, cache)
    f_val = _features(model, val, sha, "validation", batch_size, cache)
    info = {"model_file": Path(model_path).name, "model_sha256": sha, "manifest": str(Path(manifest).resolve()),
            "manifest_sha256": manifest_hash(manifest), "max_train": max_train, "max_val": max_val, "seed": seed,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    detector = OpenSetDetector.fit(f_train, labels_of(train), info).calibrate(f_val, quantile)
    detector.info["fit_seconds"] = round(time.time() - start, 1)
    if save:
        detector.save(openset_path(model_path))
    return detector


# ---------------------------------------------------------------- evaluation images
# Real photos that ship with installed libraries (no downloads). Excluded: skimage's chelsea
# (a cat), motorcycle_right (near-duplicate of _left), microaneurysms (a crop of retina).
_SKIMAGE_PHOTOS = ("astronaut.png", "brick.png", "camera.png", "cell.png", "clock_motion.png", "coffee.png",
                   "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png",
                   "motorcycle_left.png", "page.png", "retina.jpg", "rocket.jpg")
_SKIMAGE_GRAPHICS = ("color.png", "phantom.png", "chessboard_RGB.png", "horse.png", "logo.png", "text.png")
_SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")
_MPL_PHOTOS = ("grace_hopper.jpg",)
_MPL_GRAPHICS = ("logo2.png", "Minduka_Present_Blue_Pack.png")


def _library_files() -> list[tuple[Path, str, str]]:
    """(file, group, source) for the sample images installed libraries ship, where present."""
    found = []
    try:
        import skimage

        folder = Path(skimage.__file__).parent / "data"
        found += [(folder / n, "real", "scikit-image") for n in _SKIMAGE_PHOTOS]
        found += [(folder / n, "synthetic", "scikit-image") for n in _SKIMAGE_GRAPHICS]
    except ImportError:
        pass
    import sklearn

    folder = Path(sklearn.__file__).parent / "datasets" / "images"
    found += [(folder / n, "real", "scikit-learn") for n in _SKLEARN_PHOTOS]
    try:
        import matplotlib

        folder = Path(matplotlib.get_data_path()) / "sample_data"
        found += [(folder / n, "real", "matplotlib") for n in _MPL_PHOTOS]
        found += [(folder / n, "synthetic", "matplotlib") for n in _MPL_GRAPHICS]
    except ImportError:
        pass
    return [f for f in found if f[0].is_file()]


def _synthetic_arrays(size: int = 256, seed: int = 0) -> dict[str, np.ndarray]:
    """Non-photos: noise, flat colours, gradients, patterns, rendered text (uint8 RGB)."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for i in range(3):
        out[f"noise_uniform_{i}"] = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    out["noise_uniform_gray"] = np.repeat(rng.integers(0, 256, (size, size, 1), dtype=np.uint8), 3, axis=2)
    for i in range(2):
        out[f"noise_gaussian_{i}"] = np.clip(rng.normal(128, 50, (size, size, 3)), 0, 255).astype(np.uint8)
        coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        out[f"noise_smooth_{i}"] = np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC))
    colours = {"black": (0, 0, 0), "white": (255, 255, 255), "gray": (128, 128, 128), "red": (220, 30, 30),
               "green": (30, 180, 60), "blue": (30, 60, 220), "yellow": (240, 220, 40)}
    for name, rgb in colours.items():
        out[f"flat_{name}"] = np.full((size, size, 3), rgb, np.uint8)
    ramp = np.linspace(0, 255, size)
    xx, yy = np.meshgrid(ramp, ramp)
    out["gradient_horizontal"] = np.repeat(xx[..., None], 3, axis=2).astype(np.uint8)
    out["gradient_vertical"] = np.repeat(yy[..., None], 3, axis=2).astype(np.uint8)
    out["gradient_rgb"] = np.stack([xx, yy, 255 - xx], axis=2).astype(np.uint8)
    centre = np.arange(size) - (size - 1) / 2
    cx, cy = np.meshgrid(centre, centre)
    radius = np.hypot(cx, cy) / np.hypot(centre[0], centre[0]) * 255
    out["gradient_radial"] = np.stack([radius, 255 - radius, np.full_like(radius, 128)], axis=2).astype(np.uint8)
    tile = (np.add.outer(np.arange(size) // 32, np.arange(size) // 32) % 2 * 255).astype(np.uint8)
    out["checkerboard"] = np.repeat(tile[..., None], 3, axis=2)
    stripes = np.array([(230, 40, 40), (40, 40, 230), (250, 250, 250)], np.uint8)[(np.arange(size) // 16) % 3]
    out["stripes"] = np.broadcast_to(stripes[None], (size, size, 3)).copy()
    try:
        font = ImageFont.load_default(size=size // 10)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        font = ImageFont.load_default()
    texts = [("The quick brown fox\njumps over the\nlazy dog. 0123", (255, 255, 255), (0, 0, 0)),
             ("INVOICE #4821\nTotal: $1,299.00\nDue: 2024-07-01", (0, 0, 0), (255, 255, 255)),
             ("Hello world!\nneither cat\nnor dog", (250, 230, 60), (20, 40, 160))]
    for i, (text, background, ink) in enumerate(texts):
        img = Image.new("RGB", (size, size), background)
        ImageDraw.Draw(img).multiline_text((size // 16, size // 5), text, fill=ink, font=font, spacing=size // 20)
        out[f"text_{i}"] = np.asarray(img)
    return out


GROUPS = ("real", "real_crop", "synthetic")


def non_pet_images(folder: str | Path, seed: int = 0, groups: tuple[str, ...] = GROUPS) -> list[dict[str, str]]:
    """Write the open-set evaluation images into ``folder``; returns ``{"path", "group", "source"}`` rows.

    Groups: ``real`` (photos shipped with scikit-image, scikit-learn, matplotlib), ``real_crop``
    (two crops of each real photo of 256 px or more: new compositions of the same scenes, so
    not independent), ``synthetic`` (library graphics plus generated noise, flat colours,
    gradients, patterns and rendered text). Generated at run time; never commit them.
    ``groups`` limits which groups are written.
    """
    from PIL import Image

    folder = Path(folder)
    rows = []
    rng = np.random.default_rng(seed)
    unknown = set(groups) - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown group(s) {sorted(unknown)}; choose from {GROUPS}")
    for group in groups:
        (folder / group).mkdir(parents=True, exist_ok=True)
    for src, group, source in _library_files():
        if group in groups:
            dest = folder / group / src.name
            shutil.copyfile(src, dest)
            rows.append({"path": str(dest), "group": group, "source": f"{source}: {src.name}"})
        if group != "real" or "real_crop" not in groups:
            continue
        with Image.open(src) as img:
            img = img.convert("RGB")
        w, h = img.size
        if min(w, h) < 256:
            continue
        boxes = [(w // 4, h // 4, w // 4 + w // 2, h // 4 + h // 2)]  # centre half
        fw, fh = rng.uniform(0.4, 0.7, 2)
        cw, ch = int(w * fw), int(h * fh)
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        boxes.append((x0, y0, x0 + cw, y0 + ch))
        for k, box in enumerate(boxes, start=1):
            dest = folder / "real_crop" / f"{src.stem}_crop{k}.png"
            img.crop(box).save(dest)
            rows.append({"path": str(dest), "group": "real_crop", "source": f"{source}: crop {box} of {src.name}"})
    for name, array in (_synthetic_arrays(seed=seed) if "synthetic" in groups else {}).items():
        dest = folder / "synthetic" / f"{name}.png"
        Image.fromarray(array).save(dest)
        rows.append({"path": str(dest), "group": "synthetic", "source": f"generated: {name}"})
    return rows


# ---------------------------------------------------------------- report
def _rate(k: int, n: int) -> dict[str, Any]:
    """k of n with an exact (Clopper-Pearson) 95% interval: small sets get honest, wide intervals."""
    from scipy.stats import binomtest

    if n == 0:
        return {"n": 0, "rejected": 0, "rate": None, "ci95": None}
    ci = binomtest(k, n).proportion_ci(0.95, method="exact")
    return {"n": n, "rejected": k, "rate": k / n, "ci95": [float(ci.low), float(ci.high)]}


def openset_report(model_path: str | Path | None = None, manifest: str | Path | None = None,
                   out_dir: str | Path | None = None, *, max_test: int | None = None,
                   image_dir: str | Path | None = None, batch_size: int = 32, overwrite: bool = False,
                   progress: bool = True, seed: int = 0) -> dict:
    """Measure the saved detector: rejection of non-pet images and false rejection of TEST cats/dogs.

    Fits and saves the detector first if the model has none. Non-pet images are generated
    into ``image_dir`` (default: a temporary folder, deleted afterwards). Writes
    ``openset.json`` and ``openset.md`` into ``out_dir`` (default ``reports/openset`` in the
    repo; refuses to overwrite unless ``overwrite``) and returns the JSON content.
    ``max_test`` caps the TEST photos used (seeded subset).
    """
    from catdog import paths
    from catdog.data import read_manifest
    from catdog.models import card_manifest
    from catdog.predict import Predictor

    model_path = Path(model_path) if model_path else paths.default_model_path()
    out_dir = Path(out_dir) if out_dir else paths.REPO_ROOT / "reports" / "openset"
    if not overwrite and any((out_dir / n).exists() for n in ("openset.json", "openset.md")):
        raise FileExistsError(f"{out_dir} already holds an open-set report (pass overwrite=True)")
    manifest = manifest or card_manifest(model_path)
    if not openset_path(model_path).is_file():
        log.info("no open-set detector beside %s: fitting one", model_path)
        fit_openset(model_path, manifest)
    predictor = Predictor(model_path, reject=True, batch_size=batch_size, progress=progress)
    detector = predictor.detector

    with tempfile.TemporaryDirectory(prefix="catdog-openset-") as tmp:
        folder = Path(image_dir) if image_dir else Path(tmp)
        non_pets = non_pet_images(folder, seed=seed)
        rows = list(predictor.predict_paths([r["path"] for r in non_pets]))
    per_image = []
    for meta, row in zip(non_pets, rows):
        per_image.append({"name": Path(meta["path"]).name, "group": meta["group"], "source": meta["source"],
                          "ood_score": row["ood_score"], "rejected": row["label"] == "neither",
                          "classifier_says": None if row["p_dog"] is None
                          else "dog" if row["p_dog"] >= predictor.threshold else "cat",
                          "p_dog": row["p_dog"], "error": row["error"]})
    groups = {g: _rate(sum(r["rejected"] for r in per_image if r["group"] == g),
                       sum(1 for r in per_image if r["group"] == g)) for g in GROUPS}

    test = _subset(read_manifest(manifest, "test"), max_test, seed)
    test_rows = list(predictor.predict_paths([i.path for i in test]))
    false_rejections = {}
    for name in CLASS_NAMES:
        mine = [r for r, i in zip(test_rows, test) if i.label == name and not r["error"]]
        false_rejections[name] = _rate(sum(r["label"] == "neither" for r in mine), len(mine))
    ok = [r for r in test_rows if not r["error"]]
    false_rejections["all"] = _rate(sum(r["label"] == "neither" for r in ok), len(ok))
    worst = sorted(ok, key=lambda r: -r["ood_score"])[:5]
    result = {
        "model": str(model_path), "manifest": str(manifest), "detector": detector.info,
        "threshold": detector.threshold, "engine": predictor.engine,
        "rejection_of_non_pets": groups,
        "false_rejection_of_test_pets": false_rejections,
        "test_unreadable": len(test_rows) - len(ok),
        "test_score_quantiles": {q: float(np.quantile([r["ood_score"] for r in ok], q)) for q in (0.5, 0.9, 0.99)}
        if ok else {},
        "highest_scoring_test_pets": [{"path": r["path"], "ood_score": r["ood_score"]} for r in worst],
        "non_pet_images": per_image,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "openset.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "openset.md").write_text(_markdown(result))
    return result


def _fmt_rate(r: dict) -> str:
    if not r["n"]:
        return "| 0 | – | – | – |"
    lo, hi = r["ci95"]
    return f"| {r['n']} | {r['rejected']} | {r['rate']:.1%} | {lo:.1%}–{hi:.1%} |"


def _markdown(result: dict) -> str:
    info = result["detector"]
    n_train = info.get("n_train", {})
    lines = [
        "# Open-set rejection: \"neither cat nor dog\"", "",
        f"Model `{Path(result['model']).name}`, engine `{result['engine']}`. Detector: {info.get('method')}, "
        f"fitted on the pooled features of {sum(n_train.values())} train photos "
        f"({n_train.get('cat')} cats, {n_train.get('dog')} dogs); threshold {result['threshold']:.3f} = the "
        f"{info.get('quantile', 0.99):.0%} quantile of {info.get('n_validation')} validation photos' scores "
        "(so at most ~1% of photos like the validation set are rejected).", "",
        "| images | n | rejected | rate | exact 95% CI |", "|---|---:|---:|---:|---|",
    ]
    names = {"real": "real non-pet photos (library sample images)", "real_crop": "crops of those photos",
             "synthetic": "synthetic non-photos (noise, flat colours, gradients, text, graphics)"}
    for g, label in names.items():
        lines.append(f"| {label} " + _fmt_rate(result["rejection_of_non_pets"][g]))
    for name, r in result["false_rejection_of_test_pets"].items():
        lines.append(f"| TEST {'cats + dogs' if name == 'all' else name + 's'} (false rejections) " + _fmt_rate(r))
    lines += [
        "", "**Caveats.** The real non-pet set is small (the sample photos that ship with scikit-image, "
        "scikit-learn and matplotlib; no downloads) and not representative of what users upload; crops "
        "re-use the same scenes, so they are not independent. The confidence intervals show how little "
        "a handful of images can prove. Near-pets (foxes, rabbits, stuffed toys, cartoons of cats) are "
        "not in this set and are the likely failure mode.", "",
        "## Every non-pet image", "",
        "| image | group | score | rejected | classifier alone would say |", "|---|---|---:|:---:|---|",
    ]
    for r in sorted(result["non_pet_images"], key=lambda r: (r["group"], r["name"])):
        if r["error"]:
            lines.append(f"| {r['name']} | {r['group']} | – | error | {r['error']} |")
            continue
        p = r["p_dog"]
        said = f"{r['classifier_says']} ({max(p, 1 - p):.0%})"
        lines.append(f"| {r['name']} | {r['group']} | {r['ood_score']:.2f} | {'yes' if r['rejected'] else 'NO'} "
                     f"| {said} |")
    return "\n".join(lines) + "\n"


__all__ = ["GROUPS", "METHOD", "OpenSetDetector", "openset_path", "load_for_model", "fit_openset", "non_pet_images",
           "openset_report"]
