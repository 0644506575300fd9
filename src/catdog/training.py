"""Two-phase transfer learning (or single-phase from scratch), resumable, with a model card.

Phase ``head``: backbone frozen, only the classifier head learns. By default its input
features are computed once per image (no augmentation) and cached in the run folder, so
each head epoch costs milliseconds instead of a full backbone pass.
Phase ``finetune``: the top ``finetune_layers`` backbone layers are unfrozen (BatchNorm
stays frozen, in inference mode) and trained with augmentation at a low learning rate.
``simple_cnn`` trains in one phase, ``scratch``, with augmentation.

Every epoch is backed up (``keras.callbacks.BackupAndRestore``): rerunning :func:`train`
on the same run folder after an interruption resumes from the last finished epoch (a folder
holding a run with other settings is refused, see :func:`check_resume`). The finished model
gets its :class:`~catdog.card.ModelCard`, ``history.csv`` and its "neither" detector
(:func:`catdog.openset.fit_openset`).

``TrainConfig.distribution`` trains under a ``tf.distribute`` strategy (:func:`strategy_for`):
``"mirrored"`` over the GPUs (or CPU devices) of one machine, ``"multiworker"`` over the machines
named in ``TF_CONFIG``. ``batch_size`` is the global batch, split over the replicas; the learning
rates are used as given (whoever scales the global batch by k usually scales them by k too).
Under ``"multiworker"`` only the chief writes the run folder; every other worker works in a
temporary copy of it (:func:`is_chief`), so the run folder must be on a file system all workers see.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cache
from pathlib import Path
from typing import Any

import keras
import numpy as np
import sklearn
import tensorflow as tf

from catdog.card import ModelCard
from catdog.conventions import VERSION
from catdog.data import labels_of, manifest_hash, read_manifest
from catdog.datasets import Augmentation, make_dataset
from catdog.inference import extract_features, predict_logits
from catdog.metrics import apply_temperature, compute_metrics, fit_temperature
from catdog.models import (build_model, ensemble_model, head_model, image_size_of, load_model, save_model,
                           set_trainable)
from catdog.openset import fit_openset, openset_path
from catdog.paths import atomic_write

log = logging.getLogger(__name__)
DISTRIBUTIONS = ("none", "mirrored", "multiworker")


@dataclass
class TrainConfig:
    """Every knob of a training run (the notebooks' parameters map onto these)."""

    # The defaults are the shipped model's recipe (reports/MODEL_SELECTION.md): MobileNetV2 at 288 px, a head
    # on cached features, then every backbone layer fine-tuned for 7 epochs, one of them a warm-up.
    backbone: str = "mobilenet_v2"
    image_size: int = 288
    weights: str | None = "imagenet"
    batch_size: int = 32
    head_epochs: int = 20
    head_lr: float = 1e-3
    finetune_epochs: int = 7
    finetune_layers: int | None = None  # top backbone layers unfrozen in phase 2; None: all of them
    finetune_lr: float = 3e-5
    dropout: float = 0.2
    augment: bool = True
    augmentation: dict = field(default_factory=lambda: Augmentation().as_dict())
    patience: int = 7
    schedule: str = "cosine"  # "plateau" (ReduceLROnPlateau) | "cosine" (per step, to 0 at the phase's last epoch)
    warmup_epochs: int = 1  # cosine only: the fine-tune rate rises linearly from 0 over these first epochs
    label_smoothing: float = 0.0
    cache_features: bool = True
    cache_images: bool = False
    seed: int = 42
    init_model: str | None = None  # continue from this saved .keras model (its history is carried over)
    openset_images: int | None = 2000  # train and validation photos for the "neither" detector (None: all; 0: skip)
    distribution: str = "none"  # "none" | "mirrored" (GPUs of one machine) | "multiworker" (TF_CONFIG); see strategy_for

    def __post_init__(self) -> None:
        unknown = sorted(set(self.augmentation) - {f.name for f in fields(Augmentation)})
        if unknown:
            raise ValueError(f"unknown augmentation field(s) {', '.join(unknown)}; "
                             f"known: {', '.join(f.name for f in fields(Augmentation))}")
        self.augmentation = Augmentation(**self.augmentation).as_dict()
        if self.schedule not in ("plateau", "cosine"):
            raise ValueError(f"schedule must be 'plateau' or 'cosine', got {self.schedule!r}")
        if self.warmup_epochs and self.finetune_epochs and (self.schedule != "cosine"
                                                            or self.warmup_epochs >= self.finetune_epochs):
            raise ValueError("warmup_epochs needs schedule='cosine' and fewer warm-up than fine-tune epochs, "
                             f"got {self.warmup_epochs} with schedule={self.schedule!r}, "
                             f"finetune_epochs={self.finetune_epochs} (set warmup_epochs to 0 for no warm-up)")
        if self.finetune_layers is not None and (isinstance(self.finetune_layers, bool)
                                                 or not isinstance(self.finetune_layers, int) or self.finetune_layers < 0):
            raise ValueError(f"finetune_layers must be None (all layers) or a count >= 0, got {self.finetune_layers}")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {', '.join(map(repr, DISTRIBUTIONS))}, "
                             f"got {self.distribution!r}")
        if self.openset_images is not None and self.openset_images < 0:
            raise ValueError(f"openset_images must be None (all photos), 0 (no detector) or a positive count, "
                             f"got {self.openset_images}")

    @classmethod
    def from_params(cls, **params: Any) -> TrainConfig:
        """A config from loosely typed parameters: CLI options, notebook and pipeline parameters.

        ``weights`` ``"none"``/``"null"``/``""`` (any case) means random initialisation;
        ``finetune_layers`` ``"all"``/``"none"``/``""`` means every backbone layer;
        ``init_model`` ``""`` means none (start from the backbone's weights); ``augmentation``
        (a dict, or a JSON object string such as ``'{"shear": 0}'``) holds only the fields that
        differ from :class:`~catdog.datasets.Augmentation`'s defaults. Keys that are not
        TrainConfig fields raise ValueError: pass only training parameters.
        """
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise ValueError(f"unknown training parameter(s) {', '.join(unknown)}; known: {', '.join(names)}")
        kwargs = dict(params)
        if "weights" in kwargs:
            weights = kwargs["weights"]
            kwargs["weights"] = None if str(weights).strip().lower() in ("", "none", "null") else str(weights)
        if "finetune_layers" in kwargs and str(kwargs["finetune_layers"]).strip().lower() in ("all", "none", "null", ""):
            kwargs["finetune_layers"] = None
        if "init_model" in kwargs:
            kwargs["init_model"] = str(kwargs["init_model"]) if kwargs["init_model"] not in (None, "") else None
        if "augmentation" in kwargs:
            kwargs["augmentation"] = {**Augmentation().as_dict(), **_augmentation_overrides(kwargs["augmentation"])}
        return cls(**kwargs)


