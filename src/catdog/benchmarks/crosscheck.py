"""The "neither" report: crosscheck photos, PetImages test and generated non-photos, by kind and by half."""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import sklearn
from PIL import Image, ImageDraw, ImageFont
from scipy.stats import binomtest
from tqdm.auto import tqdm

from catdog.benchmarks.common import ModelLike, as_bundle, machine_environment, write_report
from catdog.bundle import Bundle
from catdog.data import read_manifest, seeded_subset
from catdog.figures import gallery_figure
from catdog.images import MIN_SIDE, load_batch
from catdog.metrics import accuracy_interval, percent
from catdog.openset import OpenSetDetector, fit_openset
from catdog.paths import REPO_ROOT, shared_dir
from catdog.runs import show_progress

try:  # optional: scikit-image's sample photos join the non-pet images when it is installed
    import skimage
except ImportError:
    skimage = None

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- open-set ("neither") images
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
    if skimage is not None:
        folder = Path(skimage.__file__).parent / "data"
        found += [(folder / n, "real", "scikit-image") for n in _SKIMAGE_PHOTOS]
        found += [(folder / n, "synthetic", "scikit-image") for n in _SKIMAGE_GRAPHICS]
    folder = Path(sklearn.__file__).parent / "datasets" / "images"
    found += [(folder / n, "real", "scikit-learn") for n in _SKLEARN_PHOTOS]
    folder = Path(matplotlib.get_data_path()) / "sample_data"
    found += [(folder / n, "real", "matplotlib") for n in _MPL_PHOTOS]
    found += [(folder / n, "synthetic", "matplotlib") for n in _MPL_GRAPHICS]
    return [f for f in found if f[0].is_file()]


def _synthetic_arrays(size: int = 256, seed: int = 0) -> dict[str, np.ndarray]:
    """Non-photos: noise, flat colours, gradients, patterns, rendered text (uint8 RGB)."""
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


# ---------------------------------------------------------------- open-set report
CROSSCHECK_ENV = "CATDOG_CROSSCHECK"
# What each crosscheck folder is, for the targets: kinds are reported separately.
KIND_OF_GROUP = {"pets/cat": "pet photo", "pets/dog": "pet photo", "pets_lowres/cat": "low-res pet",
                 "pets_lowres/dog": "low-res pet", "pets_art/cat": "pet drawing", "pets_art/dog": "pet drawing",
                 "other/near_miss": "near miss", "other/art": "non-pet art", "other/lowres": "low-res non-pet"}
NON_PET_PHOTO = "non-pet photo"  # every other other/* folder: animals, objects, everyday, people, scenes
KINDS = ("pet photo", "near miss", NON_PET_PHOTO, "pet drawing", "low-res pet", "non-pet art", "low-res non-pet")
PETS = ("pet photo", "pet drawing", "low-res pet")  # rejecting these is a false rejection
TARGETS = {"PetImages test": ("<=", 0.01), "pet photo": ("<=", 0.02), "near miss": (">=", 0.80),
           "non-pet photos incl. near misses": (">=", 0.95)}


def crosscheck_dir() -> Path:
    """The crosscheck collection: ``$CATDOG_CROSSCHECK`` or ``<shared>/data/crosscheck``."""
    env = os.environ.get(CROSSCHECK_ENV)
    if env:
        return Path(env)
    shared = shared_dir()
    if shared is None:
        raise FileNotFoundError(f"no crosscheck folder: set ${CROSSCHECK_ENV} or $CATDOG_SHARED")
    return shared / "data" / "crosscheck"


def crosscheck_half(path: str | Path, root: str | Path | None = None) -> str:
    """``"tune"`` or ``"report"``: the fixed split of crosscheck, by file name only (never by score).

    ``tune`` when the first byte of SHA-1 of the path relative to the crosscheck folder (POSIX,
    e.g. ``pets/dog/oxford_beagle_12.jpg``) is even, ``report`` when odd. Methods, thresholds and
    weights are chosen on ``tune`` only; numbers are reported on ``report``.
    """
    path = Path(path)
    if path.is_absolute():
        path = path.relative_to(Path(root) if root else crosscheck_dir())
    return "tune" if hashlib.sha1(path.as_posix().encode()).digest()[0] % 2 == 0 else "report"


