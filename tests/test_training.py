"""Small real trainings: every backbone for one epoch, resume after an interruption, determinism, save/load,
the model card and "neither" detector they write, and the parameter parsing shared by CLI and notebooks."""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict

import keras
import numpy as np
import pytest
from PIL import Image

import catdog.training as training
from catdog import paths
from catdog.card import ModelCard
from catdog.data import prepare, read_manifest
from catdog.inference import predict_logits
from catdog.models import load_model
from catdog.openset import load_for_model, openset_path
from catdog.training import TrainConfig, check_resume, train
from conftest import PET_IMAGES
from interrupt import Interrupt

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    if not PET_IMAGES.is_dir():
        pytest.skip(f"real photos not found at {PET_IMAGES} (set CATDOG_SHARED)")
    out = tmp_path_factory.mktemp("data")
    prepare(PET_IMAGES, out, max_per_class=24, seed=0, val_fraction=0.25, test_fraction=0.25)
    return out / "manifest.csv"


def _history(run_dir, phase=None):
    name = f"history_{phase}.csv" if phase else "history.csv"
    with (run_dir / name).open() as f:
        return list(csv.DictReader(f))


def test_transfer_learning_runs_both_phases_and_writes_a_card_and_a_detector(manifest, tmp_path):
    weights = "imagenet" if paths.weights_dir() else None
    config = TrainConfig(backbone="mobilenet_v2", image_size=64, weights=weights, head_epochs=1,
                         finetune_epochs=1, finetune_layers=10, schedule="plateau", warmup_epochs=0, batch_size=8,
                         openset_images=20)
    result = train(manifest, tmp_path, config)
    history = _history(tmp_path)
    assert [r["phase"] for r in history] == ["head", "finetune"]
    assert all(float(r["learning_rate"]) > 0 for r in history)  # ReduceLROnPlateau's rate is logged
    card = ModelCard.read(result.model_path)
    assert card == result.card
    assert card.backbone == "mobilenet_v2" and card.class_names == ["cat", "dog"] and card.image_size == 64
    assert card.split_sizes == {"train": 24, "validation": 12, "test": 12}
    assert 0 <= card.metrics["test"]["accuracy"] <= 1 and card.temperature > 0 and card.threshold == 0.5
    assert set(card.phases) == {"head", "finetune"} and card.phases["head"]["feature_extraction_seconds"] >= 0
    assert card.manifest_path == manifest.resolve() and card.manifest_sha256
    # paths are stored relative to the card, so the run folder can move
    assert card.history == "history.csv" and card.history_path == result.history_csv.resolve()
    assert card.history_path.is_file() and card.config == json.loads((tmp_path / "train_config.json").read_text())
    assert card.versions["catdog"] and card.created and card.total_seconds > 0
    assert (tmp_path / "features" / "train.npz").exists()
    # the "neither" detector: fitted on a seeded subset of train and validation, tied to this model file
    assert result.detector_path == openset_path(result.model_path) == tmp_path / "model.openset.npz"
    detector = load_for_model(result.model_path)
    assert detector.info["max_train"] == 20 and detector.info["seed"] == config.seed


@pytest.mark.parametrize("backbone, size", [("inception_v3", 75), ("simple_cnn", 64)])
def test_other_backbones_train_for_one_epoch(manifest, tmp_path, backbone, size):
    config = TrainConfig(backbone=backbone, image_size=size, weights=None, head_epochs=1, finetune_epochs=1,
                         finetune_layers=5, warmup_epochs=0, batch_size=8, cache_features=False, openset_images=0)
    result = train(manifest, tmp_path, config)
    assert result.model_path.exists() and len(_history(tmp_path)) == (1 if backbone == "simple_cnn" else 2)


