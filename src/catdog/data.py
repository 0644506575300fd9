"""Finding, scanning and splitting a cat/dog dataset.

The flow is ``discover`` (which files, which class, any explicit split) -> ``scan``
(decode every file once, cached; unusable files go to a skipped-file report) ->
``split`` (deterministic, stratified, duplicates kept together) -> a CSV manifest
(``path,label,split``) that every later step reads. The data folder is never modified.
"""

from __future__ import annotations

import csv
import hashlib
import io
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
from tqdm.auto import tqdm

from catdog import paths
from catdog.conventions import CLASS_NAMES
from catdog.images import ImageError, is_image_name, probe, walk_files
from catdog.runs import show_progress

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

    def skipped_csv(self) -> str:
        """The skipped-file report as CSV text (``path,reason``); undecodable name bytes as ``\\xNN``."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["path", "reason"], lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: csv_text(v) for k, v in row.items()} for row in self.skipped)
        return buf.getvalue()

    def write_skipped(self, path: str | Path) -> Path:
        """Write the skipped-file report as CSV (``path,reason``), atomically."""
        return paths.atomic_write(path, self.skipped_csv())


def csv_text(text: str) -> str:
    """``text`` as valid UTF-8 for a CSV: file-name bytes that are not UTF-8 written as ``\\xNN``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _utf8_name(path: str) -> bool:
    try:
        path.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


# ---------------------------------------------------------------- discovery
def _class_of(name: str) -> str | None:
    return _CLASS_ALIASES.get(name.lower())


def _files(folder: Path) -> list[Path]:
    """All files below ``folder`` (recursive, sorted, hidden files ignored, symlinked folders followed)."""
    return sorted(walk_files(folder))


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
    items = [Item(str(f), label, split) for label, folder in folders.items() for f in _files(folder)]
    # The folder is the label; a name saying the other class (Dog/cat_friend.jpg) is reported, not obeyed.
    conflicts = [i.path for i in items if (m := _KAGGLE_NAME.match(Path(i.path).name)) and m.group(1).lower() != i.label]
    if conflicts:
        log.warning("%d file(s) are named after the other class than their folder; the folder decides the label "
                    "(e.g. %s)", len(conflicts), ", ".join(csv_text(c) for c in conflicts[:3]))
    return items


def _items_from_kaggle_flat(folder: Path, split: str | None) -> list[Item]:
    items = []
    for f in _files(folder):
        m = _KAGGLE_NAME.match(f.name)
        # a file without a class in its name is kept as "unknown": reported as skipped, never dropped silently
        items.append(Item(str(f), m.group(1).lower() if m else "unknown", split))
    return items


def _discover_in(root: Path, by_name: bool = True) -> list[Item]:
    """Items under ``root`` for whichever layout it has, or [] if none matches.

    ``by_name=False`` looks for folder layouts only: class folders one level down must win
    over file names that happen to start with ``cat``/``dog`` (``Dog/cat_friend.jpg``).
    """
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
    if not by_name:
        return []
    items = _items_from_kaggle_flat(root, None)
    return items if any(i.label != "unknown" for i in items) else []


def discover(root: str | Path) -> list[Item]:
    """Find the images under ``root`` in any supported layout (see ``data/README.md``).

    Looks in ``root`` and, if nothing matches there, one folder level down (e.g.
    ``root/PetImages/Cat``). Raises :class:`DatasetError` if no layout matches or a class is missing.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data folder not found: {root} (run `catdog data fetch` or set CATDOG_DATA_DIR)")
    children = sorted(p for p in root.iterdir() if p.is_dir())
    items: list[Item] = []
    for by_name in (False, True):  # folder layouts (here, then one level down) before file-name labels
        for folder in [root, *children]:
            items = _discover_in(folder, by_name)
            if items:
                break
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


def _check_max_per_class(max_per_class: int | None) -> None:
    if max_per_class is not None and (isinstance(max_per_class, bool) or not isinstance(max_per_class, int)
                                      or max_per_class < 1):
        raise ValueError(f"max_per_class must be a whole number >= 1 (or None for every image), got {max_per_class!r}")


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
    _check_max_per_class(max_per_class)
    items = discover(root)
    if max_per_class is not None:
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
        with ThreadPoolExecutor(max_workers=workers) as pool:  # Pillow releases the GIL while decoding
            results = pool.map(lambda kp: _check_file(kp[1]), todo)
            for (k, _), (reason, digest) in tqdm(zip(todo, results), total=len(todo), desc="scanning",
                                                 disable=not show_progress(progress), unit="file"):
                cache[k] = [reason, digest]
        if use_cache:
            tmp = cache_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(cache))  # merged: a subset scan keeps earlier entries
            tmp.replace(cache_path)

    good, hashes, skipped = [], {}, []
    for k, item in zip(keys, items):
        reason, digest = cache[k]
        if item.label not in CLASS_NAMES:
            reason = "file name names no class (expected cat.N.jpg or dog.N.jpg, or Cat/ and Dog/ folders)"
        elif not reason and not _utf8_name(item.path):  # a manifest is UTF-8 text; tf.data needs UTF-8 paths
            reason = "file name is not valid UTF-8 (rename the file to use it)"
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
    return paths.atomic_write(path, _manifest_text(items, path.parent))


def _manifest_rows(items: list[Item], folder: Path) -> list[list[str]]:
    base = Path(os.path.abspath(folder)).resolve()
    return [[Path(os.path.relpath(Path(i.path).resolve(), base)).as_posix(), i.label, i.split] for i in items]


def _manifest_text(items: list[Item], folder: Path) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "label", "split"])
    writer.writerows(_manifest_rows(items, folder))
    return buf.getvalue()


def _rows_hash(rows: list[tuple[str, str, str]]) -> str:
    """The hash of :func:`manifest_hash` from (absolute path, label, split) rows."""
    keys = sorted(f"{Path(p).parent.name}/{Path(p).name},{label},{split}" for p, label, split in rows)
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()


def read_manifest(path: str | Path, split_name: str | None = None) -> list[Item]:
    """Read a manifest, optionally keeping one split; validates labels and splits."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"manifest not found: {path} (run notebooks/01_data.ipynb or `catdog data prepare`)")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        rows = list(reader)
    base = path.parent.resolve()
    missing = [c for c in ("path", "label", "split") if c not in header]
    if missing:
        raise DatasetError(f"{path}: not a catdog manifest: no column {', '.join(map(repr, missing))} in the header "
                           f"{','.join(header) or '(empty file)'} (need columns path,label,split)")
    if not rows:
        raise DatasetError(f"{path}: the manifest has a header but no rows")
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
    return _rows_hash([(i.path, i.label, i.split) for i in read_manifest(path)])


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


