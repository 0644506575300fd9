"""`catdog pipeline`: parameters, kernel, end-to-end quick run, new folders, failures, grids.

The slow tests share one tiny quick run (16 real photos per class, 64 px, one epoch per phase)
made through the real command line; the grid retrains only 02_train on that run's manifest.
"""

from __future__ import annotations

import ast
import csv
import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from catdog import paths, pipeline
from catdog.card import ModelCard
from catdog.runs import INTERACTIVE_RUN, RunLayout
from conftest import TINY_PIPELINE
from pngs import png_pixels, shows_photos

# Tinier than QUICK: what the shared smoke run (conftest) sets over it.
TINY = TINY_PIPELINE


# ------------------------------------------------------------------------------ parameters
def test_parse_cli_params_yaml_then_pairs(tmp_path):
    config = tmp_path / "params.yaml"
    config.write_text("image_size: 160\nbackbone: mobilenet_v2\nhead_epochs: 3\nfinetune_lr: 3e-5\n")
    params = pipeline.parse_cli_params(
        [("image_size", "128"), ("head_lr", "1e-3"), ("augment", "false"),
         ("max_per_class", "null"), ("weights", "None"), ("manifest", ""), ("data_dir", "~/pets"),
         ("augmentation", "{rotation: 0.1}"), ("seed", "7")], config)
    assert params == {"image_size": 128, "backbone": "mobilenet_v2", "head_epochs": 3, "head_lr": 0.001,
                      "finetune_lr": 3e-5, "augment": False, "max_per_class": None, "weights": None, "manifest": "",
                      "data_dir": "~/pets", "augmentation": {"rotation": 0.1}, "seed": 7}
    assert isinstance(params["image_size"], int) and isinstance(params["head_lr"], float)
    assert pipeline.parse_cli_params(None, None) == {}
    assert pipeline.parse_cli_params([("backbone", "inception_v3")], None) == {"backbone": "inception_v3"}


def test_parse_cli_params_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        pipeline.parse_cli_params([], tmp_path / "missing.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping"):
        pipeline.parse_cli_params([], bad)


def test_unknown_parameter_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="unknown parameter.*imagesize"):
        pipeline.run_pipeline({"imagesize": 128}, tmp_path / "reports")
    with pytest.raises(ValueError, match="run_dir is set by the pipeline"):
        pipeline.run_pipeline({"run_dir": "x"}, tmp_path / "reports")
    with pytest.raises(ValueError, match="unknown notebook"):
        pipeline.run_pipeline({}, tmp_path / "reports", notebooks=["06_nothing"])
    assert not (tmp_path / "reports").exists()


def test_notebook_paths_and_selection():
    names = [p.stem for p in pipeline.notebook_paths()]
    assert names == ["01_data", "02_train", "03_evaluate", "04_gradcam", "05_predict"]
    chosen = pipeline._select_notebooks(["04", "02_train.ipynb", "05_predict"])
    assert [p.stem for p in chosen] == ["04_gradcam", "02_train", "05_predict"]


def test_grid_sets_product_and_list():
    sets = pipeline._grid_sets({"image_size": [128, 160, 224], "finetune_epochs": [0, 2], "seed": 1})
    assert len(sets) == 6 and sets[0] == {"image_size": 128, "finetune_epochs": 0, "seed": 1}
    assert pipeline._varying(sets) == ["image_size", "finetune_epochs"]
    listed = pipeline._grid_sets([{"backbone": "simple_cnn", "weights": None}, {"backbone": "mobilenet_v2"}])
    assert listed == [{"backbone": "simple_cnn", "weights": None}, {"backbone": "mobilenet_v2"}]
    with pytest.raises(ValueError):
        pipeline._grid_sets("image_size")


def test_markdown_table_and_sorting():
    rows = [{"run": "a", "test_accuracy": 0.9, "test_log_loss": 0.3}, {"run": "b", "test_accuracy": None},
            {"run": "c", "test_accuracy": 0.95, "test_log_loss": 0.2}]
    assert [r["run"] for r in pipeline._sort_rows(rows, "test_accuracy")] == ["c", "a", "b"]
    assert [r["run"] for r in pipeline._sort_rows(rows, "test_log_loss")] == ["c", "a", "b"]
    table = pipeline.markdown_table(rows, ["run", "test_accuracy"]).splitlines()
    assert table[:2] == ["| run | test_accuracy |", "|---|---:|"]
    assert table[2] == "| a | 0.9000 |" and table[3] == "| b | – |"