def _augmentation_overrides(value: Mapping | str | None) -> dict:
    """Augmentation overrides as a dict, from a dict, a JSON object string, or None/"" (no overrides)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"augmentation is not valid JSON ({exc}); give an object such as "
                             "'{\"shear\": 0}'") from None
    if not isinstance(value, Mapping):
        raise ValueError(f"augmentation must be a dict (or JSON object) of overrides such as {{\"shear\": 0}}, "
                         f"got {value!r}")
    return dict(value)


@dataclass
class TrainResult:
    model: keras.Model
    model_path: Path
    card: ModelCard
    history_csv: Path | None  # None for an ensemble (it has no training history of its own)
    detector_path: Path | None  # the "neither" detector (None when TrainConfig.openset_images is 0)
    members: list[TrainResult] = field(default_factory=list)  # an ensemble trained by train_ensemble: its members

    def histories(self) -> dict[str, Path]:
        """Training history CSVs by model file name: this model's, or each member's for an ensemble."""
        runs = self.members or [self]
        return {r.model_path.name: r.history_csv for r in runs if r.history_csv is not None}


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow (one call, one seed)."""
    keras.utils.set_random_seed(seed)


# ---------------------------------------------------------------- distribution
class _MultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """``MultiWorkerMirroredStrategy`` with the ``reduce`` that Keras 3's ``fit`` expects of it.

    Keras 3 reduces a whole ``(images, labels)`` batch in one call, and each epoch's scalar
    metrics along axis 0 (keras-team/keras#20585); TensorFlow's multi-worker strategy takes
    one value per call and a scalar has no axis 0. Both are reduced as Keras means them.
    """

    def reduce(self, reduce_op, value, axis):
        if isinstance(value, (tuple, list, dict)):
            return tf.nest.map_structure(lambda v: self.reduce(reduce_op, v, axis), value)
        if axis is not None and all(v.shape.rank == 0 for v in self.experimental_local_results(value)):
            axis = None
        return super().reduce(reduce_op, value, axis)


