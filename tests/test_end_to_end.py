"""The command line end to end on real photos: prepare the data, train (which also fits the
"neither" detector), predict with the default settings, and refuse to mix two runs in one folder."""

from __future__ import annotations

import csv
import io

import pytest

from catdog.cli import main
from conftest import real_photos

TRAIN = ["--image-size", "64", "--head-epochs", "1", "--finetune-epochs", "1", "--finetune-layers", "5",
         "--warmup-epochs", "0",
         "--batch-size", "8", "--weights", "none", "--openset-images", "10"]


@pytest.mark.slow
def test_prepare_train_predict_and_refuse_a_changed_rerun(class_folders, tmp_path, capsys):
    pets = class_folders  # 12 real cats and 12 real dogs in Cat/ and Dog/
    data, run = tmp_path / "data", tmp_path / "run"

    assert main(["data", "prepare", str(pets), "--out", str(data)]) == 0
    assert (data / "manifest.csv").is_file()
    assert main(["train", "--manifest", str(data / "manifest.csv"), "--run-dir", str(run), *TRAIN]) == 0
    model = run / "model.keras"
    for name in ("model.keras", "model.card.json", "history.csv", "model.openset.npz"):
        assert (run / name).is_file(), name
    capsys.readouterr()

    # default settings: "neither" rejection on, which needs the detector train() fitted
    photo = real_photos("dog", 1, start=20)[0]
    assert main(["predict", "--model", str(model), str(photo)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 1 and rows[0]["path"].endswith(photo.name)
    assert rows[0]["label"] in ("cat", "dog", "neither")

    # the same folder with another setting: exit code 2 and a message naming what changed
    assert main(["train", "--manifest", str(data / "manifest.csv"), "--run-dir", str(run), *TRAIN,
                 "--head-epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "already holds a training run" in err and "head_epochs" in err
