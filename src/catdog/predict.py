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
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from catdog.bundle import Bundle
from catdog.images import ImageError, as_paths, iter_image_files, load_image_sized
from catdog.openset import openset_path

log = logging.getLogger(__name__)

COLUMNS = ("path", "label", "confidence", "p_cat", "p_dog", "uncertain", "ood_score", "error")
# Below this many pixels on the short side a photo is not judged: the row says "too small" and why,
# instead of a silent guess (CIFAR-size 32 px pets were classified at chance and mostly called "neither").
MIN_SIDE = 64
TOO_SMALL = "too small"
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
    Keras model is then not loaded at all. ``reject=True`` needs ``<stem>.openset.npz`` beside
    the model; with ``reject=False`` the score is still reported when a detector exists, but
    never applied.
    """

    def __init__(self, model: PathLike | Bundle | None = None, engine: str = "keras", reject: bool = True,
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
        # An iterator is taken as a stream of files (e.g. from predict_to_csv); anything else is walked.
        if isinstance(paths, Iterator):
            files: Iterator[Path] = (Path(p) for p in paths)
        else:
            files = iter_image_files(paths)
            if total is None and self.progress:
                total = count_image_files(paths)  # a second, cheap directory walk for an ETA
        bar = tqdm(total=total, desc="predicting", unit="img", disable=not self.progress)
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
                   predictor: Predictor | None = None, **predictor_kwargs: Any) -> Path:
    """Predict every image under ``paths`` into ``out_csv`` (columns :data:`COLUMNS`), flushing every batch.

    Paths are written absolute. An existing ``out_csv`` is an error unless ``resume=True``, which
    skips the paths already in it and appends the rest (an interrupted run keeps all flushed
    batches). ``predictor`` reuses a loaded :class:`Predictor`; otherwise ``predictor_kwargs``
    make one (only if something is left to predict).
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
        done = _read_done(out_csv)

    def pending() -> Iterator[Path]:
        for p in iter_image_files(roots):
            p = Path(os.path.abspath(p))
            if csv_text(str(p)) not in done:  # the CSV holds escaped names
                yield p

    remaining = pending()
    first = next(remaining, None)
    if first is None:
        log.info("%s: all images already predicted (%d rows)", out_csv, len(done))
        return out_csv
    if predictor is not None and predictor_kwargs:
        raise TypeError(f"pass either predictor= or Predictor arguments, not both ({sorted(predictor_kwargs)})")
    predictor = predictor or Predictor(**predictor_kwargs)
    total = sum(1 for _ in pending()) if predictor.progress else None
    out_csv.parent.mkdir(parents=True, exist_ok=True)
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


__all__ = ["COLUMNS", "Predictor", "iter_image_files", "count_image_files", "predict_to_csv", "csv_row", "csv_text"]