def read_crosscheck(folder: str | Path | None = None) -> list[dict[str, str]]:
    """Rows of ``files.tsv`` with ``path`` (absolute), ``group`` (``pets/dog``...), ``kind``, ``source``, ``half``."""
    folder = Path(folder) if folder else crosscheck_dir()
    table = folder / "files.tsv"
    if not table.is_file():
        raise FileNotFoundError(f"{table} not found: is {folder} the crosscheck folder? (set ${CROSSCHECK_ENV})")
    with open(table, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    out = []
    for row in rows:
        group = "/".join(row["file"].split("/")[:2])
        out.append({"path": str(folder / row["file"]), "file": row["file"], "group": group, "label": row["label"],
                    "kind": KIND_OF_GROUP.get(group, NON_PET_PHOTO if group.startswith("other/") else "?"),
                    "source": row["source_repo"], "half": crosscheck_half(row["file"])})
    return out


def rate_with_interval(k: int, n: int) -> dict[str, Any]:
    """k of n with an exact (Clopper-Pearson) 95% interval: small sets get honest, wide intervals."""
    if n == 0:
        return {"n": 0, "rejected": 0, "rate": None, "ci95": None}
    ci = binomtest(k, n).proportion_ci(0.95, method="exact")
    return {"n": n, "rejected": k, "rate": k / n, "ci95": [float(ci.low), float(ci.high)]}


def openset_scores(bundle: Bundle, files: Sequence[str | Path], batch_size: int, progress: bool
                    ) -> list[dict[str, Any]]:
    """``path``, ``p_dog``, ``ood_score``, ``pet_prob``, ``wild_prob``, ``neither``, ``error`` per file, in order."""
    rows = []
    with tqdm(total=len(files), desc="open-set", unit="img", disable=not show_progress(progress)) as bar:
        for start in range(0, len(files), batch_size):
            chunk = [Path(f) for f in files[start:start + batch_size]]
            batch = load_batch(chunk, bundle.image_size)
            out = bundle.predict(batch.inputs, reject=True) if batch.paths else {}
            where = {path: k for k, path in enumerate(batch.paths)}
            errors = dict(batch.errors)
            for path in chunk:
                row: dict[str, Any] = {"path": str(path), "p_dog": None, "ood_score": None, "pet_prob": None,
                                       "wild_prob": None, "neither": False, "error": errors.get(path, "")}
                if path in where:
                    k = where[path]
                    row.update(p_dog=round(float(out["p_dog"][k]), 6), ood_score=round(float(out["ood_score"][k]), 4),
                               pet_prob=round(float(out["pet_prob"][k]), 6),
                               wild_prob=round(float(out["wild_prob"][k]), 6), neither=bool(out["neither"][k]))
                rows.append(row)
            bar.update(len(chunk))
    return rows


def threshold_detector(threshold: float, pet_low: float, pet_high: float, wild_ratio: float | None) -> OpenSetDetector:
    """A detector that only decides (no features): the rule family of :meth:`OpenSetDetector.decide`."""
    return OpenSetDetector(np.zeros((2, 1)), np.eye(1), threshold).with_rule(("-", 0), pet_low, pet_high, wild_ratio)


def _designs(detector: OpenSetDetector) -> dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]]:
    """The designs compared on the same images: (distance, pet_prob, wild_prob) -> rejected."""
    t, low, high, ratio = detector.threshold, detector.pet_low, detector.pet_high, detector.wild_ratio
    designs = {"distance alone (the first detector)": lambda d, p, w: d > t,
               f"pet_prob < {low:g} alone": lambda d, p, w: p < low,
               f"pet_prob < {high:g} alone": lambda d, p, w: p < high}
    if ratio is not None:
        designs[f"wild_prob > {ratio:g} x pet_prob alone"] = lambda d, p, w: w > ratio * p
        designs[f"without the wild rule: pet_prob < {low:g} or (pet_prob < {high:g} and distance > {t:.1f})"] = \
            lambda d, p, w: (p < low) | ((p < high) & (d > t))
    if detector.logistic is not None:  # the threshold rule it replaced, with the same constants
        threshold_rule = threshold_detector(t, low, high, ratio)
        designs[f"threshold rule: {threshold_rule.rule_text().split(';')[0]}"] = threshold_rule.decide
    designs[f"chosen: {detector.rule_text().split(';')[0]}"] = detector.decide
    return designs