def check_splits(items: list[Item], scan_result: ScanResult, val_fraction: float, test_fraction: float) -> None:
    """Refuse a split a model cannot be trained or judged on: every class in train, and in each requested split."""
    usable = Counter(i.label for i in scan_result.items)
    wanted = ["train"] + [s for s, f in (("validation", val_fraction), ("test", test_fraction)) if f > 0]
    for label in CLASS_NAMES:
        if not usable[label]:
            examples = "; ".join(f"{csv_text(s['path'])}: {s['reason']}" for s in scan_result.skipped[:3])
            raise DatasetError(f"no usable {label} images: every {label} file was unreadable "
                               f"({len(scan_result.skipped)} files skipped in all, e.g. {examples}); "
                               "a classifier needs both cats and dogs")
    counts = class_counts(items)
    for split_name in wanted:
        for label in CLASS_NAMES:
            if not counts.get(split_name, {}).get(label):
                raise DatasetError(
                    f"the {split_name!r} split would hold no {label} images ({usable[label]} usable {label} "
                    f"image(s) in all; splitting into {', '.join(wanted)} needs at least {len(wanted)} per class, "
                    f"more for fractions {val_fraction}/{test_fraction}): add images or change --val/--test")


def prepare(root: str | Path, out_dir: str | Path, *, val_fraction: float = 0.15, test_fraction: float = 0.15,
            seed: int = 42, max_per_class: int | None = None, force: bool = False) -> dict:
    """Scan ``root``, split it and write ``manifest.csv``, ``skipped.csv`` and ``dataset.json`` to ``out_dir``.

    ``max_per_class`` keeps a deterministic random subset per class (quick runs). A folder
    that already holds a manifest is refused unless ``force``. The three files are written
    only once everything succeeded, each atomically (a failure leaves the old ones intact).
    Returns the summary written to ``dataset.json``.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--out {out_dir} is a file; prepare writes a folder (manifest.csv, skipped.csv, "
                                 "dataset.json)")
    existing = [n for n in ("manifest.csv", "dataset.json") if (out_dir / n).exists()]
    if existing and not force:
        raise FileExistsError(f"{out_dir} already holds {', '.join(existing)}; refusing to replace a prepared "
                              "dataset (choose another --out folder, or pass --force / force=True)")
    _check_max_per_class(max_per_class)
    result = scan(root, max_per_class=max_per_class, seed=seed)
    items = split(result, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    check_splits(items, result, val_fraction, test_fraction)
    manifest = out_dir / "manifest.csv"
    manifest_text, skipped_text = _manifest_text(items, out_dir), result.skipped_csv()
    base = Path(os.path.abspath(out_dir)).resolve()
    rows_hash = _rows_hash([(os.path.normpath(base / r[0]), r[1], r[2]) for r in _manifest_rows(items, out_dir)])
    dup_groups = Counter(result.hashes.values())
    summary = {
        "data_dir": str(Path(root).resolve()),
        "seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction,
        "max_per_class": max_per_class,
        "n_images": len(items), "n_skipped": len(result.skipped),
        "skipped_reasons": dict(Counter(s["reason"].split(" (")[0] for s in result.skipped)),
        "duplicate_groups": sum(1 for n in dup_groups.values() if n > 1),
        "counts": class_counts(items),
        "manifest": str(manifest), "manifest_sha256": rows_hash,
    }
    summary_text = json.dumps(summary, indent=2)
    # everything is computed: now write, each file replaced whole (never half a manifest)
    paths.atomic_write(manifest, manifest_text)
    paths.atomic_write(out_dir / "skipped.csv", skipped_text)
    paths.atomic_write(out_dir / "dataset.json", summary_text)
    return summary


__all__ = ["Item", "ScanResult", "DatasetError", "SPLITS", "discover", "scan", "split", "prepare",
           "write_manifest", "read_manifest", "manifest_hash", "labels_of", "class_counts"]
