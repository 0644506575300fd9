"""The ``catdog`` command line, run in-process: real files in, CSV/JSON out, clear errors."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil

import pytest

from catdog import cli, paths
from catdog.cli import main
from catdog.card import ModelCard
from conftest import make_bad_files, real_photos
from pngs import figure_size, png_pixels

SHIPPED = paths.default_model_path()
needs_shipped = pytest.mark.skipif(not SHIPPED.exists(), reason="shipped model not present")


def test_data_prepare_prints_a_summary_and_writes_a_manifest(class_folders, tmp_path, capsys):
    assert main(["data", "prepare", str(class_folders), "--out", str(tmp_path / "out"), "--seed", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_images"] == 24 and (tmp_path / "out" / "manifest.csv").exists()


def test_train_passes_every_option_to_the_run_and_can_continue_a_model(class_folders, tmp_path, capsys):
    assert main(["data", "prepare", str(class_folders), "--out", str(tmp_path / "data"), "--seed", "1"]) == 0
    common = ["train", "--manifest", str(tmp_path / "data" / "manifest.csv"), "--backbone", "simple_cnn",
              "--image-size", "48", "--batch-size", "8", "--head-epochs", "1", "--weights", "none"]
    assert main(common + ["--run-dir", str(tmp_path / "a"), "--openset-images", "0"]) == 0
    assert not (tmp_path / "a" / "model.openset.npz").exists()  # 0: no "neither" detector
    assert main(common + ["--run-dir", str(tmp_path / "b"), "--init-model", str(tmp_path / "a" / "model.keras"),
                          "--schedule", "cosine", "--warmup-epochs", "1", "--patience", "5", "--openset-images", "6",
                          "--augmentation", '{"shear": 0, "rotation": 0.02}']) == 0
    config = json.loads((tmp_path / "b" / "train_config.json").read_text())
    assert (config["schedule"], config["warmup_epochs"], config["patience"]) == ("cosine", 1, 5)
    assert config["augmentation"]["shear"] == 0 and config["augmentation"]["rotation"] == 0.02
    assert config["augmentation"]["zoom"] == 0.15  # options not given keep their defaults
    assert config["init_model"] == str(tmp_path / "a" / "model.keras")
    assert config["weights"] is None and config["openset_images"] == 6
    assert (tmp_path / "b" / "model.openset.npz").is_file()  # train fits the detector too
    capsys.readouterr()

    # the same folder with other settings would mix two runs: refused before any training, naming the setting
    assert main(common + ["--run-dir", str(tmp_path / "a"), "--openset-images", "0", "--head-lr", "0.01"]) == 2
    err = capsys.readouterr().err
    assert "already holds a training run" in err and "head_lr" in err


def test_train_refuses_a_bad_option_value_with_one_line(tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,split\n")
    assert main(["train", "--manifest", str(manifest), "--run-dir", str(tmp_path / "r"),
                 "--augmentation", "{not json"]) == 2
    assert "augmentation is not valid JSON" in capsys.readouterr().err


def test_bad_input_is_one_clear_line_and_exit_code_2(tmp_path, capsys):
    assert main(["data", "prepare", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "data folder not found" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "nothing-here.jpg"), "--no-reject"]) == 2
    assert "nothing-here.jpg" in capsys.readouterr().err
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"")
    model = tmp_path / "m.keras"
    model.write_bytes(b"")
    # --variant reaches the engine: the missing int8 file is named (the Keras model is never read)
    assert main(["predict", str(photo), "--model", str(model), "--engine", "tflite", "--variant", "int8",
                 "--no-reject"]) == 2
    assert "m.int8.tflite not found" in capsys.readouterr().err
    # an unknown export variant is refused by the parser, naming the ones there are
    with pytest.raises(SystemExit) as stop:
        main(["export", "--variants", "int4"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "invalid choice: 'int4'" in err and "'dynamic'" in err
    # a comparison of one model is refused before any model is loaded
    assert main(["bench", "cost", "--model", str(model)]) == 2
    assert "--against" in capsys.readouterr().err


@needs_shipped
def test_predict_folder_with_a_broken_file_reports_it_and_predicts_the_rest(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "mine"
    folder.mkdir()
    for p in real_photos("cat", 2) + real_photos("dog", 2):
        shutil.copy(p, folder / f"{p.parent.name}_{p.name}")
    shutil.copy(make_bad_files(tmp_path / "bad")["corrupt"], folder / "broken.jpg")
    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert main(["predict", str(folder), "--no-reject"]) == 0
    import sys

    rows = list(csv.DictReader(io.StringIO(sys.stdout.getvalue())))
    assert len(rows) == 5
    by_name = {r["path"].rsplit("/", 1)[-1]: r for r in rows}
    assert by_name["broken.jpg"]["label"] == "error" and "decode" in by_name["broken.jpg"]["error"]
    for name, row in by_name.items():
        if name != "broken.jpg":
            assert row["label"] == name.split("_")[0].lower()  # the shipped model gets these right
            assert 0.5 <= float(row["confidence"]) <= 1 and abs(float(row["p_cat"]) + float(row["p_dog"]) - 1) < 1e-6


@needs_shipped
def test_evaluate_writes_a_new_report_folder_each_time(tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    rows = [f"{p},{p.parent.name.lower()},{split}" for split, k in (("test", 0), ("validation", 3))
            for p in real_photos("cat", 3, start=k) + real_photos("dog", 3, start=k)]
    manifest.write_text("path,label,split\n" + "\n".join(rows) + "\n")
    args = ["evaluate", "--manifest", str(manifest), "--out", str(tmp_path / "reports"), "--no-heatmaps"]
    assert main(args) == 0 and main(args + ["--image-size", "160"]) == 0
    folders = list((tmp_path / "reports").iterdir())
    assert len(folders) == 2
    metrics = [json.loads((f / "metrics.json").read_text()) for f in folders]
    assert all(m["calibrated"]["n_images"] == 6 and m["split"] == "test" for m in metrics)
    assert {m["image_size"] for m in metrics} == {ModelCard.read(SHIPPED).image_size, 160}  # trained size, then 160 px


def _mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p: twice the binomial(only_a + only_b, 1/2) tail of the smaller count, at most 1."""
    n = only_a + only_b
    return min(1.0, 2 * sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2 ** n) if n else 1.0


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval of k successes in n, written out."""
    p, half = k / n, z * math.sqrt(k * (n - k) / n ** 3 + z * z / (4 * n * n))
    return ((p + z * z / (2 * n) - half) / (1 + z * z / n), (p + z * z / (2 * n) + half) / (1 + z * z / n))


def test_the_tests_mcnemar_and_wilson_match_textbook_values():
    assert _mcnemar_exact(0, 5) == 2 / 32 and _mcnemar_exact(3, 3) == 1.0 and _mcnemar_exact(1, 9) == 22 / 1024
    assert _wilson(8, 8)[1] == pytest.approx(1.0) and _wilson(8, 8)[0] == pytest.approx(0.6756, abs=1e-4)
    assert _wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)


@needs_shipped
def test_compare_reports_each_model_with_intervals_and_mcnemar(tmp_path, capsys):
    from catdog.models import build_model

    manifest = tmp_path / "m.csv"
    rows = [f"{p},{p.parent.name.lower()},test" for p in real_photos("cat", 4) + real_photos("dog", 4)]
    rows += [f"{p},cat,validation" for p in real_photos("cat", 2, start=4)]  # one class only: no ROC AUC
    manifest.write_text("path,label,split\n" + "\n".join(rows) + "\n")
    untrained = tmp_path / "untrained.keras"
    build_model("simple_cnn", 48, weights=None).save(untrained)
    args = ["compare", str(SHIPPED), str(untrained), "--manifest", str(manifest), "--split", "test", "validation",
            "--out", str(tmp_path / "cmp")]
    assert main(args) == 0
    (folder,) = (tmp_path / "cmp").iterdir()
    report = json.loads((folder / "comparison.json").read_text())
    assert [(r["model"], r["split"]) for r in report["rows"]] == [
        (str(SHIPPED), "test"), (str(SHIPPED), "validation"), (str(untrained), "test"), (str(untrained), "validation"),
        ("ensemble of 2 (mean calibrated logit)", "test"), ("ensemble of 2 (mean calibrated logit)", "validation")]
    shipped, shipped_val, other, _, ensemble, _ = report["rows"]
    assert shipped["accuracy"] == 1.0 and shipped["errors"] == 0  # these 8 photos are easy for it
    assert shipped_val["split"] == "validation" and shipped_val["roc_auc"] is None
    for r in report["rows"]:
        v, n = r["vs_first"], {"test": 8, "validation": 2}[r["split"]]
        right, right_first = round(r["accuracy"] * n), round(v["accuracy_a"] * n)
        assert v["n_images"] == n and r["errors"] == n - right and v["accuracy_b"] == r["accuracy"]
        # every image falls in exactly one cell of McNemar's 2x2 table
        both_right = right_first - v["only_a_correct"]
        both_wrong = n - both_right - v["only_a_correct"] - v["only_b_correct"]
        assert both_right >= 0 and both_wrong >= 0 and both_right + v["only_b_correct"] == right
        assert v["p_value"] == pytest.approx(_mcnemar_exact(v["only_a_correct"], v["only_b_correct"]))
        assert r["accuracy_ci95"] == pytest.approx(_wilson(right, n))
    assert shipped["vs_first"]["only_a_correct"] == shipped["vs_first"]["only_b_correct"] == 0
    low, high = shipped["accuracy_ci95"]
    assert low < 0.7 and high == pytest.approx(1.0)  # 8 of 8 right proves little
    v = other["vs_first"]
    assert v["only_a_correct"] == other["errors"] and v["only_b_correct"] == 0
    markdown = (folder / "comparison.md").read_text()
    table = [line.strip("| ").split(" | ") for line in markdown.splitlines() if line.startswith("| ")][1:]
    assert [(cells[0], cells[1], cells[3], cells[6]) for cells in table] == [  # each row's own counts and p-value
        (r["model"], r["split"], str(r["errors"]),
         f"{r['vs_first']['only_a_correct']} / {r['vs_first']['only_b_correct']} (p = {r['vs_first']['p_value']:.2g})")
        for r in report["rows"]]
    assert "McNemar" in markdown and str(untrained) in capsys.readouterr().out
    # the shipped model gets every test photo right, so no photo is wrong under both models
    assert report["wrong_by_all"] == {"test": [], "validation": []}
    png_pixels(folder / "wrong_by_all_test.png", figure_size(3.1, 3.2 + 0.5))  # one empty cell saying so
    assert ensemble["split"] == "test" and ensemble["model"].startswith("ensemble of 2")
    # mean calibrated logit: an untrained model's near-zero logit cannot outvote the shipped model's confident one
    assert ensemble["accuracy"] == 1.0
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        from catdog.evaluation import compare_models

        compare_models([SHIPPED, untrained], manifest, splits=["test"], out_dir=folder)


@pytest.mark.parametrize("command", [[], ["data"], ["data", "prepare"], ["train"], ["evaluate"], ["compare"],
                                     ["predict"], ["explain"], ["export"], ["pipeline"], ["bench"]])
def test_every_help_page_renders(command, capsys):
    # argparse %-formats help strings: a bare "95%" once made `catdog --help` crash
    with pytest.raises(SystemExit) as exit_info:
        main(command + ["--help"])
    assert exit_info.value.code == 0 and "usage: catdog" in capsys.readouterr().out


def test_train_help_shows_the_training_configs_own_defaults():
    from catdog.training import TrainConfig

    parser = cli.build_parser()
    train = next(a for a in parser._actions if a.dest == "command").choices["train"]
    text = " ".join(train.format_help().split())
    defaults = TrainConfig()
    for flag, value in (("--image-size IMAGE_SIZE", defaults.image_size), ("--patience PATIENCE", defaults.patience),
                        ("--schedule {plateau,cosine}", defaults.schedule)):
        assert f"(default: {value})" in text.split(flag, 2)[2].split("--", 1)[0], flag
    assert "training default" not in text and "default: None =" not in text