@cache  # one strategy per process: TensorFlow sets up a multi-worker strategy's collectives only once
def strategy_for(name: str) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy of a :attr:`TrainConfig.distribution` value.

    ``"none"``: the default strategy (one device). ``"mirrored"``: ``MirroredStrategy`` over every
    GPU of this machine (its CPU without one). ``"multiworker"``: ``MultiWorkerMirroredStrategy``
    over the cluster in ``TF_CONFIG``; create it before anything else runs TensorFlow.
    """
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        try:
            return _MultiWorkerStrategy()
        except RuntimeError as exc:  # TensorFlow's own message does not say what to do
            raise RuntimeError(f"{exc}: distribution 'multiworker' must be set up before TensorFlow runs anything; "
                               "train in a fresh process (`catdog train --distribution multiworker`)") from None
    raise ValueError(f"distribution must be one of {', '.join(map(repr, DISTRIBUTIONS))}, got {name!r}")


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether this process writes the run folder: always, except on a multi-worker cluster's other workers.

    The chief is the ``"chief"`` task, or worker 0 of a cluster without one (as in TensorFlow's
    multi-worker Keras tutorial).
    """
    resolver = getattr(strategy or tf.distribute.get_strategy(), "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().jobs


def _work_dir(run_dir: Path, strategy: tf.distribute.Strategy) -> Path:
    """Where this process writes: ``run_dir`` on the chief; elsewhere a temporary copy of it.

    The copy carries the chief's checkpoints, finished phases and cached features, so every
    worker resumes at the epoch the chief resumes at. It is taken before this worker builds its
    model, and the chief's build waits for that (initial weights are broadcast from the chief),
    so by then the chief has written no more than its train config (atomically).
    """
    if is_chief(strategy):
        return run_dir
    work = Path(tempfile.mkdtemp(prefix=f"catdog-worker{strategy.cluster_resolver.task_id}-"))
    if run_dir.is_dir():  # atomic writes' temporary files may vanish mid-copy: never copied
        shutil.copytree(run_dir, work, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".*.tmp"))
    return work


def check_resume(run_dir: str | Path, config: TrainConfig) -> None:
    """Refuse to train into ``run_dir`` when it holds a run with different settings.

    :func:`train` resumes whatever run its folder holds; with other settings that would
    silently mix two runs. Identical settings resume (or reuse) it. A setting the saved run
    predates counts as its default, so a run started by an older catdog still resumes.
    """
    saved = Path(run_dir) / "train_config.json"
    if not saved.is_file():
        return
    defaults = json.loads(json.dumps(asdict(TrainConfig())))
    old = {**defaults, **json.loads(saved.read_text())}
    new = json.loads(json.dumps(asdict(config)))
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed:
        detail = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise ValueError(f"{run_dir} already holds a training run with other settings ({detail}); "
                         "set run_dir to a new folder (the pipeline always makes one)")


# ---------------------------------------------------------------- phase helpers
def _state(run_dir: Path) -> dict:
    path = run_dir / "state.json"
    return json.loads(path.read_text()) if path.exists() else {"done": {}}


