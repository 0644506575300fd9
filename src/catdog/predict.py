"""Prediction a person can trust: calibrated, uncertainty-flagged, open-set aware, resumable.

``Predictor`` streams any number of image files (folders are walked lazily) through the model
in batches and yields one row per file:

- ``label``: ``cat``/``dog``; ``neither`` when the "neither" detector (:mod:`catdog.openset`)
  finds the image unlike any cat/dog photo (and ``reject=True``); ``error`` when the file
  cannot be read (the reason is in ``error``; the run goes on); ``too small`` when its short side
  is under :data:`MIN_SIDE` px (reason in ``error``; confidence and probabilities left empty).
- ``confidence``: calibrated probability of the predicted class, ``sigmoid(logit / T)`` with
  the model card's temperature T (empty for ``neither``/``error``).
- ``p_cat``, ``p_dog``: calibrated; ``uncertain``: p_dog within 0.5 ± ``margin``.
- ``ood_score``: the open-set score (larger = less like a cat/dog photo).

The numbers come from :meth:`catdog.bundle.Bundle.predict`; this module adds file handling.
:func:`predict_to_csv` writes rows as they come (flushed every batch) and can resume.

Many machines or cores split one job into shards (:class:`Shard`, ``catdog predict --shard K/N``):
each file belongs to one shard, by a hash of its path relative to the input folder, so shards
never overlap and a rerun anywhere picks the same files. :func:`merge_shards` joins the shards'
CSVs and refuses overlaps, gaps and unfinished shards.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from catdog.bundle import Bundle
from catdog.images import MIN_SIDE, ImageError, as_paths, iter_image_files, load_image_sized
from catdog.openset import openset_path
from catdog.paths import atomic_write
from catdog.runs import show_progress

log = logging.getLogger(__name__)

COLUMNS = ("path", "label", "confidence", "p_cat", "p_dog", "uncertain", "ood_score", "error")
TOO_SMALL = "too small"  # the label of photos under MIN_SIDE px on the short side
PathLike = str | os.PathLike


# ---------------------------------------------------------------- finding files
def count_image_files(paths: PathLike | Iterable[PathLike]) -> int:
    """How many files :func:`iter_image_files` yields (a cheap directory walk, for progress bars)."""
    return sum(1 for _ in iter_image_files(paths))


def _chunks(iterable: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(iterable)
    while chunk := list(islice(it, size)):
        yield chunk


# ---------------------------------------------------------------- predictor
class Predictor:
    """A :class:`~catdog.bundle.Bundle` (model + card + "neither" detector) that turns image files into rows.

    ``model`` is a ``.keras`` path, None (the shipped model) or a loaded Bundle (then ``engine``,
    ``variant`` and ``num_threads`` are the bundle's own). ``engine="tflite"`` runs
    ``<stem>.<variant>.tflite`` beside the model (see :func:`catdog.export.export_tflite`); the
    Keras model is then not loaded at all. ``engine="auto"`` runs the float32 export when a current one
    exists, else Keras (see :meth:`catdog.bundle.Bundle.load`). ``reject=True`` needs ``<stem>.openset.npz`` beside
    the model; with ``reject=False`` the score is still reported when a detector exists, but
    never applied.
    """

    def __init__(self, model: PathLike | Bundle | None = None, engine: str = "auto", reject: bool = True,
                 batch_size: int = 32, *, margin: float = 0.1, variant: str = "float32",
                 num_threads: int | None = None, workers: int | None = None, progress: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= margin < 0.5:
            raise ValueError(f"margin must be in [0, 0.5), got {margin}")
        self.bundle = model if isinstance(model, Bundle) else Bundle.load(
            model, engine=engine, variant=variant, num_threads=num_threads)
        self.reject, self.batch_size, self.margin = reject, batch_size, margin
        self.progress = progress
        self.workers = workers or min(4, os.cpu_count() or 1)
        if reject and not self.bundle.has_detector:
            raise FileNotFoundError(
                f"rejecting 'neither' images needs the detector {openset_path(self.bundle.path)}: `catdog train` "
                "fits one automatically, or fit it for this model with catdog.openset.fit_openset; "
                "or predict without rejection (reject=False / --no-reject)")
        if reject:
            self.bundle.detector  # noqa: B018 - fail now, not mid-run, if it was fitted on another model file
        self.bundle.runner  # noqa: B018 - load the model (or TFLite file) now: a missing or stale export fails here

    # ------------------------------------------------------------ model facts (from the bundle)
    @property
    def model_path(self) -> Path:
        """The ``.keras`` file predicted with."""
        return self.bundle.path

    @property
    def temperature(self) -> float:
        """Calibration from the model card: p(dog) = sigmoid(logit / temperature)."""
        return self.bundle.temperature

    @property
    def threshold(self) -> float:
        """Decision threshold from the model card: dog when calibrated p(dog) >= threshold."""
        return self.bundle.threshold

    @property
    def image_size(self) -> int:
        """The square input size images are decoded at."""
        return self.bundle.image_size

    # ------------------------------------------------------------ arrays -> numbers
    def predict_arrays(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Calibrated numbers for a batch of 0..255 RGB images at :attr:`image_size`.

        Returns ``logit``, ``p_dog`` (calibrated), ``ood_score`` (NaN without a detector) and
        ``neither`` (rejection applied only if ``reject``); see :meth:`catdog.bundle.Bundle.predict`.
        """
        return self.bundle.predict(images, reject=self.reject)

    def _rows(self, paths: list[Path], loaded: list[tuple[np.ndarray | None, str]]) -> list[dict[str, Any]]:
        good = [i for i, (img, _) in enumerate(loaded) if img is not None]
        numbers = self.predict_arrays(np.stack([loaded[i][0] for i in good])) if good else None
        rows: list[dict[str, Any]] = [{"path": str(p), "label": TOO_SMALL if reason.startswith(TOO_SMALL) else "error",
                                       "confidence": None, "p_cat": None, "p_dog": None, "uncertain": None,
                                       "ood_score": None, "error": reason}
                                      for p, (_, reason) in zip(paths, loaded)]
        for k, i in enumerate(good):
            p_dog = float(numbers["p_dog"][k])
            dog = p_dog >= self.threshold
            neither = bool(numbers["neither"][k])
            score = float(numbers["ood_score"][k])
            rows[i].update(label="neither" if neither else ("dog" if dog else "cat"),
                           confidence=None if neither else round(p_dog if dog else 1.0 - p_dog, 6),
                           p_cat=round(1.0 - p_dog, 6), p_dog=round(p_dog, 6),
                           uncertain=abs(p_dog - 0.5) <= self.margin,
                           ood_score=None if np.isnan(score) else round(score, 4), error="")
        return rows

    # ------------------------------------------------------------ files -> rows
    def _load(self, path: Path) -> tuple[np.ndarray | None, str]:
        """One file decoded for the model, or None and why not (unreadable, or under :data:`MIN_SIDE` px)."""
        try:
            image, (width, height) = load_image_sized(path, self.image_size)
            if min(width, height) < MIN_SIDE:
                return None, (f"{TOO_SMALL}: {width}x{height} px, catdog needs at least {MIN_SIDE} px "
                              "on the short side")
            return image, ""
        except ImageError as exc:
            return None, exc.reason
        except Exception as exc:  # never stop a long run on one odd file
            return None, f"{type(exc).__name__}: {exc}"

    def predict_batches(self, paths: PathLike | Iterable[PathLike], total: int | None = None
                        ) -> Iterator[list[dict[str, Any]]]:
        """Rows for ``paths`` one batch at a time (in input order), with a tqdm progress bar.

        ``paths`` are files and/or folders (see :func:`iter_image_files`), or an iterator of
        file paths taken as they come. Decoding runs in a thread pool one batch ahead of the model; this is not
        :func:`catdog.datasets.image_dataset` because a tf.data pipeline cannot turn one
        unreadable file into an error row and carry on.
        """
        progress = show_progress(self.progress)
        # An iterator is taken as a stream of files (e.g. from predict_to_csv); anything else is walked.
        if isinstance(paths, Iterator):
            files: Iterator[Path] = (Path(p) for p in paths)
        else:
            files = iter_image_files(paths)
            if total is None and progress:
                total = count_image_files(paths)  # a second, cheap directory walk for an ETA
        bar = tqdm(total=total, desc="predicting", unit="img", disable=not progress)
        with ThreadPoolExecutor(self.workers) as pool, bar:
            pending: tuple[list[Path], list[Future]] | None = None
            for chunk in _chunks(files, self.batch_size):
                submitted = (chunk, [pool.submit(self._load, p) for p in chunk])
                if pending is not None:  # the next batch decodes while this one runs through the model
                    yield self._finish(pending, bar)
                pending = submitted
            if pending is not None:
                yield self._finish(pending, bar)

    def _finish(self, pending: tuple[list[Path], list[Future]], bar) -> list[dict[str, Any]]:
        chunk, futures = pending
        rows = self._rows(chunk, [f.result() for f in futures])
        bar.update(len(rows))
        return rows

    def predict_paths(self, paths: PathLike | Iterable[PathLike], total: int | None = None
                      ) -> Iterator[dict[str, Any]]:
        """One row (dict with :data:`COLUMNS`) per image file, streamed."""
        for rows in self.predict_batches(paths, total):
            yield from rows


# ---------------------------------------------------------------- CSV output
def csv_text(value: Any) -> Any:
    """A CSV cell as valid UTF-8: file-name bytes that are not UTF-8 become ``\\xNN`` (other values unchanged).

    Used for every row written (file and stdout) and for the paths ``--resume`` compares, so an
    escaped name round-trips.
    """
    if not isinstance(value, str):
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def csv_row(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with every text cell passed through :func:`csv_text`."""
    return {key: csv_text(value) for key, value in row.items()}


def _check_header(out_csv: Path, data: bytes) -> None:
    """Refuse a file that is not a catdog predictions CSV, before anything in it is changed."""
    first = data.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace")
    header = next(csv.reader([first]), [])
    if tuple(header) != COLUMNS:
        raise ValueError(f"{out_csv} is not a catdog predictions CSV (header {header}); "
                         "choose another --out file")


def _read_done(out_csv: Path) -> set[str]:
    """Paths already in ``out_csv``; a half-written last line (interrupted run) is cut off first.

    The header is checked before that cut: a foreign file is never modified.
    """
    with open(out_csv, "rb+") as f:
        data = f.read()
        if data:
            _check_header(out_csv, data)
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            f.seek(cut)
            f.truncate()
            log.warning("%s: dropped an incomplete last line left by an interrupted run", out_csv)
    with open(out_csv, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return set()
        if tuple(header) != COLUMNS:
            raise ValueError(f"{out_csv} is not a catdog predictions CSV (header {header}); "
                             "choose another --out file")
        return {row[0] for row in reader if row}


def predict_to_csv(paths: PathLike | Iterable[PathLike], out_csv: PathLike, *, resume: bool = False,
                   shard: Shard | None = None, predictor: Predictor | None = None, **predictor_kwargs: Any) -> Path:
    """Predict every image under ``paths`` into ``out_csv`` (columns :data:`COLUMNS`), flushing every batch.

    Paths are written absolute. An existing ``out_csv`` is an error unless ``resume=True``, which
    skips the paths already in it and appends the rest (an interrupted run keeps all flushed
    batches). ``shard`` predicts only that shard's files and records it beside the CSV
    (:func:`shard_record_path`), for :func:`merge_shards`. ``predictor`` reuses a loaded
    :class:`Predictor`; otherwise ``predictor_kwargs`` make one (only if something is left to predict).
    """
    out_csv = Path(out_csv)
    if out_csv.is_dir():
        raise IsADirectoryError(f"--out {out_csv} is a folder; give a CSV file name, e.g. {out_csv / 'predictions.csv'}")
    roots = as_paths(paths)
    iter_image_files(roots)  # validate the arguments before touching the output file
    done: set[str] = set()
    if out_csv.exists():
        if not resume:
            raise FileExistsError(f"{out_csv} already exists; pass resume=True (--resume) to continue it, "
                                  "or choose another output file")
        _check_same_shard(out_csv, roots, shard)
        done = _read_done(out_csv)

    def pending() -> Iterator[Path]:
        for p in shard_files(roots, shard):
            if csv_text(str(p)) not in done:  # the CSV holds escaped names
                yield p

    remaining = pending()
    first = next(remaining, None)
    if first is None:
        if shard is not None:
            if not out_csv.exists():  # an empty shard still leaves its CSV for the merge
                atomic_write(out_csv, ",".join(COLUMNS) + "\r\n")
            _write_shard_record(out_csv, roots, shard)
        log.info("%s: all images already predicted (%d rows)", out_csv, len(done))
        return out_csv
    if predictor is not None and predictor_kwargs:
        raise TypeError(f"pass either predictor= or Predictor arguments, not both ({sorted(predictor_kwargs)})")
    predictor = predictor or Predictor(**predictor_kwargs)
    total = sum(1 for _ in pending()) if predictor.progress else None
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    if shard is not None:  # once the model loaded, before any row: merge_shards checks the CSV against it
        _write_shard_record(out_csv, roots, shard)
    new_file = not out_csv.exists() or out_csv.stat().st_size == 0
    with open(out_csv, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new_file:
            writer.writeheader()
        for rows in predictor.predict_batches(_prepend(first, remaining), total):
            writer.writerows(csv_row(r) for r in rows)
            f.flush()
    return out_csv


def _prepend(first: Path, rest: Iterator[Path]) -> Iterator[Path]:
    yield first
    yield from rest


# ---------------------------------------------------------------- shards
@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based): the files whose :func:`shard_key` hashes to ``index``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.index <= self.count:
            raise ValueError(f"--shard {self.index}/{self.count}: need 1 <= K <= N (shard K of N), "
                             f"got K={self.index}, N={self.count}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, key: str) -> bool:
        """Whether the file with this :func:`shard_key` is in this shard."""
        return shard_number(key, self.count) == self.index


def parse_shard(text: str) -> Shard:
    """``"K/N"`` as a :class:`Shard` (1 <= K <= N); ValueError saying what is wrong otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if match is None:
        raise ValueError(f"--shard {text!r}: expected K/N, e.g. 2/8 for shard 2 of 8 (1 <= K <= N)")
    return Shard(int(match[1]), int(match[2]))


def shard_number(key: str, count: int) -> int:
    """The shard (1..count) of a file: SHA-1 of its :func:`shard_key`, as an integer, mod ``count``, plus 1.

    A cryptographic hash because Python's own ``hash`` of a string changes with every process.
    """
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest(), "big") % count + 1


def shard_key(path: str, root: str) -> str:
    """What a file's shard is computed from: ``path`` relative to the input ``root`` it was found under
    (``/``-separated), or the file's name when ``root`` is the file itself. Both are CSV texts
    (:func:`csv_text`) of absolute paths, so a shard's rows give the same keys as its files did.
    """
    if path == root:
        return Path(path).name
    return Path(path).relative_to(root).as_posix()


def _root_texts(roots: Sequence[Path]) -> list[str]:
    return [csv_text(os.path.abspath(r)) for r in roots]


def shard_files(paths: PathLike | Iterable[PathLike], shard: Shard | None) -> Iterator[Path]:
    """The image files under ``paths`` (as :func:`iter_image_files`, made absolute) in ``shard`` (None: all)."""
    roots = as_paths(paths)
    iter_image_files(roots)  # every argument checked before anything is yielded
    for root, root_text in zip(roots, _root_texts(roots)):
        for p in iter_image_files(root):
            p = Path(os.path.abspath(p))
            if shard is None or shard.holds(shard_key(csv_text(str(p)), root_text)):
                yield p


def shard_record_path(out_csv: PathLike) -> Path:
    """``<out_csv>.shard.json``: which shard of which inputs ``out_csv`` holds, and how many files that is."""
    out_csv = Path(out_csv)
    return out_csv.with_name(out_csv.name + ".shard.json")


def _write_shard_record(out_csv: Path, roots: Sequence[Path], shard: Shard) -> None:
    """Record which shard of which inputs ``out_csv`` holds and how many files that is (the files as of now)."""
    atomic_write(shard_record_path(out_csv), json.dumps(
        {"shard": shard.index, "shards": shard.count, "roots": _root_texts(roots),
         "files": sum(1 for _ in shard_files(roots, shard))}, indent=2))


def _check_same_shard(out_csv: Path, roots: Sequence[Path], shard: Shard | None) -> None:
    """Refuse to resume ``out_csv`` with another shard, other inputs, or with/without ``--shard`` unlike before."""
    record_path = shard_record_path(out_csv)
    if not record_path.is_file():
        if shard is not None:
            raise ValueError(f"{out_csv} holds an unsharded run; resume it without --shard, "
                             f"or write shard {shard} to another file")
        return
    record = _read_record(record_path)
    was = f"{record['shard']}/{record['shards']}"
    if shard is None:
        raise ValueError(f"{out_csv} holds shard {was} (see {record_path}); resume it with --shard {was}")
    if str(shard) != was or record["roots"] != _root_texts(roots):
        raise ValueError(f"{out_csv} holds shard {was} of {', '.join(record['roots'])}; this run is shard {shard} "
                         f"of {', '.join(_root_texts(roots))}: give the same inputs and --shard, or another --out")


def _read_record(record_path: Path) -> dict:
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if {"shard", "shards", "roots", "files"} <= set(record):
            return record
    except (OSError, ValueError):
        pass
    raise ValueError(f"{record_path} is not a shard record written by `catdog predict --shard`")


@dataclass
class _ShardCSV:
    path: Path
    record: dict
    header: list[str]
    rows: list[list[str]]


def _read_shard_csv(path: Path) -> _ShardCSV:
    """A shard's CSV and its record, with every line complete (an interrupted shard is named)."""
    record_path = shard_record_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such shard CSV: {path}")
    if not record_path.is_file():
        raise ValueError(f"{path}: no {record_path.name} beside it, so it is not the output of "
                         "`catdog predict --shard K/N --out ...` and its shard cannot be checked")
    record = _read_record(record_path)
    with open(path, newline="", encoding="utf-8") as f:
        header, *rows = list(csv.reader(f)) or [[]]
    if "path" not in header:
        raise ValueError(f"{path} is not a catdog predictions CSV (header {header})")
    for line, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise ValueError(f"{path} line {line} is incomplete (an interrupted run?): "
                             f"rerun its shard with --resume, then merge")
    return _ShardCSV(path, record, header, rows)


def _check_one_job(shards: list[_ShardCSV]) -> None:
    """Same header, same N, same inputs."""
    first = shards[0]
    for s in shards:
        if s.header != first.header:
            raise ValueError(f"{s.path} has the columns {s.header}, {first.path} has {first.header}: "
                             "merge only shards of one catdog predict job")
        if s.record["shards"] != first.record["shards"] or s.record["roots"] != first.record["roots"]:
            raise ValueError(f"{s.path} is shard {s.record['shard']}/{s.record['shards']} of "
                             f"{', '.join(s.record['roots'])}, but {first.path} is shard "
                             f"{first.record['shard']}/{first.record['shards']} of {', '.join(first.record['roots'])}: "
                             "merge only shards of one job")


def _check_every_shard_once(shards: list[_ShardCSV]) -> None:
    """Every shard 1..N given exactly once."""
    first = shards[0]
    by_number: dict[int, Path] = {}
    for s in shards:
        number = s.record["shard"]
        if number in by_number:
            raise ValueError(f"{by_number[number]} and {s.path} both hold shard {number}/{s.record['shards']}")
        by_number[number] = s.path
    missing = sorted(set(range(1, first.record["shards"] + 1)) - set(by_number))
    if missing:
        names = ", ".join(f"{k}/{first.record['shards']}" for k in missing)
        raise ValueError(f"shard(s) {names} missing: pass the CSVs of all {first.record['shards']} shards "
                         f"(got {len(shards)})")


def _check_rows(shard: _ShardCSV, column: int, seen: dict[str, Path]) -> None:
    """Every row of ``shard`` is a new path of its own shard, and the shard has all its files."""
    number, count = shard.record["shard"], shard.record["shards"]
    roots = shard.record["roots"]
    for row in shard.rows:
        path = row[column]
        if path in seen:
            raise ValueError(f"{path} is in both {seen[path]} and {shard.path}: shards must not overlap")
        seen[path] = shard.path
        root = next((r for r in roots if path == r or Path(path).is_relative_to(r)), None)
        if root is None:
            raise ValueError(f"{shard.path}: {path} is under none of the job's inputs ({', '.join(roots)})")
        if shard_number(shard_key(path, root), count) != number:
            raise ValueError(f"{shard.path}: {path} belongs to shard {shard_number(shard_key(path, root), count)}"
                             f"/{count}, not {number}/{count}: this CSV is not that shard's output")
    if len(shard.rows) < shard.record["files"]:
        raise ValueError(f"{shard.path} has {len(shard.rows)} rows but its shard {number}/{count} has "
                         f"{shard.record['files']} files: rerun it with --resume until it finishes, then merge")
    if len(shard.rows) > shard.record["files"]:
        raise ValueError(f"{shard.path} has {len(shard.rows)} rows but its shard {number}/{count} has only "
                         f"{shard.record['files']} files now: files were removed since it ran")


def merge_shards(out_csv: PathLike, shard_csvs: Sequence[PathLike]) -> Path:
    """Join the CSVs of all N ``catdog predict --shard K/N`` runs of one job into ``out_csv``, sorted by path.

    Checked first, from each CSV's ``.shard.json`` record (:func:`predict_to_csv` writes it):
    identical headers; one job (same N, same inputs); every shard 1..N present once; every row
    in the shard its path hashes to, no path twice; and each shard complete (as many rows as
    its record's file count). ``out_csv`` must not exist; it appears whole or not at all.
    """
    out_csv = Path(out_csv)
    if out_csv.exists():
        raise FileExistsError(f"{out_csv} already exists; merge writes a new file (choose another name)")
    if not shard_csvs:
        raise ValueError("no shard CSVs given: catdog predict merge OUT.csv SHARD.csv...")
    shards = [_read_shard_csv(Path(p)) for p in shard_csvs]
    _check_one_job(shards)
    column = shards[0].header.index("path")
    seen: dict[str, Path] = {}
    for shard in shards:
        _check_rows(shard, column, seen)
    _check_every_shard_once(shards)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(shards[0].header)
    writer.writerows(sorted((row for s in shards for row in s.rows), key=lambda row: row[column]))
    return _write_new_atomically(out_csv, buffer.getvalue())


def _write_new_atomically(path: Path, text: str) -> Path:
    """Write ``path`` whole (a temporary file, hard-linked into place) and only if it does not exist yet.

    ``os.link`` fails if ``path`` exists, where ``os.replace`` (:func:`catdog.paths.atomic_write`) would replace it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(f"{path} already exists; merge writes a new file (choose another name)") from None
    finally:
        os.unlink(tmp)
    return path


__all__ = ["COLUMNS", "Predictor", "iter_image_files", "count_image_files", "predict_to_csv", "csv_row", "csv_text",
           "Shard", "parse_shard", "shard_number", "shard_key", "shard_files", "shard_record_path", "merge_shards"]
