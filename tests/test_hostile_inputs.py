"""Hostile inputs: folder layouts that conflict, 16-bit images, non-UTF-8 names, symlinks, unusable
splits, vanished files, overwrites, foreign CSVs, bad pipeline parameters, closed pipes and more.

Every fixture is made at test time (real photos from ../shared copied or linked into tmp,
PNG/TIFF/JPEG written with Pillow, symlinks, non-UTF-8 names via ``os.fsdecode``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import sys
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import make_bad_files, real_photos
from PIL import Image

from catdog import pipeline
from catdog.card import ModelCard
from catdog.cli import build_parser, main
from catdog.data import DatasetError, discover, prepare, read_manifest
from catdog.evaluation import evaluate
from catdog.explain import explain_paths
from catdog.figures import panel_figure
from catdog.images import iter_image_files, load_image
from catdog.models import build_model
from catdog.predict import Predictor, predict_to_csv

SIZE = 48
NON_UTF8 = os.fsdecode(b"cat_\xff\xfe.jpg")  # a name Linux allows that is not valid UTF-8


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """An untrained 48 px CNN saved with a card (no 'neither' detector: use --no-reject)."""
    keras.utils.set_random_seed(3)
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    build_model("simple_cnn", SIZE, weights=None).save(path)
    ModelCard(model_file=path.name, backbone="simple_cnn", image_size=SIZE, temperature=1.5).save(path)
    return path


@pytest.fixture(scope="module")
def predictor(tiny_model) -> Predictor:
    return Predictor(tiny_model, reject=False, batch_size=4, progress=False)


def _copy(photos: list[Path], folder: Path, names: list[str] | None = None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k, photo in enumerate(photos):
        out.append(folder / (names[k] if names else photo.name))
        shutil.copy(photo, out[-1])
    return out


def _pets(root: Path, n_cat: int, n_dog: int) -> Path:
    _copy(real_photos("cat", n_cat), root / "Cat")
    _copy(real_photos("dog", n_dog), root / "Dog")
    return root


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------ 1. folder layout vs file names
def test_class_folders_win_over_file_names_and_conflicts_are_reported(tmp_path, caplog):
    pets = tmp_path / "download" / "PetImages"
    cats, dogs = real_photos("cat", 7), real_photos("dog", 8)
    _copy([cats[i] for i in (0, 3, 4, 5, 6)] + [cats[1]], pets / "Cat", ["0.jpg", "3.jpg", "4.jpg", "5.jpg", "6.jpg",
                                                                          "dog_bowl.jpg"])
    _copy([dogs[i] for i in (0, 1, 3, 5, 7)] + [dogs[2]], pets / "Dog", ["0.jpg", "1.jpg", "3.jpg", "5.jpg", "7.jpg",
                                                                          "cat_friend.jpg"])
    summary = prepare(tmp_path / "download", tmp_path / "out", seed=0)
    assert summary["n_images"] == 12 and summary["n_skipped"] == 0
    labels = {Path(i.path).parent.name + "/" + Path(i.path).name: i.label
              for i in read_manifest(tmp_path / "out" / "manifest.csv")}
    assert labels["Dog/cat_friend.jpg"] == "dog" and labels["Cat/dog_bowl.jpg"] == "cat"
    assert "named after the other class" in caplog.text


def test_files_without_a_class_in_name_based_layouts_are_listed_as_skipped(tmp_path):
    flat = tmp_path / "train"
    _copy(real_photos("cat", 3), flat, ["cat.1.jpg", "cat.2.jpg", "cat.3.jpg"])
    _copy(real_photos("dog", 3), flat, ["dog.1.jpg", "dog.2.jpg", "dog.3.jpg"])
    _copy(real_photos("dog", 1, start=5), flat / "extra", ["puppy.jpg"])  # below the flat folder, no class in name
    items = discover(flat)
    assert {Path(i.path).name: i.label for i in items}["puppy.jpg"] == "unknown"  # -> skipped.csv, not dropped


# ------------------------------------------------------------------ 2. 16-bit and float images
def test_16bit_grayscale_and_float_images_are_scaled_not_clipped_white(tmp_path):
    arrays = []
    for k, photo in enumerate(real_photos("cat", 3)):
        gray8 = Image.open(photo).convert("L")
        png8, png16 = tmp_path / f"g8_{k}.png", tmp_path / f"g16_{k}.png"
        gray8.save(png8)
        Image.fromarray(np.asarray(gray8, dtype=np.uint16) * 257).save(png16)  # the same photo, full 16-bit range
        assert Image.open(png16).mode.startswith("I")
        got = load_image(png16, 64)
        assert got.mean() < 250 and np.abs(got.astype(int) - load_image(png8, 64)).max() <= 1
        arrays.append(got)
    assert not np.array_equal(arrays[0], arrays[1])
    tif = tmp_path / "float.tif"
    Image.fromarray(np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64), "F").save(tif)
    values = load_image(tif, 64)
    assert values.min() == 0 and values.max() >= 250 and 100 < values.mean() < 155


# ------------------------------------------------------------------ 3. explain with a non-UTF-8 name
def test_explain_cli_writes_panels_for_a_non_utf8_file_name_and_the_images_after_it(tiny_model, tmp_path, capsys):
    folder = tmp_path / "in"
    _copy(real_photos("cat", 1) + real_photos("dog", 1), folder, [NON_UTF8, "zz_dog.jpg"])
    out = tmp_path / "ex"
    assert main(["explain", str(folder), "--out", str(out), "--model", str(tiny_model)]) == 0
    assert "wrote panels for 2 images" in capsys.readouterr().out
    assert len(list(out.glob("*_panel.png"))) == 2 and len(list(out.iterdir())) == 8


# ------------------------------------------------------------------ 4. non-UTF-8 names in CSVs; atomic prepare
def test_predict_csv_escapes_non_utf8_names_and_resume_round_trips(predictor, tmp_path):
    folder = tmp_path / "in"
    _copy(real_photos("cat", 2) + real_photos("dog", 2), folder, ["a.jpg", NON_UTF8, "c.jpg", "d.jpg"])
    out = tmp_path / "p.csv"
    predict_to_csv(folder, out, predictor=predictor)
    rows = _rows(out)  # the file is valid UTF-8
    assert len(rows) == 4 and all(r["label"] in ("cat", "dog") for r in rows)
    assert any(r["path"].endswith("cat_\\xff\\xfe.jpg") for r in rows)
    predict_to_csv(folder, out, resume=True, predictor=predictor)
    assert len(_rows(out)) == 4  # nothing predicted twice


def test_prepare_lists_non_utf8_names_as_skipped_and_keeps_the_manifest_utf8(tmp_path):
    pets = _pets(tmp_path / "pets", 6, 6)
    shutil.copy(real_photos("cat", 1, start=8)[0], pets / "Cat" / NON_UTF8)
    summary = prepare(pets, tmp_path / "out", seed=0)
    assert summary["n_images"] == 12
    skipped = _rows(tmp_path / "out" / "skipped.csv")
    assert [r["reason"] for r in skipped] == ["file name is not valid UTF-8 (rename the file to use it)"]
    assert skipped[0]["path"].endswith("cat_\\xff\\xfe.jpg")
    (tmp_path / "out" / "manifest.csv").read_bytes().decode("utf-8")


def test_a_refused_prepare_leaves_the_earlier_outputs_untouched(tmp_path):
    out = tmp_path / "out"
    prepare(_pets(tmp_path / "good", 6, 6), out, seed=0)
    before = {name: (out / name).read_bytes() for name in ("manifest.csv", "skipped.csv", "dataset.json")}
    with pytest.raises(DatasetError):
        prepare(_pets(tmp_path / "tiny", 1, 1), out, seed=0, force=True)
    assert {name: (out / name).read_bytes() for name in before} == before
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


# ------------------------------------------------------------------ 5. symlinked sub-folders
def test_symlinked_sub_folders_are_followed_and_loops_walked_once(tmp_path, caplog):
    pets = _pets(tmp_path / "pets", 6, 0)
    elsewhere = tmp_path / "elsewhere"
    _copy(real_photos("dog", 6), elsewhere)
    (pets / "Dog" / "more").symlink_to(elsewhere, target_is_directory=True)
    (pets / "Cat" / "loop").symlink_to(pets / "Cat", target_is_directory=True)
    (pets / "Cat" / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    summary = prepare(pets, tmp_path / "out", seed=0)
    assert sum(summary["counts"][s]["dog"] for s in summary["counts"]) == 6
    assert sum(summary["counts"][s]["cat"] for s in summary["counts"]) == 6  # the loop adds nothing
    assert len(list(iter_image_files(pets))) == 12
    assert "symlink loop" in caplog.text and "broken symlink" in caplog.text  # reported, not silently lost


# ------------------------------------------------------------------ 6. unusable splits
def test_prepare_refuses_splits_a_model_cannot_use(tmp_path, capsys):
    only_bad = _pets(tmp_path / "bad_dogs", 6, 0)
    bad = make_bad_files(tmp_path / "junk")
    _copy([bad["corrupt"], bad["zero_byte"], bad["truncated"]], only_bad / "Dog")
    with pytest.raises(DatasetError, match="no usable dog images"):
        prepare(only_bad, tmp_path / "o1")
    with pytest.raises(DatasetError, match=r"split would hold no cat.*at least 3 per class"):
        prepare(_pets(tmp_path / "two", 1, 1), tmp_path / "o2")
    for n in ("0", "-1"):
        assert main(["data", "prepare", str(only_bad), "--out", str(tmp_path / f"o{n}"), "--max-per-class", n]) == 2
        assert "max_per_class must be a whole number >= 1" in capsys.readouterr().err
        assert not (tmp_path / f"o{n}").exists()


# ------------------------------------------------------------------ 7. evaluate with vanished or broken files
def test_evaluate_skips_missing_and_unreadable_files_and_counts_them(tiny_model, tmp_path):
    photos = real_photos("cat", 3) + real_photos("dog", 3)
    broken = make_bad_files(tmp_path / "bad")["corrupt"]
    lines = ["path,label,split"] + [f"{p},{p.parent.name.lower()},test" for p in photos]
    lines += [f"{tmp_path / 'gone.jpg'},cat,test", f"{broken},dog,test"]
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join(lines) + "\n")
    out = evaluate(tiny_model, manifest, out_dir=tmp_path / "report", heatmaps=False)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_unreadable"] == 2 and {Path(u["path"]).name for u in metrics["unreadable"]} == {"gone.jpg",
                                                                                                    "corrupt.jpg"}
    assert len(_rows(out / "predictions.csv")) == 6


def test_a_misspelled_manifest_column_is_named(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,lable,split\na.jpg,cat,test\n")
    with pytest.raises(DatasetError, match="no column 'label'"):
        read_manifest(manifest)


# ------------------------------------------------------------------ 8. no silent overwrites
def test_explain_never_replaces_the_panels_of_another_photo(tiny_model, tmp_path):
    first = _copy(real_photos("cat", 1), tmp_path / "one", ["cat_0.jpg"])
    second = _copy(real_photos("cat", 1, start=4), tmp_path / "other", ["cat_0.jpg"])
    out = tmp_path / "ex1"
    explain_paths(tiny_model, first, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    rows = explain_paths(tiny_model, second, out)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name in before} == before
    assert len(list(out.iterdir())) == 8 and Path(rows[0]["panel"]).name == "other_cat_0_panel.png"


def test_prepare_into_a_prepared_folder_needs_force(tmp_path, capsys):
    pets, out = _pets(tmp_path / "pets", 6, 6), tmp_path / "out"
    assert main(["data", "prepare", str(pets), "--out", str(out), "--seed", "1"]) == 0
    manifest = (out / "manifest.csv").read_bytes()
    capsys.readouterr()
    assert main(["data", "prepare", str(pets), "--out", str(out), "--seed", "2"]) == 2
    assert "--force" in capsys.readouterr().err and (out / "manifest.csv").read_bytes() == manifest
    assert main(["data", "prepare", str(pets), "--out", str(out), "--seed", "2", "--force"]) == 0


# ------------------------------------------------------------------ 9. foreign CSV on --resume
def test_resume_refuses_a_foreign_csv_without_changing_it(predictor, tmp_path):
    photo = real_photos("cat", 1)[0]
    foreign = tmp_path / "f.csv"
    foreign.write_bytes(b"precious,data\n1,2")  # no final newline: the old code cut "1,2" off first
    with pytest.raises(ValueError, match="not a catdog predictions CSV"):
        predict_to_csv([photo], foreign, resume=True, predictor=predictor)
    assert foreign.read_bytes() == b"precious,data\n1,2"


# ------------------------------------------------------------------ 10. pipeline parameter values
@pytest.mark.parametrize("value, words", [("abc", "expected a whole number"), ("-5", "must be in [32")])
def test_pipeline_checks_parameter_values_before_creating_a_run(tmp_path, monkeypatch, capsys, value, words):
    monkeypatch.setattr(pipeline, "ensure_kernel", lambda *a, **k: None)
    monkeypatch.setattr(pipeline, "_execute", lambda *a, **k: pytest.fail("a notebook ran with a bad value"))
    reports = tmp_path / "runs"
    assert main(["pipeline", "--quick", "-p", "image_size", value, "--reports", str(reports)]) == 2
    err = capsys.readouterr().err
    assert "image_size" in err and words in err
    assert not reports.exists() or not list(reports.iterdir())


def test_pipeline_accepts_the_quick_values_and_typed_overrides():
    notebooks = pipeline.notebook_paths()
    pipeline.check_param_values({**pipeline.QUICK, "head_lr": 1e-3, "max_per_class": None, "augment": False,
                                 "augmentation": {"shear": 0}, "weights": "none"}, notebooks)
    with pytest.raises(ValueError, match="val_fraction: must be in \\(0, 1\\)"):
        pipeline.check_param_values({"val_fraction": 1.5}, notebooks)


# ------------------------------------------------------------------ smaller ones
class _ClosedPipe(io.StringIO):
    """stdout of `| head -3`: takes a few lines, then the reader is gone."""

    def __init__(self, lines_allowed: int):
        super().__init__()
        self.left = lines_allowed

    def write(self, text):
        if self.left <= 0:
            raise BrokenPipeError(32, "Broken pipe")
        self.left -= text.count("\n")
        return super().write(text)


def test_predict_into_a_closed_pipe_stops_quietly(tiny_model, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "big"
    _copy(real_photos("cat", 4) + real_photos("dog", 4), folder, [f"{k}.jpg" for k in range(8)])
    pipe = _ClosedPipe(3)
    monkeypatch.setattr(sys, "stdout", pipe)
    assert main(["predict", str(folder), "--model", str(tiny_model), "--no-reject", "--batch-size", "2"]) == 141
    assert pipe.getvalue().count("\n") == 3 and "Traceback" not in capsys.readouterr().err


def test_predict_prints_no_header_when_it_fails_before_any_row(tmp_path, capsys):
    photo = real_photos("cat", 1)[0]
    assert main(["predict", str(photo), "--model", str(tmp_path / "missing.keras"), "--no-reject"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "missing.keras" in captured.err


def test_predict_out_pointing_at_a_folder_is_a_clear_error(tiny_model, tmp_path, capsys):
    photo = real_photos("cat", 1)[0]
    assert main(["predict", str(photo), "--model", str(tiny_model), "--no-reject", "--out", str(tmp_path),
                 "--resume"]) == 2
    assert "is a folder; give a CSV file name" in capsys.readouterr().err


def test_explain_warns_once_per_skipped_file_and_checks_inputs_before_creating_out(tiny_model, tmp_path, capsys,
                                                                                   caplog):
    folder = tmp_path / "in"
    _copy(real_photos("dog", 1), folder)
    shutil.copy(make_bad_files(tmp_path / "bad")["corrupt"], folder / "broken.jpg")
    assert main(["explain", str(folder), "--out", str(tmp_path / "ex"), "--model", str(tiny_model)]) == 0
    said = capsys.readouterr().err + caplog.text
    assert said.count("broken.jpg") == 1
    missing_out = tmp_path / "never"
    assert main(["explain", str(tmp_path / "nope.jpg"), "--out", str(missing_out), "--model", str(tiny_model)]) == 2
    assert not missing_out.exists()


def test_tif_and_heic_files_in_folders_get_a_row(predictor, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.open(real_photos("cat", 1)[0]).save(folder / "photo.tif")
    (folder / "phone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64)  # an HEIC header, no plugin
    rows = {Path(r["path"]).name: r for r in predictor.predict_paths(folder)}
    assert set(rows) == {"photo.tif", "phone.heic"}
    assert rows["photo.tif"]["label"] in ("cat", "dog")
    assert rows["phone.heic"]["label"] == "error" and "HEIC" in rows["phone.heic"]["error"]


def test_panel_titles_with_non_latin_names_draw_no_missing_glyphs(tmp_path):
    image = np.zeros((20, 20, 3), np.uint8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        panel_figure(image, image, image, "猫の写真.jpg: predicted cat", tmp_path / "panel.png")
    assert not [w for w in caught if "missing from" in str(w.message)]


def test_all_inputs_unreadable_exits_non_zero(tiny_model, tmp_path, capsys):
    folder = tmp_path / "bad"
    bad = make_bad_files(tmp_path / "junk")
    _copy([bad["corrupt"], bad["zero_byte"]], folder)
    assert main(["predict", str(folder), "--model", str(tiny_model), "--no-reject"]) == 1
    assert main(["predict", str(folder), "--model", str(tiny_model), "--no-reject",
                 "--out", str(tmp_path / "p.csv")]) == 1
    assert main(["explain", str(folder), "--out", str(tmp_path / "ex"), "--model", str(tiny_model)]) == 1
    assert "none of the 2 input file(s) could be read" in capsys.readouterr().err


# ------------------------------------------------------------------ help texts
def _parsers(parser: argparse.ArgumentParser, name: str = "catdog"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_argument_of_every_command_has_a_help_text_with_its_default():
    missing = [f"{name}: {action.dest}" for name, parser in _parsers(build_parser()) for action in parser._actions
               if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
               and not (action.help and ("default" in action.help or "required" in action.help))]
    assert not missing, f"arguments without a help text naming the default: {missing}"
    main_help = build_parser().format_help()
    for command in ("data", "train", "evaluate", "compare", "predict", "explain", "export", "pipeline", "bench"):
        assert f"catdog {command} " in main_help.split("examples")[1]
