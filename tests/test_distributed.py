"""Past one machine: training under tf.distribute strategies, and prediction split into shards.

Strategies need TensorFlow untouched when they are set up (logical CPU devices, multi-worker
collectives), so each training here runs in a fresh Python process (:data:`WORKER`).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from catdog.training import TrainConfig
from conftest import real_photos

# Trainings in one fresh process. argv[1]: JSON {manifest, runs: [{run_dir, config}], out, cpu_devices?,
# interrupt_after?}. Prints one JSON line per run (replicas, chief, the epochs and replicas each fit ran with) and
# saves every run's test logits to ``out`` (trained_<i>), with those of the untrained model they started from.
WORKER = r'''
import json, sys
args = json.loads(sys.argv[1])
import tensorflow as tf
if args.get("cpu_devices"):  # before anything initialises TensorFlow's devices
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args["cpu_devices"])
import keras
keras.config.disable_traceback_filtering()  # a failure shows where in catdog it happened
import numpy as np
import catdog.training as training
from catdog.data import read_manifest
from catdog.inference import predict_logits
from catdog.models import build_model


class Record(keras.callbacks.Callback):
    def __init__(self, report):
        super().__init__()
        self.report = report

    def on_train_begin(self, logs=None):  # what each phase's fit ran on
        self.report["fit_replicas"].append(self.model.distribute_strategy.num_replicas_in_sync)

    def on_epoch_begin(self, epoch, logs=None):
        self.report["epochs_run"].append(epoch)

    def on_epoch_end(self, epoch, logs=None):
        if epoch == args.get("interrupt_after"):
            raise KeyboardInterrupt  # as a kill would, once the epoch is backed up


original = training._callbacks
test_items = read_manifest(args["manifest"], "test")
logits = {}
for i, run in enumerate(args["runs"]):
    config = training.TrainConfig(**run["config"])
    strategy = training.strategy_for(config.distribution)
    report = {"replicas": strategy.num_replicas_in_sync, "chief": training.is_chief(strategy), "epochs_run": [],
              "fit_replicas": []}
    training._callbacks = lambda *a, **k: original(*a, **k) + [Record(report)]
    try:
        result = training.train(args["manifest"], run["run_dir"], config)
    except KeyboardInterrupt:
        print(json.dumps({**report, "interrupted": True}))
        continue
    logits[f"trained_{i}"] = predict_logits(result.model, test_items)
    training.set_seed(config.seed)  # the model train() started from: same seed, same initial weights
    untrained = build_model(config.backbone, config.image_size, weights=config.weights, dropout=config.dropout)
    logits[f"untrained_{i}"] = predict_logits(untrained, test_items)
    print(json.dumps({**report, "model_path": str(result.model_path)}))
np.savez(args["out"], **logits)
'''


def _env() -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TF_CONFIG", None)
    return env


def _start(script: Path, args: dict, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(script), json.dumps(args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env or _env())


def _finish(procs: list[subprocess.Popen], timeout: float = 600) -> list[list[dict]]:
    """Each process's JSON reports (one per run); every process is ended if one fails (a lone worker waits forever)."""
    reports = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, f"worker exited {proc.returncode}:\n{err[-4000:]}"
            reports.append([json.loads(line) for line in out.splitlines() if line.startswith("{")])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return reports


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """12 real photos per class: 8 train, 2 validation, 2 test each (no scan: the split is written out)."""
    rows = []
    for label in ("cat", "dog"):
        photos = real_photos(label, 12)
        rows += [(p, label, "train") for p in photos[:8]] + [(p, label, "validation") for p in photos[8:10]]
        rows += [(p, label, "test") for p in photos[10:]]
    path = tmp_path_factory.mktemp("data") / "manifest.csv"
    path.write_text("path,label,split\n" + "".join(f"{p},{label},{split}\n" for p, label, split in rows))
    return path


@pytest.fixture
def worker_script(tmp_path) -> Path:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    return script