def _save_state(run_dir: Path, state: dict) -> None:
    atomic_write(run_dir / "state.json", json.dumps(state, indent=2))


class _EpochClock(keras.callbacks.Callback):
    """Records each finished epoch's wall time in ``state.json``, so that a phase interrupted and resumed
    reports the time of all its epochs, not only those of the last process."""

    def __init__(self, run_dir: Path, phase: str):
        super().__init__()
        self.run_dir, self.phase = run_dir, phase
        self.started = time.time()

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        state = _state(self.run_dir)
        state.setdefault("epoch_seconds", {}).setdefault(self.phase, {})[str(epoch)] = round(
            time.time() - self.started, 1)  # keyed by epoch: an epoch re-run after a kill replaces its entry
        _save_state(self.run_dir, state)


def _phase_seconds(run_dir: Path, phase: str) -> float:
    """Wall time of the phase's finished epochs, over every process that ran them."""
    return round(sum(_state(run_dir).get("epoch_seconds", {}).get(phase, {}).values()), 1)


def _callbacks(run_dir: Path, phase: str, patience: int, plateau: bool) -> list[keras.callbacks.Callback]:
    ckpt = run_dir / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    best = _best_val_loss(run_dir / f"history_{phase}.csv")
    if plateau:  # also puts the epoch's learning rate into the logs
        lr_callback = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.3,
                                                        patience=max(1, patience // 2), min_lr=1e-7)
    else:  # a schedule inside the optimizer: log the rate it has reached
        lr_callback = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: logs.update(
            learning_rate=float(lr_callback.model.optimizer.learning_rate)))
    return [
        keras.callbacks.BackupAndRestore(str(ckpt / f"backup_{phase}"), delete_checkpoint=False),
        _EpochClock(run_dir, phase),
        keras.callbacks.ModelCheckpoint(str(ckpt / f"best_{phase}.weights.h5"), monitor="val_loss",
                                        save_best_only=True, save_weights_only=True,
                                        initial_value_threshold=best),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience),
        lr_callback,  # before the CSV logger, so history files have a learning_rate column
        keras.callbacks.CSVLogger(str(run_dir / f"history_{phase}.csv"), append=True),
    ]


def _best_val_loss(history_csv: Path) -> float | None:
    if not history_csv.exists():
        return None
    with history_csv.open() as f:
        losses = [float(r["val_loss"]) for r in csv.DictReader(f) if r.get("val_loss")]
    return min(losses) if losses else None


def compile_model(model: keras.Model, lr: float | keras.optimizers.schedules.LearningRateSchedule,
                  config: TrainConfig) -> None:
    """Compile for training: Adam, binary cross-entropy on p(dog) (``config.label_smoothing``), accuracy."""
    model.compile(optimizer=keras.optimizers.Adam(lr),
                  loss=keras.losses.BinaryCrossentropy(label_smoothing=config.label_smoothing),
                  metrics=[keras.metrics.BinaryAccuracy(name="accuracy")])


def _fit(model: keras.Model, train, val, *, run_dir: Path, phase: str, epochs: int, lr: float,
         config: TrainConfig, warmup_epochs: int = 0) -> dict:
    """Run one phase with checkpoints and resume; leaves the best weights in ``model``."""
    state = _state(run_dir)
    best = run_dir / "checkpoints" / f"best_{phase}.weights.h5"
    if phase in state["done"]:
        log.info("phase %s already finished in %s; loading its best weights", phase, run_dir)
        if best.exists():
            model.load_weights(best)
        return state["done"][phase]
    cosine = config.schedule == "cosine"
    if cosine:  # per step, over the whole phase; BackupAndRestore restores the step count on resume
        warmup = warmup_epochs * len(train)
        lr = keras.optimizers.schedules.CosineDecay(0.0 if warmup else lr, decay_steps=epochs * len(train) - warmup,
                                                    warmup_target=lr if warmup else None, warmup_steps=warmup)
    with strategy_for(config.distribution).scope():  # optimizer and metric variables mirrored too
        compile_model(model, lr, config)
    model.fit(train, validation_data=val, epochs=epochs, verbose=2, shuffle=False,
              callbacks=_callbacks(run_dir, phase, config.patience, plateau=not cosine))
    if best.exists():
        model.load_weights(best)
    with (run_dir / f"history_{phase}.csv").open() as f:
        epochs_run = len({r["epoch"] for r in csv.DictReader(f)})
    info = {"epochs": epochs_run, "seconds": _phase_seconds(run_dir, phase),
            "best_val_loss": _best_val_loss(run_dir / f"history_{phase}.csv")}
    state = _state(run_dir)  # re-read: the epoch clock has written to it since
    state["done"][phase] = info
    _save_state(run_dir, state)
    return info