def test_the_kernel_lives_in_this_environment_and_another_checkouts_kernel_does_not_shadow_it(tmp_path, monkeypatch):
    from jupyter_client.kernelspec import KernelSpecManager

    monkeypatch.setattr(pipeline, "KERNEL_PREFIX", tmp_path / "env")
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "user"))  # the user's own kernels, searched first
    monkeypatch.delenv("JUPYTER_PATH", raising=False)
    other = tmp_path / "user" / "kernels" / pipeline.KERNEL_NAME  # what another checkout installed
    other.mkdir(parents=True)
    (other / "kernel.json").write_text(json.dumps({"argv": ["/other/checkout/.venv/bin/python", "-m",
                                                            "ipykernel_launcher", "-f", "{connection_file}"],
                                                   "display_name": "other", "language": "python"}))
    folder = pipeline.ensure_kernel()
    assert folder == tmp_path / "env" / "share" / "jupyter" / "kernels" / pipeline.KERNEL_NAME
    assert json.loads((other / "kernel.json").read_text())["display_name"] == "other"  # left alone
    with pipeline.this_environments_kernels():
        spec = KernelSpecManager().get_kernel_spec(pipeline.KERNEL_NAME)
    assert Path(spec.argv[0]) == Path(sys.executable) and spec.env["TF_CPP_MIN_LOG_LEVEL"] == "3"
    assert pipeline.ensure_kernel() == folder  # already right: left alone
    assert "JUPYTER_PATH" not in os.environ


# ------------------------------------------------------------------------------ run folders
def test_run_layout_names_every_path_of_a_run(tmp_path):
    layout = RunLayout(str(tmp_path))  # a str is accepted and kept as a Path
    assert layout.root == tmp_path
    assert (layout.manifest, layout.skipped, layout.dataset) == (
        tmp_path / "data" / "manifest.csv", tmp_path / "data" / "skipped.csv", tmp_path / "data" / "dataset.json")
    assert (layout.model_dir, layout.model) == (tmp_path / "model", tmp_path / "model" / "model.keras")
    assert (layout.evaluation, layout.gradcam, layout.uploads) == (
        tmp_path / "evaluation", tmp_path / "gradcam", tmp_path / "uploads")
    assert (layout.predictions, layout.params, layout.summary) == (
        tmp_path / "predictions.csv", tmp_path / "params.yaml", tmp_path / "summary.json")
    assert not any(tmp_path.iterdir())  # naming paths creates nothing
    assert INTERACTIVE_RUN == paths.REPO_ROOT / "runs" / "interactive"
    with pytest.raises(AttributeError):
        layout.root = tmp_path / "other"  # frozen


def _card(model_file: str, **fields) -> ModelCard:
    return ModelCard(model_file=model_file, backbone="mobilenet_v2", image_size=64, temperature=1.5,
                     total_seconds=12.5, split_sizes={"train": 20, "validation": 6, "test": 6},
                     phases={"head": {"epochs": 1}}, **fields)


def test_summarize_run_reads_the_model_card_then_the_newest_evaluation(tmp_path):
    layout = RunLayout(tmp_path / "run")
    layout.data.mkdir(parents=True)
    layout.dataset.write_text(json.dumps({"n_images": 32, "n_skipped": 1}))
    _card("model.keras", metrics={"validation": {"accuracy": 0.75, "n_images": 6},
                                  "test": {"accuracy": 0.5, "log_loss": 0.7}}).save(layout.model)
    summary = pipeline.summarize_run(layout.root)
    assert summary["metrics_source"] == "model_card" and summary["model_path"] == str(layout.model)
    assert (summary["train_seconds"], summary["temperature"], summary["n_images"], summary["n_skipped"]) == (
        12.5, 1.5, 32, 1)
    assert summary["metrics"] == {"val_accuracy": 0.75, "val_n_images": 6, "test_accuracy": 0.5,
                                  "test_log_loss": 0.7}

    report = layout.evaluation / "20250101-000000"
    report.mkdir(parents=True)
    report.joinpath("metrics.json").write_text(json.dumps({"calibrated": {"accuracy": 1.0},
                                                           "uncalibrated": {"accuracy": 0.9}, "temperature": 1.5}))
    summary = pipeline.summarize_run(layout.root)
    assert summary["metrics_source"] == "evaluation" and summary["evaluation_dir"] == str(report)
    assert summary["metrics"]["test_accuracy"] == 1.0 and summary["metrics"]["test_accuracy_uncalibrated"] == 0.9


