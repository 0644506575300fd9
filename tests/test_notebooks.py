"""The notebooks: committed clean (no outputs, a `parameters` cell, kernel "catdog"), and each one
executes through papermill on a few dozen real photos.

01 + 02 run once (module fixture: 64 px, one epoch per phase) and 03-05 reuse that run.
"""

from __future__ import annotations

import ast
import csv
import json
import sys
from pathlib import Path

import nbformat
import papermill
import pytest

from catdog import notebook, pipeline
from catdog.runs import RunLayout

NOTEBOOKS = pipeline.notebook_paths()
EXPECTED = ["01_data", "02_train", "03_evaluate", "04_gradcam", "05_predict"]
TINY_TRAINING = {"image_size": 64, "head_epochs": 1, "finetune_epochs": 1, "finetune_layers": 5, "batch_size": 8,
                 "openset_images": 20}


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
def tiny_run(tiny_data, tmp_path_factory) -> tuple[Path, nbformat.NotebookNode, nbformat.NotebookNode]:
    """01_data + 02_train executed once on the tiny data set; later notebooks reuse the run."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CATDOG_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        mp.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
        pipeline.ensure_kernel()
        run = tmp_path_factory.mktemp("run")
        data_book = _execute("01_data", run, data_dir=str(tiny_data), n_samples=4)
        train_book = _execute("02_train", run, **TINY_TRAINING)
    return run, data_book, train_book


@pytest.mark.slow
def test_01_data_writes_manifest_report_and_figures(tiny_run):
    run, book, _ = tiny_run
    data = run / "data"
    for name in ("manifest.csv", "skipped.csv", "dataset.json", "class_balance.png", "samples.png", "augmentation.png"):
        assert (data / name).is_file(), name
    summary = json.loads((data / "dataset.json").read_text())
    assert summary["n_images"] == 32 and summary["n_skipped"] == 0
    with (data / "manifest.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 32 and {r["split"] for r in rows} == {"train", "validation", "test"}
    assert _images(book) >= 3  # balance, samples, augmentation shown inline


@pytest.mark.slow
def test_02_train_writes_model_card_curves_and_detector(tiny_run):
    run, _, book = tiny_run
    model = run / "model"
    for name in ("model.keras", "model.card.json", "history.csv", "training_curves.png", "model.openset.npz"):
        assert (model / name).is_file(), name
    card = json.loads((model / "model.card.json").read_text())
    assert card["image_size"] == 64 and card["backbone"] == "mobilenet_v2"
    assert set(card["phases"]) == {"head", "finetune"}
    text = "".join(o.get("text", "") for c in book.cells if c.cell_type == "code" for o in c.outputs)
    assert "val_loss" in text  # Keras' per-epoch lines stay visible in the notebook


@pytest.mark.slow
def test_03_evaluate_reports_sane_metrics(tiny_run):
    run = tiny_run[0]
    book = _execute("03_evaluate", run, heatmaps=True, n_gallery=4)
    reports = [p.parent for p in (run / "evaluation").glob("*/metrics.json")]
    assert len(reports) == 1
    metrics = json.loads((reports[0] / "metrics.json").read_text())
    with (run / "data" / "manifest.csv").open() as f:
        n_test = sum(r["split"] == "test" for r in csv.DictReader(f))
    for kind in ("calibrated", "uncalibrated"):
        assert 0.0 <= metrics[kind]["accuracy"] <= 1.0
        assert metrics[kind]["n_images"] == n_test
        low, high = metrics[kind]["accuracy_ci95"]
        assert low <= metrics[kind]["accuracy"] <= high
    table = {row["metric"]: row for row in notebook.metrics_table(metrics)}
    assert table["accuracy_ci95"]["calibrated"] == metrics["calibrated"]["accuracy_ci95"]
    for name in ("predictions.csv", "confusion_matrix.png", "roc.png", "pr.png", "reliability.png", "misclassified.png"):
        assert (reports[0] / name).is_file(), name
    assert _images(book) == 5  # confusion matrix, ROC, PR, reliability, gallery


@pytest.mark.slow
def test_04_gradcam_panels_methods_and_faithfulness(tiny_run, tiny_data, tmp_path):
    run = tiny_run[0]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "my_dog.jpg").symlink_to(next((tiny_data / "Dog").iterdir()))
    (mine / "broken.jpg").write_bytes(b"not a photo")
    book = _execute("04_gradcam", run, n_images=2, user_images_dir=str(mine), compare_methods=True,
                    faithfulness_images=2, colormap="viridis", alpha=0.5)
    out = run / "gradcam"
    assert len(list((out / "test").glob("*_panel.png"))) == 2
    assert len(list((out / "test").glob("*_gray.png"))) == 2
    assert [p.name for p in (out / "user").glob("*_overlay.png")] == ["my_dog_overlay.png"]
    for name in ("test_panels.png", "user_panels.png", "both_classes.png", "methods.png", "faithfulness.json"):
        assert (out / name).is_file(), name
    faith = json.loads((out / "faithfulness.json").read_text())
    assert {r["method"] for r in faith["deletion"]} == {"gradcam", "gradcampp", "scorecam"}
    assert _images(book) == 4  # test panels, your photos, both classes, methods


@pytest.mark.slow
def test_05_predict_table_and_own_folder(tiny_run, tiny_data, tmp_path, monkeypatch):
    run = tiny_run[0]
    _execute("05_predict", run, n_predict=3)
    with (run / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and {r["label"] for r in rows} <= {"cat", "dog", "neither"}
    assert all(0.5 <= float(r["confidence"]) <= 1.0 for r in rows if r["label"] != "neither")

    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").symlink_to(next((tiny_data / "Cat").iterdir()))
    (folder / "empty.png").write_bytes(b"")
    # Standalone on a fresh run folder: no model there, so it falls back to the "shipped" model
    # ($CATDOG_MODEL stands in for models/catdog_mobilenetv2.keras).
    monkeypatch.setenv("CATDOG_MODEL", str(run / "model" / "model.keras"))
    other = tmp_path / "other-run"
    other.mkdir()
    _execute("05_predict", other, input_dir=str(folder), reject=False)
    with (other / "predictions.csv").open() as f:
        labels = {Path(r["path"]).name: r["label"] for r in csv.DictReader(f)}
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