class _SlowEpochs(keras.callbacks.Callback):
    """Makes every epoch take at least ``seconds`` longer."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def on_epoch_begin(self, epoch, logs=None):
        time.sleep(self.seconds)


def test_interrupted_run_resumes_from_its_last_epoch(manifest, tmp_path, monkeypatch):
    config = TrainConfig(backbone="simple_cnn", image_size=48, head_epochs=3, batch_size=8, patience=10,
                         openset_images=0)
    original = training._callbacks
    monkeypatch.setattr(training, "_callbacks", lambda *a, **k: original(*a, **k) + [_SlowEpochs(2.0),
                                                                                    Interrupt(after_epoch=1)])
    with pytest.raises(KeyboardInterrupt):
        train(manifest, tmp_path, config)
    assert [r["epoch"] for r in _history(tmp_path, "scratch")] == ["0", "1"]
    assert not (tmp_path / "model.keras").exists()
    monkeypatch.setattr(training, "_callbacks", original)
    fit_calls = []
    real_fit = keras.Model.fit
    monkeypatch.setattr(keras.Model, "fit", lambda self, *a, **k: fit_calls.append(1) or real_fit(self, *a, **k))
    train(manifest, tmp_path, config)
    epochs = [r["epoch"] for r in _history(tmp_path, "scratch")]
    assert epochs == ["0", "1", "2"]  # epoch 2 only was trained again: no finished epoch lost or repeated
    assert (tmp_path / "model.keras").exists() and fit_calls == [1]
    # the card's time covers the epochs of both processes, not only the resumed one
    epoch_seconds = json.loads((tmp_path / "state.json").read_text())["epoch_seconds"]["scratch"]
    assert set(epoch_seconds) == {"0", "1", "2"} and min(epoch_seconds["0"], epoch_seconds["1"]) >= 2.0
    card = ModelCard.read(tmp_path / "model.keras")
    assert card.phases["scratch"]["seconds"] == pytest.approx(sum(epoch_seconds.values()), abs=0.2)
    assert card.total_seconds >= card.phases["scratch"]["seconds"] >= 4.0


class _RecordSteps(keras.callbacks.Callback):
    """Records (optimizer step count, learning rate) at the end of every epoch."""

    def __init__(self, log: list):
        super().__init__()
        self.log = log

    def on_epoch_end(self, epoch, logs=None):
        self.log.append((int(self.model.optimizer.iterations), float(self.model.optimizer.learning_rate)))


def test_cosine_schedule_resumes_where_it_stopped_and_ends_at_zero(manifest, tmp_path, monkeypatch):
    config = TrainConfig(backbone="simple_cnn", image_size=48, head_epochs=3, batch_size=8, patience=10,
                         schedule="cosine", openset_images=0)
    steps: list = []
    original = training._callbacks
    monkeypatch.setattr(training, "_callbacks", lambda *a, **k: original(*a, **k) + [_RecordSteps(steps),
                                                                                    Interrupt(after_epoch=0)])
    with pytest.raises(KeyboardInterrupt):
        train(manifest, tmp_path, config)
    monkeypatch.setattr(training, "_callbacks", lambda *a, **k: original(*a, **k) + [_RecordSteps(steps)])
    train(manifest, tmp_path, config)
    # 24 images / batch 8 = 3 steps per epoch; the resumed run continues the count and the cosine
    assert [s for s, _ in steps] == [3, 6, 9]
    lrs = [lr for _, lr in steps]
    assert lrs[0] == pytest.approx(1e-3 * 0.75) and lrs[1] == pytest.approx(1e-3 * 0.25) and lrs[2] == 0.0
    logged = [float(r["learning_rate"]) for r in _history(tmp_path, "scratch")]
    assert logged == pytest.approx(lrs)  # the history records the rate each epoch ended with


def test_warmup_raises_the_finetune_rate_from_zero_then_decays_it(manifest, tmp_path):
    config = TrainConfig(backbone="mobilenet_v2", image_size=48, weights=None, head_epochs=1, finetune_epochs=3,
                         finetune_layers=10, batch_size=8, patience=10, schedule="cosine", warmup_epochs=1,
                         openset_images=0)
    train(manifest, tmp_path, config)
    # 3 steps per epoch: linear warm-up to the full rate over epoch 1, then cosine to 0 over epochs 2-3
    logged = [float(r["learning_rate"]) for r in _history(tmp_path, "finetune")]
    assert logged == pytest.approx([3e-5, 1.5e-5, 0.0], abs=1e-9)


def test_unknown_schedule_is_rejected():
    with pytest.raises(ValueError, match="schedule must be"):
        TrainConfig(schedule="step")
    with pytest.raises(ValueError, match="warmup_epochs needs schedule='cosine'"):
        TrainConfig(schedule="plateau", warmup_epochs=1)
    with pytest.raises(ValueError, match="fewer warm-up than fine-tune epochs"):
        TrainConfig(schedule="cosine", warmup_epochs=5, finetune_epochs=5)


def test_same_seed_gives_same_metrics_and_model_round_trips(manifest, tmp_path):
    config = TrainConfig(backbone="simple_cnn", image_size=48, head_epochs=1, batch_size=8, seed=7, openset_images=0)
    a = train(manifest, tmp_path / "a", config)
    train(manifest, tmp_path / "b", config)
    val_a = float(_history(tmp_path / "a")[0]["val_loss"])
    val_b = float(_history(tmp_path / "b")[0]["val_loss"])
    assert val_a == pytest.approx(val_b, rel=1e-3)
    test_items = read_manifest(manifest, "test")
    loaded = load_model(a.model_path)
    np.testing.assert_allclose(predict_logits(loaded, test_items), predict_logits(a.model, test_items), atol=1e-5)
    assert ModelCard.read(a.model_path).temperature == a.card.temperature
    assert a.detector_path is None and not openset_path(a.model_path).exists()  # openset_images=0: no detector


def test_missing_validation_split_is_a_clear_error(tmp_path):
    m = tmp_path / "m.csv"
    photo = tmp_path / "cat.jpg"  # generated: the error comes before any photo is read
    Image.new("RGB", (48, 48), (120, 80, 40)).save(photo)
    m.write_text(f"path,label,split\n{photo},cat,train\n")
    with pytest.raises(ValueError, match="need non-empty train and validation"):
        train(m, tmp_path / "run", TrainConfig(backbone="simple_cnn", image_size=48))


def test_init_model_continues_from_a_saved_model_and_its_history(manifest, tmp_path):
    first = train(manifest, tmp_path / "first", TrainConfig(backbone="simple_cnn", image_size=48, head_epochs=1,
                                                            batch_size=8, openset_images=0))
    test_items = read_manifest(manifest, "test")
    config = TrainConfig(backbone="simple_cnn", image_size=48, head_epochs=1, head_lr=1e-9, batch_size=8,
                         init_model=str(first.model_path), openset_images=0)
    second = train(manifest, tmp_path / "second", config)
    assert [r["epoch"] for r in _history(tmp_path / "second")] == ["0", "1"]  # earlier epoch carried over
    assert second.card.phases["init_model"]["path"] == str(first.model_path)
    assert second.card.phases["init_model"]["phases"] == first.card.phases
    # with a negligible learning rate the continued model predicts what the first one did
    np.testing.assert_allclose(predict_logits(second.model, test_items), predict_logits(first.model, test_items),
                               atol=1e-3)


def test_a_run_folder_with_other_settings_is_refused_and_the_same_settings_resume(manifest, tmp_path):
    config = TrainConfig(backbone="simple_cnn", image_size=48, head_epochs=1, batch_size=8, openset_images=0)
    first = train(manifest, tmp_path, config)
    saved = first.model_path.read_bytes()
    other = TrainConfig(backbone="simple_cnn", image_size=48, head_epochs=1, batch_size=8, openset_images=0,
                        head_lr=0.01, seed=1)
    with pytest.raises(ValueError, match=r"other settings \(head_lr: 0.001 -> 0.01, seed: 42 -> 1\)"):
        train(manifest, tmp_path, other)
    assert first.model_path.read_bytes() == saved  # refused before touching the run
    assert json.loads((tmp_path / "train_config.json").read_text())["head_lr"] == 0.001
    again = train(manifest, tmp_path, TrainConfig(**json.loads((tmp_path / "train_config.json").read_text())))
    assert [r["epoch"] for r in _history(tmp_path)] == ["0"]  # finished phase reused, not trained again
    assert again.card.temperature == pytest.approx(first.card.temperature)


def test_a_run_started_before_a_setting_existed_resumes_with_its_default(tmp_path):
    saved = asdict(TrainConfig())
    del saved["openset_images"]  # a run folder written by a catdog without this setting
    (tmp_path / "train_config.json").write_text(json.dumps(saved))
    check_resume(tmp_path, TrainConfig())
    with pytest.raises(ValueError, match=r"openset_images: 2000 -> 0"):
        check_resume(tmp_path, TrainConfig(openset_images=0))


# ---------------------------------------------------------------- TrainConfig.from_params


@pytest.mark.parametrize("weights", ["none", "None", "NULL", "", None])
def test_from_params_reads_no_weights_as_random_initialisation(weights):
    assert TrainConfig.from_params(weights=weights).weights is None


def test_from_params_keeps_weight_files_and_parses_init_model():
    assert TrainConfig.from_params(weights="imagenet").weights == "imagenet"
    assert TrainConfig.from_params(weights=paths.REPO_ROOT / "w.h5").weights == str(paths.REPO_ROOT / "w.h5")
    assert TrainConfig.from_params(init_model="").init_model is None
    assert TrainConfig.from_params(init_model=paths.REPO_ROOT / "m.keras").init_model == str(paths.REPO_ROOT / "m.keras")
    assert TrainConfig.from_params() == TrainConfig()


@pytest.mark.parametrize("augmentation", [{"shear": 0, "rotation": 0.02}, '{"shear": 0, "rotation": 0.02}'])
def test_from_params_merges_a_partial_augmentation_with_the_defaults(augmentation):
    config = TrainConfig.from_params(augmentation=augmentation, head_epochs=2)
    assert config.augmentation == {**TrainConfig().augmentation, "shear": 0, "rotation": 0.02}
    assert config.head_epochs == 2
    for empty in ({}, "", None):
        assert TrainConfig.from_params(augmentation=empty).augmentation == TrainConfig().augmentation


def test_from_params_rejects_unknown_keys_naming_them():
    with pytest.raises(ValueError, match="unknown training parameter.*manifest, run_dir"):
        TrainConfig.from_params(run_dir="x", manifest="m.csv", seed=1)
    with pytest.raises(ValueError, match="unknown augmentation field.*sheer"):
        TrainConfig.from_params(augmentation={"sheer": 0})
    with pytest.raises(ValueError, match="JSON"):
        TrainConfig.from_params(augmentation="{shear: 0}")
    with pytest.raises(ValueError, match="dict"):
        TrainConfig.from_params(augmentation="[1, 2]")
    with pytest.raises(ValueError, match="openset_images"):
        TrainConfig.from_params(openset_images=-1)