def _head_phase_on_features(model, train_items, val_items, run_dir, config) -> dict:
    with strategy_for(config.distribution).scope():  # the features are extracted outside: no collectives there
        head = head_model(model)
    if "head" in _state(run_dir)["done"]:
        return _fit(head, None, None, run_dir=run_dir, phase="head", epochs=0, lr=0, config=config)
    start = time.time()
    f_train = extract_features(model, train_items, config.image_size, config.batch_size,
                               run_dir / "features" / "train.npz")
    f_val = extract_features(model, val_items, config.image_size, config.batch_size,
                             run_dir / "features" / "validation.npz")
    feature_seconds = time.time() - start
    train = (tf.data.Dataset.from_tensor_slices((f_train, labels_of(train_items).astype("float32")))
             .shuffle(len(train_items), seed=config.seed).batch(config.batch_size))
    val = tf.data.Dataset.from_tensor_slices((f_val, labels_of(val_items).astype("float32"))).batch(256)
    info = _fit(head, train, val, run_dir=run_dir, phase="head", epochs=config.head_epochs,
                lr=config.head_lr, config=config)
    info["feature_extraction_seconds"] = round(feature_seconds, 1)
    state = _state(run_dir)
    state["done"]["head"] = info
    _save_state(run_dir, state)
    return info


def _total_seconds(phases: dict[str, dict], final_seconds: float) -> float:
    """Wall time of this run's phases (epochs and feature extraction, over every resume) plus the final step."""
    return round(final_seconds + sum(info.get("seconds", 0) + info.get("feature_extraction_seconds", 0)
                                     for name, info in phases.items() if name != "init_model"), 1)


def merge_history(run_dir: Path, phases: list[str], earlier: Path | None = None) -> Path:
    """Concatenate the per-phase CSV logs into ``history.csv`` (global epoch + phase column).

    ``earlier``: the ``history.csv`` of the run this one continued from (``init_model``), put first.
    """
    rows: list[dict] = []
    if earlier is not None and earlier.exists():
        with earlier.open() as f:
            rows = list(csv.DictReader(f))
    epoch = len(rows)
    for phase in phases:
        path = run_dir / f"history_{phase}.csv"
        if not path.exists():
            continue
        with path.open() as f:
            by_epoch = {int(r["epoch"]): r for r in csv.DictReader(f)}  # a re-logged epoch keeps its last row
        for e in sorted(by_epoch):
            r = by_epoch[e]
            rows.append({"epoch": epoch, "phase": phase, **{k: r.get(k, "") for k in
                         ("accuracy", "loss", "val_accuracy", "val_loss", "learning_rate")}})
            epoch += 1
    out = run_dir / "history.csv"
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["epoch", "phase", "accuracy", "loss", "val_accuracy",
                                               "val_loss", "learning_rate"])
        writer.writeheader()
        writer.writerows(rows)
    return out