def _rates_by(rows: Sequence[dict], key: str, rejected: str = "neither") -> dict[str, dict]:
    """Rejection rate (exact CI) per value of ``rows[i][key]``, in sorted order."""
    values = sorted({r[key] for r in rows})
    return {v: rate_with_interval(sum(bool(r[rejected]) for r in rows if r[key] == v), sum(1 for r in rows if r[key] == v))
            for v in values}


def _summary(rows: Sequence[dict], test_rows: Sequence[dict], rejected: str) -> dict[str, dict]:
    """Per kind, plus non-pet photos with near misses, plus PetImages test, for one decision column."""
    out = {kind: rate_with_interval(sum(bool(r[rejected]) for r in rows if r["kind"] == kind),
                       sum(1 for r in rows if r["kind"] == kind)) for kind in KINDS}
    photos = [r for r in rows if r["kind"] in ("near miss", NON_PET_PHOTO)]
    out["non-pet photos incl. near misses"] = rate_with_interval(sum(bool(r[rejected]) for r in photos), len(photos))
    out["PetImages test"] = rate_with_interval(sum(bool(r[rejected]) for r in test_rows), len(test_rows))
    return out


def _gallery(rows: Sequence[dict], out_dir: Path, name: str, title: str, threshold: float) -> str:
    """A gallery PNG of ``rows`` (image, pet_prob, distance, what the classifier alone says)."""
    titles = [f"{Path(r['path']).parent.name}: pet_prob {r['pet_prob']:.2f}, d {r['ood_score']:.0f}\n"
              f"classifier alone: {'dog' if r['p_dog'] >= threshold else 'cat'} "
              f"{percent(max(r['p_dog'], 1 - r['p_dog']), 0)}" for r in rows]
    gallery_figure([r["path"] for r in rows], titles, out_dir / name, ncols=4, suptitle=title)
    return name


CROSSCHECK_ACCURACY_TARGET = 0.99  # the classifier alone on crosscheck's real cat and dog photos (report half)


def crosscheck_accuracy(model: ModelLike | None = None, out_dir: str | Path | None = None, *,
                        crosscheck: str | Path | None = None, half: str = "report", batch_size: int = 32,
                        progress: bool = True) -> dict:
    """The classifier alone (no "neither") on crosscheck's cat and dog images of one ``half``.

    Accuracy with a Wilson 95% interval per kind (pet photos, low-res pets, pet drawings) and per
    (kind, source), and every misclassified pet photo with its p(dog); unreadable files are counted,
    not scored. Writes ``crosscheck_accuracy.json``/``.md`` into ``out_dir`` (default ``reports/benchmarks``).
    """
    bundle = as_bundle(model)
    rows = [r for r in read_crosscheck(crosscheck) if r["half"] == half and r["kind"] in PETS]
    # the open-set scoring pass: its p(dog) is the classifier's own; its "neither" answers are not used here
    scores = openset_scores(bundle, [r["path"] for r in rows], batch_size, progress)
    scored = []
    for row, score in zip(rows, scores):
        if score["p_dog"] is not None:
            predicted = "dog" if score["p_dog"] >= bundle.threshold else "cat"
            scored.append({**row, "p_dog": score["p_dog"], "correct": predicted == row["label"]})

    def summary(subset: list[dict]) -> dict[str, Any]:
        k, n = sum(r["correct"] for r in subset), len(subset)
        return {"n": n, "correct": k, "accuracy": k / n if n else None,
                "ci95": accuracy_interval(k, n) if n else None}

    by_kind = {kind: summary([r for r in scored if r["kind"] == kind]) for kind in PETS}
    by_source = {f"{kind}, {source}": summary([r for r in scored if (r["kind"], r["source"]) == (kind, source)])
                 for kind in PETS for source in sorted({r["source"] for r in scored if r["kind"] == kind})}
    photos = by_kind["pet photo"]
    result = {"model": bundle.path.name, "threshold": bundle.threshold, "half": half,
              "unreadable": len(rows) - len(scored), "by_kind": by_kind, "by_source": by_source,
              "target": {"pet photo accuracy >=": CROSSCHECK_ACCURACY_TARGET,
                         "met": photos["accuracy"] is not None and photos["accuracy"] >= CROSSCHECK_ACCURACY_TARGET},
              "wrong_pet_photos": [{"file": r["file"], "label": r["label"], "p_dog": r["p_dog"]}
                                   for r in scored if r["kind"] == "pet photo" and not r["correct"]],
              "environment": machine_environment()}
    out_dir = Path(out_dir) if out_dir else REPO_ROOT / "reports" / "benchmarks"
    write_report(out_dir, "crosscheck_accuracy", result, _crosscheck_accuracy_markdown(result))
    return result