# ---------------------------------------------------------------- the setting
def test_distribution_is_validated_and_saved_and_old_run_folders_resume(tmp_path):
    with pytest.raises(ValueError, match="distribution must be one of 'none', 'mirrored', 'multiworker'"):
        TrainConfig(distribution="tpu")
    assert TrainConfig.from_params(distribution="mirrored").distribution == "mirrored"
    from dataclasses import asdict

    from catdog.training import check_resume

    saved = asdict(TrainConfig())
    del saved["distribution"]  # a run folder written before the setting existed
    (tmp_path / "train_config.json").write_text(json.dumps(saved))
    check_resume(tmp_path, TrainConfig())  # resumes as "none"
    with pytest.raises(ValueError, match="distribution: 'none' -> 'mirrored'"):
        check_resume(tmp_path, TrainConfig(distribution="mirrored"))


# ---------------------------------------------------------------- training under a strategy
@pytest.mark.slow
def test_mirrored_on_two_cpu_devices_trains_both_phases_like_one_device(manifest, worker_script, tmp_path):
    # The global batch is the whole train split (16 photos, one step per epoch) and augmentation is off: a
    # distributed input pipeline draws the seeded shuffle in another order, so with several steps per epoch
    # the two runs would see other batches. Frozen BatchNorm (head and fine-tune phases) and no dropout keep
    # the per-replica halves of the batch from differing in anything but the gradient they give.
    config = {"backbone": "efficientnet_lite0", "image_size": 32, "weights": "imagenet", "dropout": 0.0,
              "head_epochs": 1, "finetune_epochs": 1, "finetune_layers": 5, "schedule": "plateau", "warmup_epochs": 0,
              "batch_size": 16, "augment": False,
              "openset_images": 0}
    runs = [{"run_dir": str(tmp_path / name), "config": {**config, "distribution": name}}
            for name in ("none", "mirrored")]
    (none, mirrored), = _finish([_start(worker_script, {"manifest": str(manifest), "runs": runs, "cpu_devices": 2,
                                                        "out": str(tmp_path / "logits.npz")})])
    assert none["replicas"] == 1 and none["fit_replicas"] == [1, 1]
    assert mirrored["replicas"] == 2 and mirrored["fit_replicas"] == [2, 2]  # head and fine-tune phases mirrored
    logits = np.load(tmp_path / "logits.npz")
    np.testing.assert_array_equal(logits["untrained_0"], logits["untrained_1"])
    moved = np.abs(logits["trained_0"] - logits["untrained_0"]).max()
    assert moved > 1e-2  # training changed the predictions by far more than the tolerance below
    np.testing.assert_allclose(logits["trained_1"], logits["trained_0"], atol=1e-5)  # measured here: 6e-8
    assert json.loads((tmp_path / "mirrored" / "train_config.json").read_text())["distribution"] == "mirrored"
    assert (tmp_path / "mirrored" / "model.keras").is_file()


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _two_workers(worker_script: Path, args: dict, tmp_path: Path, tag: str) -> list[list[dict]]:
    """Run ``args`` on a two-worker cluster on 127.0.0.1; worker temp folders go to ``tmp_path/tmp-<index>``."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    procs = []
    for index in range(2):
        temp = tmp_path / f"tmp-{index}"
        temp.mkdir(exist_ok=True)
        env = {**_env(), "TMPDIR": str(temp),
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        procs.append(_start(worker_script, {**args, "out": str(tmp_path / f"{tag}-{index}.npz")}, env))
    return _finish(procs)


@pytest.mark.slow
def test_multiworker_on_two_local_processes_trains_resumes_and_only_the_chief_writes(manifest, worker_script,
                                                                                      tmp_path):
    run_dir = tmp_path / "run"
    config = {"backbone": "simple_cnn", "image_size": 32, "weights": None, "head_epochs": 2, "batch_size": 8,
              "patience": 10, "openset_images": 0, "distribution": "multiworker"}
    args = {"manifest": str(manifest), "runs": [{"run_dir": str(run_dir), "config": config}]}
    first = _two_workers(worker_script, {**args, "interrupt_after": 0}, tmp_path, "first")
    assert [r[0]["interrupted"] for r in first] == [True, True]
    assert [(r[0]["chief"], r[0]["replicas"], r[0]["epochs_run"]) for r in first] == [(True, 2, [0]), (False, 2, [0])]
    assert (run_dir / "checkpoints" / "backup_scratch").is_dir() and not (run_dir / "model.keras").exists()
    with open(run_dir / "history_scratch.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["0"]

    second = _two_workers(worker_script, args, tmp_path, "second")
    # both workers resume after the finished epoch (the other worker from its copy of the chief's checkpoint)
    assert [(r[0]["chief"], r[0]["epochs_run"], r[0]["fit_replicas"]) for r in second] == [(True, [1], [2]),
                                                                                           (False, [1], [2])]
    assert {r[0]["model_path"] for r in second} == {str(run_dir / "model.keras")}
    assert (run_dir / "model.keras").is_file() and (run_dir / "model.card.json").is_file()
    with open(run_dir / "history.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["0", "1"]
    # synchronous training: both workers end with the same weights
    chief, other = (np.load(tmp_path / f"second-{i}.npz") for i in range(2))
    np.testing.assert_allclose(other["trained_0"], chief["trained_0"], atol=1e-6)
    assert np.abs(chief["trained_0"] - chief["untrained_0"]).max() > 1e-3
    # the other worker wrote only into its temporary copy, and removed it
    assert not any((tmp_path / "tmp-1").iterdir()) and not any((tmp_path / "tmp-0").iterdir())


# ---------------------------------------------------------------- prediction in shards
def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """pets/Cat/{7 photos}, pets/Dog/{7 photos}, pets/Dog/more/{4 photos}: 18 real photos."""
    root = tmp_path_factory.mktemp("photos") / "pets"
    for label in ("cat", "dog"):
        (root / label.capitalize()).mkdir(parents=True)
        for p in real_photos(label, 7):
            shutil.copy(p, root / label.capitalize() / p.name)
    (root / "Dog" / "more").mkdir()
    for p in real_photos("dog", 4, start=7):
        shutil.copy(p, root / "Dog" / "more" / p.name)
    return root


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """An untrained simple_cnn at 32 px with a card: predictions are arbitrary but deterministic."""
    import keras

    from catdog.card import ModelCard
    from catdog.models import build_model

    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    build_model("simple_cnn", 32, weights=None).save(path)
    ModelCard(model_file=path.name, backbone="simple_cnn", image_size=32, temperature=1.0).save(path)
    return path


@pytest.fixture(scope="module")
def shards(photos, tiny_model, tmp_path_factory) -> tuple[Path, list[Path]]:
    """The unsharded CSV of ``photos`` and the CSVs of shards 1/3, 2/3, 3/3 (library calls, one loaded model)."""
    from catdog.predict import Predictor, Shard, predict_to_csv

    out = tmp_path_factory.mktemp("predictions")
    predictor = Predictor(tiny_model, reject=False, batch_size=4, progress=False)
    whole = predict_to_csv(photos, out / "all.csv", predictor=predictor)
    parts = [predict_to_csv(photos, out / f"shard-{k}.csv", shard=Shard(k, 3), predictor=predictor) for k in (1, 2, 3)]
    return whole, parts


def _copy_shard(csv_path: Path, dest: Path) -> Path:
    from catdog.predict import shard_record_path

    shutil.copy(csv_path, dest)
    shutil.copy(shard_record_path(csv_path), shard_record_path(dest))
    return dest


def test_three_shards_are_disjoint_and_together_are_the_unsharded_run(shards):
    whole, parts = shards
    expected = sorted(_rows(whole), key=lambda r: r["path"])
    per_shard = [_rows(p) for p in parts]
    assert all(per_shard) and sum(map(len, per_shard)) == len(expected) == 18  # no shard empty, none overlapping
    union = sorted((r for rows in per_shard for r in rows), key=lambda r: r["path"])
    assert [r["path"] for r in union] == [r["path"] for r in expected]
    for got, want in zip(union, expected):  # the same model gives the same row, in whichever batch the photo was
        assert (got["label"], got["error"]) == (want["label"], want["error"])
        assert float(got["p_dog"]) == pytest.approx(float(want["p_dog"]), abs=1e-5)
    records = [json.loads(Path(f"{p}.shard.json").read_text()) for p in parts]
    assert [(r["shard"], r["shards"], r["files"]) for r in records] == [(k, 3, len(rows))
                                                                      for k, rows in zip((1, 2, 3), per_shard)]


def test_a_shard_is_the_same_files_wherever_the_folder_is_and_follows_the_documented_hash(photos, tmp_path):
    import hashlib

    from catdog.predict import Shard, shard_files

    moved = tmp_path / "elsewhere" / "deeper" / "pets"
    shutil.copytree(photos, moved)
    for k in (1, 2, 3):
        here = [p.relative_to(photos) for p in shard_files(photos, Shard(k, 3))]
        there = [p.relative_to(moved) for p in shard_files(moved, Shard(k, 3))]
        assert here == there
        # sha1 of the path relative to the folder given, as an integer, mod N == K - 1
        assert all(int(hashlib.sha1(p.as_posix().encode()).hexdigest(), 16) % 3 == k - 1 for p in here)
    # a file given by name is keyed by its name
    one = next(iter(sorted((photos / "Cat").iterdir())))
    k = int(hashlib.sha1(one.name.encode()).hexdigest(), 16) % 3 + 1
    assert list(shard_files([one], Shard(k, 3))) == [one.absolute()]
    assert list(shard_files([one], Shard(k % 3 + 1, 3))) == []


def test_merge_on_the_command_line_joins_the_shards_and_never_overwrites(shards, tmp_path, capsys):
    from catdog.cli import main

    whole, parts = shards
    merged = tmp_path / "merged.csv"
    assert main(["predict", "merge", str(merged), *map(str, reversed(parts))]) == 0
    assert "wrote" in capsys.readouterr().err
    assert _rows(merged) == sorted(_rows(whole), key=lambda r: r["path"])  # whole rows, in path order
    assert merged.read_text().splitlines()[0] == "path,label,confidence,p_cat,p_dog,uncertain,ood_score,error"
    before = merged.read_bytes()
    assert main(["predict", "merge", str(merged), *map(str, parts)]) == 2
    assert "already exists" in capsys.readouterr().err and merged.read_bytes() == before
    assert main(["predict", "merge", str(tmp_path / "x.csv"), *map(str, parts), "--resume"]) == 2
    assert "takes no --resume" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()


def test_merge_refuses_overlaps_gaps_unfinished_and_foreign_shards(shards, tmp_path):
    from catdog.predict import merge_shards

    whole, (one, two, three) = shards
    out = tmp_path / "out.csv"
    copy = _copy_shard(one, tmp_path / "copy-of-1.csv")
    first_path = _rows(one)[0]["path"]
    with pytest.raises(ValueError, match=rf"{first_path} is in both .*shard-1.csv and .*copy-of-1.csv"):
        merge_shards(out, [one, copy, two, three])
    with pytest.raises(ValueError, match=r"shard\(s\) 2/3 missing: pass the CSVs of all 3 shards"):
        merge_shards(out, [one, three])
    unfinished = _copy_shard(two, tmp_path / "unfinished-2.csv")
    lines = unfinished.read_text().splitlines(keepends=True)
    unfinished.write_text("".join(lines[:-1]))  # as a job killed before its last batch
    with pytest.raises(ValueError, match=rf"unfinished-2.csv has {len(lines) - 2} rows but its shard 2/3 has "
                                         rf"{len(lines) - 1} files: rerun it with --resume"):
        merge_shards(out, [one, unfinished, three])
    torn = _copy_shard(two, tmp_path / "torn-2.csv")
    torn.write_text(two.read_text()[:-20])  # a half-written last line
    with pytest.raises(ValueError, match="torn-2.csv line .* is incomplete"):
        merge_shards(out, [one, torn, three])
    relabelled = _copy_shard(two, tmp_path / "relabelled.csv")  # shard 2's rows under shard 3's record
    shutil.copy(Path(f"{three}.shard.json"), Path(f"{relabelled}.shard.json"))
    with pytest.raises(ValueError, match=r"relabelled.csv: .* belongs to shard 2/3, not 3/3"):
        merge_shards(out, [one, relabelled])
    with pytest.raises(ValueError, match="no whole.csv.shard.json beside it"):
        merge_shards(out, [shutil.copy(whole, tmp_path / "whole.csv")])
    assert not out.exists()


def test_an_interrupted_shard_resumes_only_with_its_own_shard(photos, tiny_model, shards, tmp_path, capsys):
    from catdog.cli import main

    _, parts = shards
    resumed = _copy_shard(parts[1], tmp_path / "shard-2.csv")
    lines = resumed.read_text().splitlines(keepends=True)
    resumed.write_text("".join(lines[:2]) + lines[2][:15])  # one row and a torn line left by a kill
    common = ["predict", str(photos), "--model", str(tiny_model), "--no-reject", "--out", str(resumed), "--resume"]
    assert main(common + ["--shard", "1/3"]) == 2
    assert "holds shard 2/3" in capsys.readouterr().err
    assert main(common) == 2
    assert "resume it with --shard 2/3" in capsys.readouterr().err
    assert main(common + ["--shard", "2/3"]) == 0
    assert [r["path"] for r in _rows(resumed)] == [r["path"] for r in _rows(parts[1])]


@pytest.mark.parametrize("value, message", [("0/3", "need 1 <= K <= N"), ("4/3", "need 1 <= K <= N"),
                                            ("x", "expected K/N"), ("2/0", "need 1 <= K <= N"), ("1/3/5", "expected K/N")])
def test_a_bad_shard_is_one_clear_error(value, message, photos, tiny_model, tmp_path, capsys):
    from catdog.cli import main
    from catdog.predict import parse_shard

    with pytest.raises(ValueError, match=message):
        parse_shard(value)
    out = tmp_path / "x.csv"
    assert main(["predict", str(photos), "--model", str(tiny_model), "--no-reject", "--shard", value,
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("catdog: error: --shard") and message in err and not out.exists()
    assert parse_shard(" 2 / 8 ").index == 2


def test_a_folder_named_merge_is_predicted_as_dot_slash_merge(photos, tiny_model, tmp_path, monkeypatch, capsys):
    from catdog.cli import main

    shutil.copytree(photos / "Cat", tmp_path / "merge")
    monkeypatch.chdir(tmp_path)
    assert main(["predict", "./merge", "--model", str(tiny_model), "--no-reject", "--out", "cats.csv"]) == 0
    assert len(_rows(tmp_path / "cats.csv")) == 7
    assert main(["predict", "merge", "--model", str(tiny_model), "--no-reject", "--out", "cats.csv"]) == 2
    assert "takes no --model, --out, --no-reject" in capsys.readouterr().err


def test_train_distribution_option_reaches_the_config_and_its_choices_are_the_trainings():
    from catdog import cli, training

    assert cli.DISTRIBUTIONS == training.DISTRIBUTIONS
    args = cli.build_parser().parse_args(["train", "--manifest", "m.csv", "--run-dir", "r", "--distribution",
                                          "mirrored"])
    assert args.distribution == "mirrored"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["train", "--manifest", "m.csv", "--run-dir", "r", "--distribution", "tpu"])
