"""Finding, scanning and splitting a cat/dog dataset.

The flow is ``discover`` (which files, which class, any explicit split) -> ``scan``
(decode every file once, cached; unusable files go to a skipped-file report) ->
``split`` (deterministic, stratified, duplicates kept together) -> a CSV manifest
(``path,label,split``) that every later step reads. The data folder is never modified.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from catdog import paths
from catdog.conventions import CLASS_NAMES
from catdog.images import ImageError, is_image_name, probe

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
_CLASS_ALIASES = {"cat": "cat", "cats": "cat", "dog": "dog", "dogs": "dog"}
_SPLIT_ALIASES = {"train": "train", "training": "train", "validation": "validation", "val": "validation",
                  "valid": "validation", "test": "test", "testing": "test"}
T = TypeVar("T")
_KAGGLE_NAME = re.compile(r"^(cat|dog)[._\-]", re.IGNORECASE)


class DatasetError(ValueError):
    """The dataset as a whole cannot be used (no images, one class only, bad manifest)."""


@dataclass(frozen=True)
class Item:
    """One candidate file: where it is, its class, and a split fixed by the folder layout (if any)."""

    path: str
    label: str
    split: str | None = None


@dataclass
class ScanResult:
    """Usable items and the files that were skipped, with the reason for each."""

    items: list[Item]
    hashes: dict[str, str]  # path -> content hash, for duplicate grouping
    skipped: list[dict[str, str]]  # {"path", "reason"}

    def write_skipped(self, path: str | Path) -> Path:
        """Write the skipped-file report as CSV (``path,reason``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["path", "reason"])
            writer.writeheader()
            writer.writerows(self.skipped)
        return path


# ---------------------------------------------------------------- discovery
def _class_of(name: str) -> str | None:
    return _CLASS_ALIASES.get(name.lower())


def _files(folder: Path) -> list[Path]:
    """All files below ``folder`` (recursive, sorted, hidden files ignored)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def _class_folders(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for child in sorted(folder.iterdir()):
        label = _class_of(child.name) if child.is_dir() else None
        if label:
            if label in found:
                raise DatasetError(f"{folder}: both {found[label].name}/ and {child.name}/ hold class '{label}'")
            found[label] = child
    return found


def _items_from_class_folders(folders: dict[str, Path], split: str | None) -> list[Item]:
    # Every file is listed (not only image extensions) so that Thumbs.db and friends
    # appear in the skipped-file report instead of vanishing silently.
    return [Item(str(f), label, split) for label, folder in folders.items() for f in _files(folder)]


def _items_from_kaggle_flat(folder: Path, split: str | None) -> list[Item]:
    items = []
    for f in _files(folder):
        m = _KAGGLE_NAME.match(f.name)
        if m:
            items.append(Item(str(f), m.group(1).lower(), split))
        elif f.parent == folder:
            items.append(Item(str(f), "unknown", split))  # reported as skipped: no class in name
    return items


def _discover_in(root: Path) -> list[Item]:
    """Items under ``root`` for whichever layout it has, or [] if none matches."""
    class_folders = _class_folders(root)
    if class_folders:
        return _items_from_class_folders(class_folders, None)
    split_folders = {_SPLIT_ALIASES[c.name.lower()]: c for c in sorted(root.iterdir())
                     if c.is_dir() and c.name.lower() in _SPLIT_ALIASES}
    items: list[Item] = []
    for split, folder in split_folders.items():
        inner = _class_folders(folder)
        # A split folder of the Kaggle layout keeps its split only if it is not the sole source.
        items += (_items_from_class_folders(inner, split) if inner else _items_from_kaggle_flat(folder, split))
    if items:
        if set(split_folders) == {"train"}:  # Kaggle's train/ alone: no split is implied
            items = [Item(i.path, i.label, None) for i in items]
        return items
    return [i for i in _items_from_kaggle_flat(root, None) if i.label != "unknown"]


def discover(root: str | Path) -> list[Item]:
    """Find the images under ``root`` in any supported layout (see ``data/README.md``).

    Looks in ``root`` and, if nothing matches there, one folder level down (e.g.
    ``root/PetImages/Cat``). Raises :class:`DatasetError` if no layout matches or a class is missing.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data folder not found: {root} (run `catdog data fetch` or set CATDOG_DATA_DIR)")
    items = _discover_in(root)
    if not items:
        for child in sorted(p for p in root.iterdir() if p.is_dir()):
            items = _discover_in(child)
            if items:
                break
    labelled = Counter(i.label for i in items if i.label in CLASS_NAMES)
    if not labelled:
        raise DatasetError(
            f"{root}: no cat/dog images found. Expected Cat/ and Dog/ folders, train/{{cat,dog}}/ "
            "(+ test/), or Kaggle's train/cat.1.jpg names; see data/README.md")
    missing = [c for c in CLASS_NAMES if not labelled[c]]
    if missing:
        raise DatasetError(f"{root}: no images of class '{missing[0]}' found "
                           f"(found {labelled[CLASS_NAMES[1 - CLASS_NAMES.index(missing[0])]]} of the other); "
                           "a classifier needs both cats and dogs")
    return items