def test_summarize_run_without_training_uses_the_evaluated_models_card(tmp_path):
    elsewhere = tmp_path / "models" / "other.keras"
    _card("other.keras").save(elsewhere)
    layout = RunLayout(tmp_path / "run")
    (layout.evaluation / "r").mkdir(parents=True)
    (layout.evaluation / "r" / "metrics.json").write_text(json.dumps({"model": str(elsewhere), "calibrated": {}}))
    summary = pipeline.summarize_run(layout.root)
    assert summary["model_path"] == str(elsewhere) and summary["train_seconds"] == 12.5
    assert pipeline.summarize_run(tmp_path / "empty") == {"metrics": {}}


# ------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def quick_run(quick_pipeline):
    """The shared smoke run (conftest): (reports folder, run folder)."""
    return quick_pipeline[0], quick_pipeline[1]


def _errors(notebook: Path) -> list:
    book = nbformat.read(notebook, as_version=4)
    return [o for c in book.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]


def _injected(notebook: Path) -> dict:
    """The values papermill injected into an executed notebook (its ``injected-parameters`` cell)."""
    book = nbformat.read(notebook, as_version=4)
    (cell,) = [c for c in book.cells if "injected-parameters" in c.get("metadata", {}).get("tags", [])]
    return {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(cell.source).body
            if isinstance(node, ast.Assign)}


@pytest.mark.slow
def test_quick_pipeline_runs_all_five_notebooks(quick_pipeline):
    _, run, config = quick_pipeline
    params = yaml.safe_load((run / "params.yaml").read_text())
    assert params == {**pipeline.QUICK, **config}  # --quick, then the config file, then -p
    for notebook in pipeline.notebook_paths():  # each got exactly the parameters it declares, and its run folder
        executed = run / notebook.name
        assert _errors(executed) == [], notebook.name
        declared = pipeline.declared_parameters(notebook)
        assert _injected(executed) == {"run_dir": str(run), **{k: v for k, v in params.items() if k in declared}}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["quick"] is True
    assert [n["notebook"] for n in summary["notebooks"]] == [p.stem for p in pipeline.notebook_paths()]
    assert [n["status"] for n in summary["notebooks"]] == ["ok"] * 5
    assert summary["params"] == params and summary["metrics_source"] == "evaluation"
    # the summary's numbers are the evaluation's (test) and the model card's (validation, times)
    (report,) = (run / "evaluation").glob("*/metrics.json")
    evaluated, card = json.loads(report.read_text()), ModelCard.read(run / "model" / "model.keras")
    assert summary["evaluation_dir"] == str(report.parent)
    metrics = summary["metrics"]
    for key in ("accuracy", "roc_auc", "log_loss", "ece", "n_images"):
        assert metrics[f"test_{key}"] == evaluated["calibrated"][key], key
        assert metrics[f"test_{key}_uncalibrated"] == evaluated["uncalibrated"][key], key
        assert metrics[f"val_{key}"] == card.metrics["validation"][key], key
    with (run / "data" / "manifest.csv").open() as f:
        splits = [r["split"] for r in csv.DictReader(f)]
    assert metrics["test_n_images"] == splits.count("test") and metrics["val_n_images"] == splits.count("validation")
    assert metrics["test_log_loss"] > 0 and summary["train_seconds"] == card.total_seconds > 0
    assert summary["temperature"] == card.temperature and (summary["n_images"], summary["n_skipped"]) == (32, 0)
    png_pixels(run / "model" / "training_curves.png")
    assert shows_photos(png_pixels(run / "gradcam" / "test_panels.png"))
    with (run / "predictions.csv").open() as f:
        assert len(list(csv.DictReader(f))) == config["n_predict"]