def _crosscheck_accuracy_markdown(result: dict) -> str:
    def line(name: str, r: dict) -> str:
        if not r["n"]:
            return f"| {name} | 0 | | | |"
        low, high = r["ci95"]
        return f"| {name} | {r['n']} | {r['correct']} | {r['accuracy']:.2%} | {low:.1%}–{high:.1%} |"

    target = result["target"]
    lines = [f"# The classifier alone on crosscheck's cats and dogs ({result['half']} half)", "",
             f"Model `{result['model']}`, threshold {result['threshold']}, no \"neither\" (every image gets cat or dog); "
             f"{result['unreadable']} unreadable files left out. Reproduce: `catdog bench crosscheck`.", "",
             "| images | n | correct | accuracy | Wilson 95% CI |", "|---|---:|---:|---:|---|"]
    lines += [line(kind, r) for kind, r in result["by_kind"].items()]
    lines += ["", "| kind, source | n | correct | accuracy | Wilson 95% CI |", "|---|---:|---:|---:|---|"]
    lines += [line(name, r) for name, r in result["by_source"].items()]
    lines += ["", f"Low-res pets (CIFAR-10, 32 px) are scored here for the record: `catdog predict` labels photos under "
              f"{MIN_SIDE} px on the short side `too small` instead of guessing."]
    lines += ["", f"Target: pet photos >= {target['pet photo accuracy >=']:.0%}: **{'met' if target['met'] else 'not met'}**.",
              "", "Misclassified pet photos:", ""]
    lines += [f"- `{w['file']}` ({w['label']}): p(dog) = {w['p_dog']:.3f}" for w in result["wrong_pet_photos"]] or ["- none"]
    return "\n".join(lines) + "\n"