# ---------------------------------------------------------------- scanning
def _check_file(path: str) -> tuple[str | None, str]:
    """Return (reason or None, content hash) for one file."""
    p = Path(path)
    data = p.read_bytes() if p.is_file() else b""
    digest = hashlib.md5(data).hexdigest()
    if not is_image_name(p):
        return f"not an image file name ({p.suffix or 'no extension'})", digest
    try:
        probe(p)
    except ImageError as exc:
        return exc.reason, digest
    return None, digest


def _cache_file(root: Path) -> Path:
    key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
    return paths.cache_dir() / f"scan-{key}.json"


def seeded_subset(items: Sequence[T], n: int | None, seed: int) -> list[T]:
    """A seeded random subset of ``n`` items, in their original order (all of them if ``n`` is None or larger)."""
    items = list(items)
    if n is None or len(items) <= n:
        return items
    keep = np.sort(np.random.default_rng(seed).choice(len(items), n, replace=False))
    return [items[i] for i in keep]


def subsample(items: list[Item], max_per_class: int, seed: int = 0) -> list[Item]:
    """A deterministic random subset of at most ``max_per_class`` items per class (order kept)."""
    rng = np.random.default_rng(seed)
    keep: set[str] = set()
    for label in CLASS_NAMES:
        pool = [i.path for i in items if i.label == label]
        keep.update(pool[j] for j in rng.permutation(len(pool))[:max_per_class])
    return [i for i in items if i.path in keep]


def scan(root: str | Path, *, use_cache: bool = True, workers: int = 4, progress: bool = True,
         max_per_class: int | None = None, seed: int = 0) -> ScanResult:
    """Discover and decode-check every file under ``root`` once.

    Results are cached per file (keyed by path, size and mtime), so a second scan of
    25,000 files takes seconds. Unusable files are listed in ``ScanResult.skipped``.
    ``max_per_class`` samples files *before* decoding (quick runs stay quick on a fresh
    machine); a sampled file that turns out unreadable is skipped, not replaced.
    """
    root = Path(root)
    items = discover(root)
    if max_per_class:
        items = subsample(items, max_per_class, seed)
    cache_path = _cache_file(root)
    cache: dict[str, list] = {}
    if use_cache and cache_path.exists():
        try:
            cache = json.loads(cache_path.read_text())
        except (OSError, json.JSONDecodeError):
            cache = {}

    def key(item: Item) -> str:
        st = os.stat(item.path)
        return f"{item.path}|{st.st_size}|{st.st_mtime_ns}"

    keys = [key(i) for i in items]
    todo = [(k, i.path) for k, i in zip(keys, items) if k not in cache]
    if todo:
        from tqdm.auto import tqdm

        with ThreadPoolExecutor(max_workers=workers) as pool:  # Pillow releases the GIL while decoding
            results = pool.map(lambda kp: _check_file(kp[1]), todo)
            for (k, _), (reason, digest) in tqdm(zip(todo, results), total=len(todo), desc="scanning",
                                                 disable=not progress, unit="file"):
                cache[k] = [reason, digest]
        if use_cache:
            tmp = cache_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(cache))  # merged: a subset scan keeps earlier entries
            tmp.replace(cache_path)

    good, hashes, skipped = [], {}, []
    for k, item in zip(keys, items):
        reason, digest = cache[k]
        if item.label not in CLASS_NAMES:
            reason = "file name names no class (expected cat.N.jpg or dog.N.jpg)"
        if reason:
            skipped.append({"path": item.path, "reason": reason})
        else:
            good.append(item)
            hashes[item.path] = digest
    if skipped:
        log.warning("%d of %d files skipped (unreadable or not images); see the skipped-file report",
                    len(skipped), len(items))
    return ScanResult(good, hashes, skipped)