# ---------------------------------------------------------------- prediction + card
def library_versions() -> dict:
    """Versions of catdog and the libraries that trained a model (recorded in its card)."""
    return {"catdog": VERSION, "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "scikit-learn": sklearn.__version__, "python": platform.python_version()}


def _metrics_block(model, items, temperature: float) -> dict:
    """Calibrated metrics of ``model`` on ``items`` for the card ({} for an empty split)."""
    if not items:
        return {}
    logits = predict_logits(model, items)
    return compute_metrics(labels_of(items), apply_temperature(logits, temperature))


def _relative(path: str | Path, folder: Path) -> str:
    """``path`` relative to ``folder`` (how the card stores paths, so a model folder can move)."""
    return os.path.relpath(Path(path).resolve(), folder.resolve())


def train(manifest: str | Path, run_dir: str | Path, config: TrainConfig | None = None,
          model_name: str = "model.keras") -> TrainResult:
    """Train on the manifest's train split (validation split for early stopping and calibration).

    Writes into ``run_dir``: ``train_config.json``, ``checkpoints/``, ``history.csv``,
    ``model_name``, its model card and its "neither" detector (``<stem>.openset.npz``, fitted on
    up to ``config.openset_images`` train and validation photos; none when that is 0).
    Calling it again on the same ``run_dir`` with the same config resumes an interrupted run;
    a folder holding a run with other settings is refused (:func:`check_resume`).
    Under ``config.distribution`` "multiworker" every worker calls this with the same arguments;
    only the chief writes ``run_dir``, and the other workers' results name the chief's files.
    """
    config = config or TrainConfig()
    strategy = strategy_for(config.distribution)  # first: a multi-worker strategy needs TensorFlow untouched
    run_dir = Path(run_dir)
    check_resume(run_dir, config)
    work_dir = _work_dir(run_dir, strategy)
    try:
        result = _train(manifest, work_dir, config, model_name, strategy)
    finally:  # a worker's copy is never reused: the next run copies the chief's folder afresh
        if work_dir != run_dir:
            shutil.rmtree(work_dir, ignore_errors=True)
    if work_dir == run_dir:
        return result
    return replace(result, model_path=run_dir / model_name, history_csv=run_dir / "history.csv", detector_path=None)


def _train(manifest: str | Path, run_dir: Path, config: TrainConfig, model_name: str,
           strategy: tf.distribute.Strategy) -> TrainResult:
    """:func:`train` writing into ``run_dir`` (the run folder, or a non-chief worker's copy of it)."""
    atomic_write(run_dir / "train_config.json", json.dumps(asdict(config), indent=2))
    set_seed(config.seed)
    items = read_manifest(manifest)
    train_items = [i for i in items if i.split == "train"]
    val_items = [i for i in items if i.split == "validation"]
    test_items = [i for i in items if i.split == "test"]
    if not train_items or not val_items:
        raise ValueError(f"{manifest}: need non-empty train and validation splits "
                         f"(have {len(train_items)} train, {len(val_items)} validation)")
    init_card = ModelCard.read(config.init_model) if config.init_model else None  # None: a model without card
    with strategy.scope():  # variables made here are mirrored over the strategy's replicas
        model = build_model(config.backbone, config.image_size, weights=config.weights, dropout=config.dropout)
        if config.init_model:
            model.load_weights(config.init_model)  # same architecture: backbone, size and head must match
    augment = Augmentation(**config.augmentation) if config.augment else None
    make = lambda its, training: make_dataset(its, config.image_size, config.batch_size, training=training,  # noqa: E731
                                              augment=augment if training else None,
                                              cache=config.cache_images, seed=config.seed)
    phases: dict[str, dict] = {}
    if config.init_model:
        phases["init_model"] = {"path": config.init_model, "phases": init_card.phases if init_card else {}}
    if config.backbone == "simple_cnn":
        set_trainable(model, None)
        phases["scratch"] = _fit(model, make(train_items, True), make(val_items, False), run_dir=run_dir,
                                 phase="scratch", epochs=config.head_epochs, lr=config.head_lr, config=config)
    else:
        set_trainable(model, 0)
        if config.head_epochs > 0:
            if config.cache_features:
                phases["head"] = _head_phase_on_features(model, train_items, val_items, run_dir, config)
            else:
                phases["head"] = _fit(model, make(train_items, True), make(val_items, False), run_dir=run_dir,
                                      phase="head", epochs=config.head_epochs, lr=config.head_lr, config=config)
        if config.finetune_epochs > 0 and config.finetune_layers != 0:
            set_trainable(model, config.finetune_layers)
            phases["finetune"] = _fit(model, make(train_items, True), make(val_items, False), run_dir=run_dir,
                                      phase="finetune", epochs=config.finetune_epochs, lr=config.finetune_lr,
                                      config=config, warmup_epochs=config.warmup_epochs)
    set_trainable(model, 0)
    history_csv = merge_history(run_dir, list(phases), earlier=init_card.history_path if init_card else None)

    return _finish(model, run_dir / model_name, manifest, (train_items, val_items, test_items),
                   backbone=config.backbone, image_size=config.image_size, history_csv=history_csv,
                   phases=phases, config=asdict(config),
                   # the detector needs no collectives: only the chief fits the one it keeps
                   openset_images=config.openset_images if is_chief(strategy) else 0,
                   batch_size=config.batch_size, seed=config.seed)


def _finish(model: keras.Model, model_path: Path, manifest: str | Path, splits: tuple[list, list, list], *,
            backbone: str, image_size: int, history_csv: Path | None, phases: dict, config: dict,
            openset_images: int | None, batch_size: int, seed: int, members: Sequence[str] = (),
            float16_weights: bool = False) -> TrainResult:
    """Calibrate on validation, save the model and its card, fit its "neither" detector: what every trained model gets.

    With ``float16_weights`` the saved file stores its kernels in float16 (:func:`catdog.models.save_model`);
    the temperature, the card's metrics and the detector are then computed from the model as saved.
    """
    train_items, val_items, test_items = splits
    start = time.time()  # of calibration and evaluation; the phases report their own time
    save_model(model, model_path, float16_weights=float16_weights)
    if float16_weights:  # calibrate and report what users will load, rounding included
        model = load_model(model_path)
    temperature = fit_temperature(predict_logits(model, val_items), labels_of(val_items))
    folder = model_path.parent
    card = ModelCard(
        model_file=model_path.name,
        backbone=backbone,
        image_size=image_size,
        temperature=temperature,
        threshold=0.5,
        manifest=_relative(manifest, folder),
        manifest_sha256=manifest_hash(manifest),
        history=_relative(history_csv, folder) if history_csv else None,
        split_sizes={"train": len(train_items), "validation": len(val_items), "test": len(test_items)},
        metrics={"validation": _metrics_block(model, val_items, temperature),
                 "test": _metrics_block(model, test_items, temperature)},
        phases=phases,
        total_seconds=_total_seconds(phases, time.time() - start),
        config=config,
        members=list(members),
        versions=library_versions(),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    card.save(model_path)
    detector_path = None
    if openset_images != 0:  # the detector is tied to this model file's bytes: fit it after saving
        fit_openset(model_path, manifest, max_train=openset_images, max_val=openset_images,
                    batch_size=batch_size, seed=seed)
        detector_path = openset_path(model_path)
    return TrainResult(model, model_path, card, history_csv, detector_path)


def build_ensemble(model_paths: Sequence[str | Path], out_path: str | Path, manifest: str | Path | None = None, *,
                   openset_images: int | None = 2000, batch_size: int = 32, seed: int = 42,
                   float16_weights: bool = False) -> TrainResult:
    """Combine saved models into one self-contained ensemble ``.keras`` (mean calibrated logit), with card and detector.

    Each member's logit is divided by its own card's temperature (:func:`catdog.models.ensemble_model`);
    the ensemble then gets a temperature of its own, fitted on validation like any trained model.
    ``manifest`` defaults to the first member's. Refuses to replace an existing ``out_path``.
    ``float16_weights`` halves the file (kernels stored in float16, see :func:`catdog.models.save_model`).
    """
    out_path = Path(out_path)
    if out_path.exists():
        raise FileExistsError(f"{out_path} already exists; choose another output file")
    cards = [ModelCard.read(p) for p in model_paths]
    missing = [str(p) for p, c in zip(model_paths, cards) if c is None]
    if missing:
        raise ValueError(f"ensemble members need model cards (their temperatures): none beside {', '.join(missing)}")
    manifest = Path(manifest) if manifest else cards[0].manifest_path
    if manifest is None:
        raise ValueError(f"{model_paths[0]}: its card names no manifest; pass manifest=")
    items = read_manifest(manifest)
    splits = tuple([i for i in items if i.split == s] for s in ("train", "validation", "test"))
    model = ensemble_model([load_model(p) for p in model_paths], [c.temperature for c in cards])
    out_path.parent.mkdir(parents=True, exist_ok=True)
    return _finish(model, out_path, manifest, splits, backbone="ensemble", image_size=image_size_of(model),
                   history_csv=None, config={"members": [c.config for c in cards]},
                   # the members' own training time counts towards the ensemble's
                   phases={f"member {Path(p).name}": {"seconds": c.total_seconds or 0.0}
                           for p, c in zip(model_paths, cards)},
                   openset_images=openset_images,
                   batch_size=batch_size, seed=seed, members=[str(Path(p).name) for p in model_paths],
                   float16_weights=float16_weights)


def member_configs(base: TrainConfig, members: Sequence[Mapping[str, Any]]) -> list[TrainConfig]:
    """One config per ensemble member: ``base`` with that member's overrides (parsed like every parameter)."""
    base_params = asdict(base)
    configs = []
    for k, overrides in enumerate(members):
        if not isinstance(overrides, Mapping):
            raise ValueError(f"ensemble member {k}: expected a mapping of training parameters, got {overrides!r}")
        configs.append(TrainConfig.from_params(**{**base_params, **overrides}))
    return configs


def train_ensemble(manifest: str | Path, run_dir: str | Path, configs: Sequence[TrainConfig],
                   model_name: str = "model.keras", *, float16_weights: bool = True) -> TrainResult:
    """Train each member (``run_dir/members/<k>_<backbone>/``, each resumable) and combine them into ``model_name``.

    The combination is :func:`build_ensemble`: the mean of the members' calibrated logits, one
    self-contained model with its own temperature, card and "neither" detector (fitted with the
    first config's ``openset_images``). Rerunning resumes the unfinished member and rebuilds the
    ensemble from the finished ones; an ``model_name`` combining other members is refused.
    """
    if len(configs) < 2:
        raise ValueError(f"an ensemble needs at least 2 members, got {len(configs)}")
    run_dir = Path(run_dir)
    out = run_dir / model_name
    members = [train(manifest, run_dir / "members" / f"{k}_{config.backbone}", replace(config, openset_images=0),
                     model_name=f"member{k}_{config.backbone}.keras") for k, config in enumerate(configs)]
    paths = [m.model_path for m in members]
    if out.exists():
        card = ModelCard.read(out)
        if card is None or card.members != [p.name for p in paths]:
            raise FileExistsError(f"{out} exists and is not the ensemble of {', '.join(p.name for p in paths)}; "
                                  "choose another run folder")
        out.unlink()  # this run's own ensemble, from an earlier call: rebuilt from the same members
    result = build_ensemble(paths, out, manifest, openset_images=configs[0].openset_images,
                            batch_size=configs[0].batch_size, seed=configs[0].seed, float16_weights=float16_weights)
    return replace(result, members=members)


def train_recipe(manifest: str | Path, run_dir: str | Path, config: TrainConfig,
                 members: Sequence[Mapping[str, Any]] = (), model_name: str = "model.keras") -> TrainResult:
    """What ``catdog train`` and notebook 02 run: one model (no ``members``), or an ensemble of
    ``config`` with each member's overrides (:func:`member_configs`, :func:`train_ensemble`)."""
    if not members:
        return train(manifest, run_dir, config, model_name=model_name)
    return train_ensemble(manifest, run_dir, member_configs(config, members), model_name)