def openset_report(model: ModelLike | None = None, manifest: str | Path | None = None,
                   out_dir: str | Path | None = None, *, crosscheck: str | Path | None = None,
                   max_test: int | None = None, max_crosscheck: int | None = None, batch_size: int = 32,
                   overwrite: bool = False, progress: bool = True, gallery: bool = True, seed: int = 0) -> dict:
    """Measure the saved "neither" detector on crosscheck (both halves) and PetImages TEST photos.

    ``model`` is a Bundle or a model file (None: the shipped model); ``manifest`` defaults to the
    card's; a model without a detector gets one fitted first. Reports rejection per crosscheck
    group, per (group, source) and per kind, separately for the ``tune`` and ``report`` halves
    (:func:`crosscheck_half`), for every design of :func:`_designs` on the same images, and for
    synthetic non-photos; with ``gallery``, PNGs of the worst false rejections and worst accepted
    non-pets of the report half. Writes ``openset.json``/``.md`` into ``out_dir`` (default
    ``reports/benchmarks``; refuses to overwrite unless ``overwrite``). ``max_test`` and
    ``max_crosscheck`` cap the images used (seeded subsets).
    """
    bundle = as_bundle(model)
    out_dir = Path(out_dir) if out_dir else REPO_ROOT / "reports" / "benchmarks"
    if not overwrite and any((out_dir / n).exists() for n in ("openset.json", "openset.md")):
        raise FileExistsError(f"{out_dir} already holds an open-set report (pass overwrite=True)")
    manifest = Path(manifest) if manifest else bundle.require_manifest()
    if not bundle.has_detector:
        log.info("no open-set detector beside %s: fitting one", bundle.path)
        fit_openset(bundle.path, manifest)
    detector = bundle.detector
    cross = read_crosscheck(crosscheck)
    if max_crosscheck is not None:
        keep = set(np.random.default_rng(seed).permutation(len(cross))[:max_crosscheck].tolist())
        cross = [r for k, r in enumerate(cross) if k in keep]
    with tempfile.TemporaryDirectory(prefix="catdog-openset-") as tmp:
        synthetic = non_pet_images(tmp, seed=seed, groups=("synthetic",))
        synthetic_rows = openset_scores(bundle, [r["path"] for r in synthetic], batch_size, progress)
    test = seeded_subset(read_manifest(manifest, "test"), max_test, seed)
    scored = openset_scores(bundle, [r["path"] for r in cross] + [i.path for i in test], batch_size, progress)
    cross_rows = [{**meta, **row} for meta, row in zip(cross, scored[:len(cross)]) if not row["error"]]
    test_rows = [row for row in scored[len(cross):] if not row["error"]]
    designs = _designs(detector)
    for rows in (cross_rows, test_rows):
        if rows:
            d = np.array([r["ood_score"] for r in rows])
            p = np.array([r["pet_prob"] for r in rows])
            w = np.array([r["wild_prob"] for r in rows])
            for name, rule in designs.items():
                for r, v in zip(rows, rule(d, p, w)):
                    r[name] = bool(v)
    halves = {half: [r for r in cross_rows if r["half"] == half] for half in ("tune", "report")}
    result = {
        "model": str(bundle.path), "manifest": str(manifest), "detector": detector.info,
        "rule": detector.rule_text(), "threshold": detector.threshold, "engine": bundle.engine,
        "crosscheck": str(Path(crosscheck) if crosscheck else crosscheck_dir()),
        "split_rule": "tune = even first byte of sha1(path relative to crosscheck), report = odd "
                      "(catdog.benchmarks.crosscheck_half)",
        "unreadable": [r["path"] for r in scored if r["error"]],
        "designs": {name: {half: _summary(rows, test_rows, name) for half, rows in halves.items()}
                    for name in designs},
        "by_group": {half: _rates_by(rows, "group") for half, rows in halves.items()},
        "by_group_source": {half: _rates_by([{**r, "gs": f"{r['group']} | {r['source']}"} for r in rows], "gs")
                            for half, rows in halves.items()},
        "petimages_test": rate_with_interval(sum(r["neither"] for r in test_rows), len(test_rows)),
        "synthetic_non_photos": rate_with_interval(sum(r["neither"] for r in synthetic_rows if not r["error"]),
                                      sum(1 for r in synthetic_rows if not r["error"])),
        "targets": {k: {"op": op, "value": v} for k, (op, v) in TARGETS.items()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    report = halves["report"]
    worst_rejected = sorted([r for r in report if r["kind"] == "pet photo" and r["neither"]],
                            key=lambda r: r["pet_prob"])[:8]
    worst_accepted = sorted([r for r in report if r["kind"] in ("near miss", NON_PET_PHOTO) and not r["neither"]],
                            key=lambda r: -r["pet_prob"])[:8]
    result["worst_false_rejections"] = [{k: r[k] for k in ("file", "pet_prob", "ood_score", "p_dog")}
                                        for r in worst_rejected]
    result["worst_accepted_non_pets"] = [{k: r[k] for k in ("file", "pet_prob", "ood_score", "p_dog")}
                                         for r in worst_accepted]
    out_dir.mkdir(parents=True, exist_ok=True)
    if gallery:
        result["galleries"] = [
            _gallery(worst_rejected, out_dir, "openset_false_rejections.png",
                     "Report half: real pet photos answered 'neither'", bundle.threshold),
            _gallery(worst_accepted, out_dir, "openset_accepted_non_pets.png",
                     "Report half: non-pet photos NOT rejected (highest pet_prob)", bundle.threshold)]
    write_report(out_dir, "openset", result, _openset_markdown(result))
    return result


def _fmt_rate(r: dict) -> str:
    """One table row's n, rejected, rate and interval cells."""
    if not r["n"]:
        return "| 0 | – | – | – |"
    lo, hi = r["ci95"]
    return f"| {r['n']} | {r['rejected']} | {r['rate']:.1%} | {lo:.1%}–{hi:.1%} |"


def _met(rate: dict, op: str, value: float) -> str:
    if not rate["n"]:
        return "–"
    ok = rate["rate"] <= value if op == "<=" else rate["rate"] >= value
    return "met" if ok else "**NOT met**"


def _openset_markdown(result: dict) -> str:
    info = result["detector"]
    chosen = next(name for name in result["designs"] if name.startswith("chosen"))
    report = result["designs"][chosen]["report"]
    lines = [
        "# Open-set rejection: \"neither cat nor dog\"", "",
        f"Model `{Path(result['model']).name}`, engine `{result['engine']}`. Rule: {result['rule']}. "
        f"Distance: {info.get('method')}, threshold = the {info.get('quantile', 0.99):.1%} quantile of "
        f"{info.get('n_validation')} PetImages validation photos. Crosscheck split: {result['split_rule']}; "
        "designs and constants were chosen on the tune half (and PetImages validation) only, as "
        "[openset_design.md](openset_design.md) shows.", "",
        "## Targets (report half of crosscheck, PetImages test)", "",
        "| target | n | rejected | rate | exact 95% CI | status |", "|---|---:|---:|---:|---|---|",
    ]
    for name, t in result["targets"].items():
        lines.append(f"| {name} rejected {t['op']} {t['value']:.0%} " + _fmt_rate(report[name])
                     + f" {_met(report[name], t['op'], t['value'])} |")
    lines += ["", "## Every design on the same images (rejection rate; tune / report half)", "",
              "| design | " + " | ".join(result["designs"][chosen]["report"]) + " |",
              "|---|" + "---:|" * len(result["designs"][chosen]["report"])]
    for name, by_half in result["designs"].items():
        cells = []
        for kind in by_half["report"]:
            t, r = by_half["tune"][kind], by_half["report"][kind]
            cells.append("–" if not r["n"] else f"{t['rate']:.1%} / {r['rate']:.1%}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "PetImages test is the same images in both columns.", "",
              f"Synthetic non-photos (noise, flat colours, gradients, text, graphics): "
              f"{_fmt_rate(result['synthetic_non_photos'])[2:-2].replace(' | ', ', ')} (n, rejected, rate, CI).", ""]
    for half in ("report", "tune"):
        lines += [f"## Per group, {half} half (chosen rule)", "",
                  "| group | n | rejected | rate | exact 95% CI |", "|---|---:|---:|---:|---|"]
        lines += [f"| {g} " + _fmt_rate(r) for g, r in result["by_group"][half].items()]
        lines += ["", f"## Per group and source, {half} half (chosen rule)", "",
                  "| group / source | n | rejected | rate | exact 95% CI |", "|---|---:|---:|---:|---|"]
        lines += [f"| {g} " + _fmt_rate(r) for g, r in result["by_group_source"][half].items()]
        lines.append("")
    lines += ["Low-res groups (32x32 CIFAR) are answered `too small` by `catdog predict` (under 64 px); the "
              "rates above are what the detector alone would do with them.", ""]
    for g in result.get("galleries", []):
        lines.append(f"![{g}]({g})")
    return "\n".join(lines) + "\n"