# ---------------------------------------------------------------- splitting
def split(scan_result: ScanResult, *, val_fraction: float = 0.15, test_fraction: float = 0.15,
          seed: int = 42) -> list[Item]:
    """Assign every item to train/validation/test, deterministically from ``seed``.

    Stratified by class; byte-identical files form one group and always share a split;
    explicit ``test/`` and ``validation/`` folders are honoured as given.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"bad split fractions: validation={val_fraction}, test={test_fraction}")
    groups: dict[str, list[Item]] = defaultdict(list)
    for item in scan_result.items:
        groups[scan_result.hashes[item.path]].append(item)

    explicit = {i.split for i in scan_result.items if i.split}
    fractions = {"validation": val_fraction, "test": test_fraction}
    for s in explicit & set(fractions):
        fractions[s] = 0.0  # the folder defines this split; don't draw more into it

    rng = np.random.default_rng(seed)
    out: list[Item] = []
    per_class: dict[str, list[list[Item]]] = defaultdict(list)
    for digest in sorted(groups):
        members = groups[digest]
        fixed = next((m.split for m in members if m.split in ("test", "validation")), None)
        if fixed:  # a duplicate of an explicit test/validation image follows it there
            out += [Item(m.path, m.label, fixed) for m in members]
        else:
            per_class[members[0].label].append(members)
    for label in CLASS_NAMES:
        class_groups = per_class.get(label, [])
        order = rng.permutation(len(class_groups))
        n = sum(len(g) for g in class_groups)
        cut_test = fractions["test"] * n
        cut_val = cut_test + fractions["validation"] * n
        seen = 0
        for idx in order:
            members = class_groups[idx]
            name = "test" if seen < cut_test else "validation" if seen < cut_val else "train"
            out += [Item(m.path, m.label, name) for m in members]
            seen += len(members)
    return sorted(out, key=lambda i: (SPLITS.index(i.split), i.label, i.path))


# ---------------------------------------------------------------- manifests
def write_manifest(items: list[Item], path: str | Path) -> Path:
    """Write ``path,label,split`` rows to a CSV manifest.

    Image paths are stored relative to the manifest's folder, so a manifest committed in
    the repo still works in another clone with the data at the same relative place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split"])
        for i in items:
            writer.writerow([Path(os.path.relpath(Path(i.path).resolve(), base)).as_posix(), i.label, i.split])
    return path


def read_manifest(path: str | Path, split_name: str | None = None) -> list[Item]:
    """Read a manifest, optionally keeping one split; validates labels and splits."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"manifest not found: {path} (run notebooks/01_data.ipynb or `catdog data prepare`)")
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    base = path.parent.resolve()
    if not rows or set(rows[0]) < {"path", "label", "split"}:
        raise DatasetError(f"{path}: not a catdog manifest (need columns path,label,split)")
    items = []
    for n, row in enumerate(rows, start=2):
        if row["label"] not in CLASS_NAMES or row["split"] not in SPLITS:
            raise DatasetError(f"{path}, line {n}: bad label/split {row['label']!r}/{row['split']!r}")
        items.append(Item(os.path.normpath(base / row["path"]), row["label"], row["split"]))
    if split_name is not None:
        if split_name not in SPLITS:
            raise ValueError(f"unknown split {split_name!r}; choose from {SPLITS}")
        items = [i for i in items if i.split == split_name]
    return items


def manifest_hash(path: str | Path) -> str:
    """A SHA-256 of the manifest's (file name, label, split) rows: stable across machines."""
    rows = sorted(f"{Path(i.path).parent.name}/{Path(i.path).name},{i.label},{i.split}"
                  for i in read_manifest(path))
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def labels_of(items: list[Item]) -> np.ndarray:
    """Integer labels (cat=0, dog=1) of ``items``."""
    return np.array([CLASS_NAMES.index(i.label) for i in items], dtype=np.int64)


def class_counts(items: list[Item]) -> dict[str, dict[str, int]]:
    """Counts per split and class: ``{"train": {"cat": n, "dog": m}, ...}``."""
    counts: dict[str, dict[str, int]] = {}
    for s in SPLITS:
        c = Counter(i.label for i in items if i.split == s)
        if c:
            counts[s] = {label: c[label] for label in CLASS_NAMES}
    return counts


def prepare(root: str | Path, out_dir: str | Path, *, val_fraction: float = 0.15, test_fraction: float = 0.15,
            seed: int = 42, max_per_class: int | None = None) -> dict:
    """Scan ``root``, split it and write ``manifest.csv``, ``skipped.csv`` and ``dataset.json`` to ``out_dir``.

    ``max_per_class`` keeps a deterministic random subset per class (quick runs).
    Returns the summary written to ``dataset.json``.
    """
    out_dir = Path(out_dir)
    result = scan(root, max_per_class=max_per_class, seed=seed)
    items = split(result, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    manifest = write_manifest(items, out_dir / "manifest.csv")
    result.write_skipped(out_dir / "skipped.csv")
    dup_groups = Counter(result.hashes.values())
    summary = {
        "data_dir": str(Path(root).resolve()),
        "seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction,
        "max_per_class": max_per_class,
        "n_images": len(items), "n_skipped": len(result.skipped),
        "skipped_reasons": dict(Counter(s["reason"].split(" (")[0] for s in result.skipped)),
        "duplicate_groups": sum(1 for n in dup_groups.values() if n > 1),
        "counts": class_counts(items),
        "manifest": str(manifest), "manifest_sha256": manifest_hash(manifest),
    }
    (out_dir / "dataset.json").write_text(json.dumps(summary, indent=2))
    return summary


__all__ = ["Item", "ScanResult", "DatasetError", "SPLITS", "discover", "scan", "split", "prepare",
           "write_manifest", "read_manifest", "manifest_hash", "labels_of", "class_counts"]