@pytest.mark.slow
def test_failing_notebook_stops_chain_in_a_new_folder(quick_run, tiny_data, capsys):
    reports, first = quick_run
    before = (first / "summary.json").read_text()
    with pytest.raises(pipeline.PipelineError) as failure:
        pipeline.run_pipeline({**TINY, "data_dir": str(tiny_data), "backbone": "nope"}, reports, name="smoke",
                              quick=True, echo=False)
    run = failure.value.run_dir
    assert run == reports / "smoke-2" and failure.value.notebook == "02_train"
    assert (first / "summary.json").read_text() == before  # the earlier run is untouched
    assert (run / "01_data.ipynb").is_file() and _errors(run / "01_data.ipynb") == []
    errors = _errors(run / "02_train.ipynb")  # the partially executed notebook is kept, error included
    assert errors and "unknown backbone 'nope'" in errors[0]["evalue"]
    assert not (run / "03_evaluate.ipynb").exists()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["failed_notebook"] == "02_train"
    assert [n["status"] for n in summary["notebooks"]] == ["ok", "failed"]
    assert "unknown backbone 'nope'" in summary["error"]
    shown = capsys.readouterr().err
    assert "02_train.ipynb failed" in shown and "unknown backbone 'nope'" in shown


@pytest.mark.slow
def test_grid_writes_sorted_comparison(quick_run, tmp_path):
    _, run = quick_run
    grid = tmp_path / "grid.yaml"
    grid.write_text("head_lr: [1e-3, 1e-2]  # YAML 1.1 alone would read these as strings\n")
    # A small CNN from scratch (its one phase trains at head_lr): the grid's bookkeeping, not transfer learning
    base = {**TINY, "manifest": str(run / "data" / "manifest.csv"), "backbone": "simple_cnn", "weights": "none",
            "image_size": 32, "head_epochs": 1, "finetune_epochs": 0, "openset_images": 0}
    table = pipeline.run_grid(grid, base, tmp_path / "grids", quick=True, name="lr", notebooks=["02_train"],
                              sort_by="log_loss")
    folder = tmp_path / "grids" / "lr"
    with (folder / "comparison.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["run", "head_lr", "status", *pipeline.METRIC_COLUMNS]
    assert len(rows) == 2 and {float(r["head_lr"]) for r in rows} == {0.001, 0.01}
    for r in rows:  # each row is its run's model card, trained at that row's rate
        assert r["status"] == "ok"
        summary = json.loads((folder / r["run"] / "summary.json").read_text())
        card = ModelCard.read(folder / r["run"] / "model" / "model.keras")
        assert summary["metrics_source"] == "model_card" and card.config["head_lr"] == float(r["head_lr"])
        for key in ("accuracy", "log_loss", "roc_auc", "ece"):
            assert float(r[f"test_{key}"]) == pytest.approx(card.metrics["test"][key], rel=1e-12), key
        assert float(r["train_seconds"]) == card.total_seconds
    losses = [float(r["test_log_loss"]) for r in rows]
    assert losses == sorted(losses)  # "log_loss" means test_log_loss; lower is better, so first
    assert (folder / "comparison.md").read_text().strip() == table.strip()
    assert [line.split(" | ")[0] for line in table.splitlines() if line.startswith("| 0")] == [
        f"| {r['run']}" for r in rows]  # one line per run, in the same order
    with pytest.raises(ValueError, match="cannot sort by"):
        pipeline.run_grid(grid, base, tmp_path / "grids", quick=True, sort_by="nonsense")


def test_notebooks_run_on_an_encrypted_kernel_connection_without_its_warning(tmp_path, capfd):
    notebook = tmp_path / "tiny.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("print('answer', x + 1)")]
    nb.metadata["kernelspec"] = {"name": pipeline.KERNEL_NAME, "display_name": "catdog", "language": "python"}
    nbformat.write(nb, notebook)
    pipeline.ensure_kernel()
    pipeline._execute(notebook, tmp_path / "out.ipynb", {"x": 41}, echo=False)
    executed = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert executed.cells[-1].outputs[0]["text"] == "answer 42\n"
    # the kernel inherits our stderr: its start-up warning would land here
    assert "without encryption" not in capfd.readouterr().err
