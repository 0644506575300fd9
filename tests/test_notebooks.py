"""The notebooks: committed clean (no outputs, a `parameters` cell, kernel "catdog"), and each one
executes through papermill on a few dozen real photos.

The executed notebooks checked here are those of the shared smoke run (conftest: `catdog pipeline
--quick` on 16 real photos per class, 64 px, one epoch per phase, the notebook extras on), so the
five notebooks run once for this file and test_pipeline together.
"""

from __future__ import annotations

import ast
import csv
import json
import math
import sys
from pathlib import Path

import nbformat
import numpy as np
import papermill
import pytest
from PIL import Image

from catdog import explain, notebook, pipeline
from catdog.data import read_manifest
from catdog.images import load_batch
from catdog.rendering import render
from catdog.runs import RunLayout
from conftest import TINY_PIPELINE
from pngs import figure_size, png_pixels, shows_photos, table_size

NOTEBOOKS = pipeline.notebook_paths()
EXPECTED = ["01_data", "02_train", "03_evaluate", "04_gradcam", "05_predict"]


def _parameters_cell(book) -> nbformat.NotebookNode:
    tagged = [c for c in book.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"expected exactly one cell tagged 'parameters', found {len(tagged)}"
    return tagged[0]


# ------------------------------------------------------------------------------ committed form
def test_the_five_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_is_clean(path: Path):
    book = nbformat.read(path, as_version=4)
    nbformat.validate(book)
    assert book.metadata.get("kernelspec", {}).get("name") == "catdog"
    for cell in book.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: a code cell has outputs (commit notebooks cleared)"
            assert cell.execution_count is None, f"{path.name}: a code cell has an execution count"
    params = _parameters_cell(book)
    assert params.cell_type == "code"
    first_code = next(c for c in book.cells if c.cell_type == "code")
    assert first_code is params, f"{path.name}: the parameters cell must be the first code cell"
    assert book.cells[0].cell_type == "markdown" and "papermill" in book.cells[0].source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_sees_every_parameter(path: Path):
    """Each assignment in the parameters cell is a papermill parameter (a stray '=' in a comment hides one)."""
    source = _parameters_cell(nbformat.read(path, as_version=4)).source
    assigned = [node.targets[0].id for node in ast.parse(source).body if isinstance(node, ast.Assign)]
    declared = papermill.inspect_notebook(str(path))
    assert sorted(declared) == sorted(assigned)
    assert "run_dir" in declared
    for name in ("model_path", "manifest"):  # shared names mean the same thing everywhere: "" = default
        if name in declared:
            assert declared[name]["default"] == '""'


def test_quick_preset_only_uses_declared_parameters():
    declared = set().union(*(pipeline.declared_parameters(p) for p in NOTEBOOKS))
    assert set(pipeline.QUICK) <= declared


def test_the_training_defaults_are_the_shipped_models_recipe():
    """notebook 02 (so the pipeline) trains the shipped ensemble by default; `catdog train` its first member."""
    from dataclasses import asdict, fields

    from catdog.card import ModelCard
    from catdog.models import backbone_layers, build_model
    from catdog.paths import default_model_path
    from catdog.training import TrainConfig, member_configs

    shipped = ModelCard.read(default_model_path()).config["members"]  # each member's training config
    declared = {name: pipeline._default_value(source)
                for name, source in pipeline.declared_parameters(NOTEBOOKS[1]).items()}
    base = TrainConfig.from_params(**{f.name: declared[f.name] for f in fields(TrainConfig) if f.name in declared})
    assert base == TrainConfig()  # the notebook's settings are `catdog train`'s
    ours = [asdict(c) for c in member_configs(base, declared["members"])]
    assert len(ours) == len(shipped) == 2
    for mine, theirs in zip(ours, shipped):
        recipe = [k for k in theirs if k not in ("finetune_layers", "openset_images")]
        assert {k: mine[k] for k in recipe} == {k: theirs[k] for k in recipe}
        # every layer: None in the defaults, a count larger than the backbone in the shipped cards
        n_layers = len(backbone_layers(build_model(theirs["backbone"], 64, weights=None)))
        assert mine["finetune_layers"] is None and theirs["finetune_layers"] >= n_layers


# Run-folder names belong to catdog.runs.RunLayout; the notebooks' code cells use it instead.
LAYOUT_NAMES = ('"data"', '"model"', '"model.keras"', '"manifest.csv"', '"skipped.csv"', '"dataset.json"',
                '"evaluation"', '"gradcam"', '"predictions.csv"', '"uploads"', "catdog.plots", "import plots")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_code_uses_the_run_layout(path: Path):
    book = nbformat.read(path, as_version=4)
    params = _parameters_cell(book)
    code = "\n".join(c.source for c in book.cells if c.cell_type == "code" and c is not params)
    assert "RunLayout(" in code
    assert [name for name in LAYOUT_NAMES if name in code] == []


def test_train_config_parses_the_notebook_parameters():
    config = notebook.train_config(backbone="simple_cnn", weights="none", init_model="models/x.keras",
                                   augmentation={"rotation": 0.1}, openset_images=0)
    assert config.weights is None and config.openset_images == 0
    assert config.init_model == str(notebook.resolve_path("models/x.keras"))  # relative to the repo root
    assert config.augmentation["rotation"] == 0.1 and config.augmentation["zoom"] == 0.15  # others keep defaults
    assert notebook.train_config(init_model="").init_model is None
    with pytest.raises(ValueError, match="unknown training parameter"):
        notebook.train_config(n_samples=4)  # a parameter of another notebook


# ------------------------------------------------------------------------------ execution
def _execute(name: str, run_dir: Path, **params) -> nbformat.NotebookNode:
    output = run_dir / f"{name}.ipynb"
    with pipeline.this_environments_kernels():  # this checkout's kernel, as the pipeline runs them
        papermill.execute_notebook(str(pipeline.NOTEBOOK_DIR / f"{name}.ipynb"), str(output),
                                   parameters={"run_dir": str(run_dir), **params}, kernel_name=pipeline.KERNEL_NAME,
                                   progress_bar=False, cwd=str(run_dir))
    book = nbformat.read(output, as_version=4)
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    return book


def test_the_notebooks_run_on_this_checkouts_interpreter(tmp_path):
    pipeline.ensure_kernel()
    book = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sys; print(sys.executable)")])
    source, output = tmp_path / "which.ipynb", tmp_path / "which-out.ipynb"
    nbformat.write(book, source)
    with pipeline.this_environments_kernels():
        papermill.execute_notebook(str(source), str(output), kernel_name=pipeline.KERNEL_NAME, progress_bar=False)
    printed = nbformat.read(output, as_version=4).cells[0].outputs[0]["text"].strip()
    assert Path(printed).absolute() == Path(sys.executable).absolute()  # not resolved: every venv links the same python


def _images(book) -> int:
    return sum("image/png" in o.get("data", {}) for c in book.cells if c.cell_type == "code" for o in c.outputs)


@pytest.fixture(scope="module")
def tiny_run(quick_pipeline) -> tuple[Path, nbformat.NotebookNode, nbformat.NotebookNode]:
    """The shared smoke run (conftest: all five notebooks on the tiny data set) and its executed 01 and 02."""
    run = quick_pipeline[1]
    return run, nbformat.read(run / "01_data.ipynb", as_version=4), nbformat.read(run / "02_train.ipynb", as_version=4)


def _rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _test_split(run: Path) -> dict[str, str]:
    """The run's test photos (absolute paths, as reports write them) and their labels."""
    return {item.path: item.label for item in read_manifest(RunLayout(run).manifest, "test")}


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval, written out (what metrics.accuracy_interval asks scipy for)."""
    p, half = k / n, z * math.sqrt(k * (n - k) / n ** 3 + z * z / (4 * n * n))
    centre = p + z * z / (2 * n)
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


@pytest.mark.slow
def test_01_data_writes_manifest_report_and_figures(tiny_run):
    run, book, _ = tiny_run
    data = run / "data"
    for name in ("manifest.csv", "skipped.csv", "dataset.json"):
        assert (data / name).is_file(), name
    summary = json.loads((data / "dataset.json").read_text())
    assert summary["n_images"] == 32 and summary["n_skipped"] == 0
    rows = _rows(data / "manifest.csv")
    assert len(rows) == 32 and {r["split"] for r in rows} == {"train", "validation", "test"}
    assert sorted(r["label"] for r in rows) == ["cat"] * 16 + ["dog"] * 16
    png_pixels(data / "class_balance.png", figure_size(max(5.5, 2.2 * 3 + 1.5), 4.6))  # three splits
    assert shows_photos(png_pixels(data / "samples.png"))
    # three training photos, each as the model sees it and five augmentations (plus their row titles)
    assert shows_photos(png_pixels(data / "augmentation.png", table_size(3, 6)))
    assert _images(book) >= 3  # balance, samples, augmentation shown inline


@pytest.mark.slow
def test_02_train_writes_model_card_curves_and_detector(tiny_run):
    run, _, book = tiny_run
    model = run / "model"
    for name in ("model.keras", "model.card.json", "history.csv", "model.openset.npz"):
        assert (model / name).is_file(), name
    png_pixels(model / "training_curves.png", figure_size(12, 4.6))
    card = json.loads((model / "model.card.json").read_text())
    assert card["image_size"] == 64 and card["backbone"] == "mobilenet_v2"
    assert set(card["phases"]) == {"head", "finetune"}
    text = "".join(o.get("text", "") for c in book.cells if c.cell_type == "code" for o in c.outputs)
    assert "val_loss" in text  # Keras' per-epoch lines stay visible in the notebook


@pytest.mark.slow
def test_03_evaluate_reports_metrics_that_match_its_predictions(tiny_run):
    run = tiny_run[0]
    reports = [p.parent for p in (run / "evaluation").glob("*/metrics.json")]
    assert len(reports) == 1
    report = reports[0]
    metrics = json.loads((report / "metrics.json").read_text())
    test = _test_split(run)
    rows = _rows(report / "predictions.csv")
    assert sorted(r["path"] for r in rows) == sorted(test) and all(r["label"] == test[r["path"]] for r in rows)
    for r in rows:  # threshold 0.5 on the calibrated p(dog); "correct" says whether it matched the label
        assert r["predicted"] == ("dog" if float(r["p_dog"]) >= 0.5 else "cat"), r
        assert r["correct"] == str(r["predicted"] == r["label"]), r
    n, right = len(rows), sum(r["predicted"] == r["label"] for r in rows)
    calibrated = metrics["calibrated"]
    assert calibrated["n_images"] == n and calibrated["accuracy"] == pytest.approx(right / n)
    assert calibrated["accuracy_ci95"] == pytest.approx(_wilson(right, n))
    count = {(t, p): sum(r["label"] == t and r["predicted"] == p for r in rows) for t in ("cat", "dog")
             for p in ("cat", "dog")}
    assert calibrated["counts"] == {"tp": count["dog", "dog"], "fp": count["cat", "dog"], "tn": count["cat", "cat"],
                                    "fn": count["dog", "cat"]}
    assert calibrated["confusion_matrix"]["counts"] == [[count["cat", "cat"], count["cat", "dog"]],
                                                        [count["dog", "cat"], count["dog", "dog"]]]
    y, p = np.array([r["label"] == "dog" for r in rows]), np.array([float(r["p_dog"]) for r in rows])
    log_loss = -np.mean(np.where(y, np.log(p), np.log(1 - p)))
    assert calibrated["log_loss"] == pytest.approx(log_loss, rel=1e-3)  # the CSV holds the calibrated p(dog)
    # a temperature rescales the logit but keeps its sign: the labels and the accuracy stay the same
    assert metrics["temperature"] > 0 and metrics["uncalibrated"]["accuracy"] == calibrated["accuracy"]
    table = {row["metric"]: row for row in notebook.metrics_table(metrics)}
    assert table["accuracy_ci95"]["calibrated"] == calibrated["accuracy_ci95"]
    png_pixels(report / "confusion_matrix.png", figure_size(10, 4.4))
    for name in ("roc.png", "pr.png"):
        png_pixels(report / name, figure_size(5.6, 5.2))
    png_pixels(report / "reliability.png", figure_size(6.4, 7))
    shown = min(n - right, TINY_PIPELINE["n_gallery"])  # the gallery of mistakes, four to a row
    cols = max(1, min(4, shown))
    gallery = png_pixels(report / "misclassified.png", figure_size(3.1 * cols, 3.2 * math.ceil(max(shown, 1) / cols)
                                                                   + 0.5))
    assert shows_photos(gallery) == (shown > 0)
    assert _images(nbformat.read(run / "03_evaluate.ipynb", as_version=4)) == 5  # matrix, ROC, PR, reliability, gallery


def _same_render(original_path: Path, stem: Path, colormap: str, alpha: float) -> None:
    """The saved overlay and heatmap are the saved gray map rendered with ``colormap`` and ``alpha`` over the photo."""
    original = load_batch([original_path], 8, originals=True, max_side=explain.MAX_SIDE).originals[0]
    gray = np.asarray(Image.open(f"{stem}_gray.png"))
    assert gray.shape == original.shape[:2], f"{stem}: map {gray.shape} is not at the photo's size"
    assert gray.std() > 0, f"{stem}: flat attention map"
    _, heatmap, overlay = render(original, gray / 255.0, colormap, alpha)
    np.testing.assert_array_equal(np.asarray(Image.open(f"{stem}_heatmap.png")), heatmap)
    assert np.abs(np.asarray(Image.open(f"{stem}_overlay.png"), int) - overlay).max() <= 1, stem


@pytest.mark.slow
def test_04_gradcam_panels_methods_and_faithfulness(tiny_run, quick_pipeline):
    run, config = tiny_run[0], quick_pipeline[2]
    out = run / "gradcam"
    sample = [Path(i.path) for i in notebook.sample_items(RunLayout(run).manifest, "test", config["n_images"], 42)]
    assert sorted(p.name for p in (out / "test").glob("*_panel.png")) == sorted(f"{p.stem}_panel.png" for p in sample)
    for photo in sample:  # each explained at its own size, in the colours and opacity asked for
        _same_render(photo, out / "test" / photo.stem, config["colormap"], config["alpha"])
        png_pixels(out / "test" / f"{photo.stem}_panel.png", figure_size(10.5, 3.9))
    mine = Path(config["user_images_dir"])
    assert sorted(p.name for p in (out / "user").glob("*.png")) == [f"my_dog_{kind}.png" for kind in
                                                                    ("gray", "heatmap", "overlay", "panel")]
    _same_render(mine / "my_dog.jpg", out / "user" / "my_dog", config["colormap"], config["alpha"])
    # one row per readable photo (the broken file is named in the title instead); four columns with row titles
    assert shows_photos(png_pixels(out / "test_panels.png", table_size(len(sample), 4)))
    assert shows_photos(png_pixels(out / "user_panels.png", table_size(1, 4)))
    assert shows_photos(png_pixels(out / "both_classes.png", table_size(1, 3, cell=3.2)))
    assert shows_photos(png_pixels(out / "methods.png", table_size(len(sample), 4)))  # original + 3 methods
    book = nbformat.read(run / "04_gradcam.ipynb", as_version=4)
    html = "".join(o.get("data", {}).get("text/html", "") for c in book.cells if c.cell_type == "code"
                   for o in c.outputs)
    assert "broken.jpg" in html  # the unreadable photo is listed with its error, not silently dropped
    assert _images(book) == 4  # test panels, your photos, both classes, methods

    faith = json.loads((out / "faithfulness.json").read_text())
    assert faith["n_images"] == config["faithfulness_images"] and sorted(faith["paths"]) == sorted(map(str, sample))
    assert [(r["method"], r["fraction"]) for r in faith["deletion"]] == [
        (m, f) for m in ("gradcam", "gradcampp", "scorecam") for f in (0.1, 0.2, 0.4)]
    for r in faith["deletion"]:  # the summary numbers are those of the per-image drops
        salient, random = np.array(r["drop_salient"]), np.array(r["drop_random"])
        assert len(salient) == len(random) == faith["n_images"]
        assert r["mean_drop_salient"] == pytest.approx(salient.mean())
        assert r["mean_drop_random"] == pytest.approx(random.mean())
        assert r["mean_difference"] == pytest.approx((salient - random).mean())
        assert r["share_salient_beats_random"] == pytest.approx((salient > random).mean())
        assert np.all(salient < 1) and np.all(random < 1)  # a drop from p >= 0.5 to a probability > 0
    assert set(faith["randomization_spearman"]) == {"gradcam", "gradcampp", "scorecam"}
    table = [line for line in (out / "faithfulness.md").read_text().splitlines() if "| blur |" in line]
    assert [line.split(" | ")[3] for line in table] == [f"{r['mean_drop_salient']:.3f}" for r in faith["deletion"]]


@pytest.mark.slow
def test_05_predict_table_and_own_folder(tiny_run, quick_pipeline, tiny_data, tmp_path, monkeypatch):
    run, config = tiny_run[0], quick_pipeline[2]
    rows = _rows(run / "predictions.csv")
    sample = notebook.sample_items(RunLayout(run).manifest, "test", config["n_predict"], 42)
    assert [r["path"] for r in rows] == [i.path for i in sample]
    evaluated = {r["path"]: float(r["p_dog"]) for r in _rows(next((run / "evaluation").glob("*/predictions.csv")))}
    for r in rows:
        p_cat, p_dog = float(r["p_cat"]), float(r["p_dog"])
        assert p_cat + p_dog == pytest.approx(1, abs=1e-5)
        assert p_dog == pytest.approx(evaluated[r["path"]], abs=1e-5)  # the same calibrated model as 03
        assert r["label"] == "neither" or (r["label"], float(r["confidence"])) == (
            "dog" if p_dog >= 0.5 else "cat", pytest.approx(max(p_cat, p_dog), abs=1e-5)), r

    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").symlink_to(next((tiny_data / "Cat").iterdir()))
    (folder / "empty.png").write_bytes(b"")
    # Standalone on a fresh run folder: no model there, so it falls back to the "shipped" model
    # ($CATDOG_MODEL stands in for models/catdog.keras).
    monkeypatch.setenv("CATDOG_MODEL", str(run / "model" / "model.keras"))
    other = tmp_path / "other-run"
    other.mkdir()
    _execute("05_predict", other, input_dir=str(folder), reject=False)
    labels = {Path(r["path"]).name: r["label"] for r in _rows(other / "predictions.csv")}
    assert labels["empty.png"] == "error" and labels["cat.jpg"] in ("cat", "dog")


@pytest.mark.slow
def test_upload_handler_predicts_and_explains(tiny_run, tiny_data, tmp_path):
    """What the 05 upload button does with a dropped-in photo (ipywidgets 8 value format)."""
    from catdog.bundle import Bundle

    bundle = Bundle.load(RunLayout(tiny_run[0]).model)
    photo = next((tiny_data / "Dog").iterdir())
    value = ({"name": "../../sneaky name.jpg", "type": "image/jpeg", "content": memoryview(photo.read_bytes())},
             {"name": "junk.jpg", "type": "image/jpeg", "content": memoryview(b"junk")})
    predictor = notebook.make_predictor(bundle, reject=True, progress=False)
    assert predictor.reject  # 02_train fitted the "neither" detector
    rows = notebook.explain_uploads(value, predictor, bundle, tmp_path / "uploads")
    assert [Path(r["path"]).name for r in rows] == ["sneaky name.jpg", "junk.jpg"]
    assert all(Path(r["path"]).parent == tmp_path / "uploads" for r in rows)
    assert rows[0]["label"] in ("cat", "dog", "neither") and Path(rows[0]["panel"]).is_file()
    assert rows[1]["label"] == "error" and rows[1]["panel"] == ""
    assert notebook.explain_uploads((), predictor, bundle, tmp_path / "uploads") == []
    box = notebook.upload_widget(predictor, bundle, tmp_path / "uploads")
    assert box.children[0].value == ()  # nothing uploaded: nothing happens


# ------------------------------------------------------------------------------ display helpers
def test_empty_tables_are_a_sentence(tmp_path):
    from IPython.display import Markdown

    skipped = tmp_path / "skipped.csv"
    skipped.write_text("path,reason\n")
    none = notebook.skipped_table(skipped)
    assert isinstance(none, Markdown) and none.data == notebook.NO_SKIPPED
    skipped.write_text("path,reason\n/d/Cat/1.jpg,empty file\n/d/Dog/2.jpg,truncated\n/d/Dog/3.jpg,empty file\n")
    table = notebook.skipped_table(skipped)
    assert table.to_dict("index") == {"empty file": {"files": 2, "example": "1.jpg"},
                                      "truncated": {"files": 1, "example": "2.jpg"}}
    assert notebook.results_table([], "No photo was too small to judge.").data == "No photo was too small to judge."


def test_display_tables_round_numbers_and_name_methods():
    rows = [{"path": "a.jpg", "confidence": 0.99997, "p_dog": 0.45513563654794875, "method": "gradcampp",
             "error": float("nan"), "wilcoxon_p": 1.234e-6, "fraction": 0.2}]
    shown = notebook.results_table(rows, "none").iloc[0].to_dict()
    assert shown == {"path": "a.jpg", "confidence": ">99.9%", "p_dog": 0.4551, "method": "Grad-CAM++", "error": "",
                     "wilcoxon_p": "1.2e-06", "fraction": "20%"}
    assert rows[0]["confidence"] == 0.99997  # the data itself is unchanged
    metrics = {"calibrated": {"n_images": 40, "accuracy": 0.98731, "accuracy_ci95": [0.9712, 0.99456],
                              "log_loss": 0.045513563654794875, "per_class": {"dog": {"recall": 0.5}}},
               "uncalibrated": {"n_images": 40, "accuracy": 0.98731, "log_loss": 0.0612345}}
    frame = notebook.metrics_frame(metrics)
    assert frame.loc["accuracy"].tolist() == ["98.73%", "98.73%"]
    assert frame.loc["accuracy_ci95", "calibrated"] == "97.12%–99.46%"
    assert frame.loc["log_loss"].tolist() == [0.0455, 0.0612]
    assert frame.loc["per_class.dog.recall"].tolist() == ["50.00%", ""]


def test_progress_bars_are_off_in_unattended_kernels(monkeypatch):
    import types

    from catdog.runs import show_progress, unattended_kernel

    class Kernel:
        def __init__(self, allow_stdin: bool):
            self.parent = {"content": {"allow_stdin": allow_stdin}}

        def get_parent(self, channel=None):
            return self.parent

    def in_kernel(allow_stdin: bool) -> None:
        fake = types.ModuleType("IPython")
        shell = types.SimpleNamespace(kernel=Kernel(allow_stdin))
        fake.get_ipython = lambda: shell
        monkeypatch.setitem(sys.modules, "IPython", fake)

    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert not unattended_kernel() and show_progress() and not show_progress(False)  # a plain process
    in_kernel(allow_stdin=True)  # JupyterLab / Notebook: a person watches the bar
    assert show_progress()
    in_kernel(allow_stdin=False)  # papermill / nbconvert
    assert unattended_kernel() and not show_progress()


@pytest.mark.slow
def test_01_data_shows_sentences_not_empty_tables_or_frozen_bars(tiny_run):
    book = tiny_run[1]
    outputs = [o for c in book.cells if c.cell_type == "code" for o in c.outputs]
    plain = "".join("".join(o.get("data", {}).get("text/plain", "")) + "".join(o.get("text", "")) for o in outputs)
    markdown = "".join("".join(o.get("data", {}).get("text/markdown", "")) for o in outputs)
    assert "Empty DataFrame" not in plain
    assert notebook.NO_SKIPPED in markdown  # the tiny data set has no unreadable files
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    assert "scanning" not in plain and "%|" not in plain  # no progress bar saved in the notebook
