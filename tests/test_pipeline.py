"""`catdog pipeline`: parameters, kernel, end-to-end quick run, new folders, failures, grids.

The slow tests share one tiny quick run (16 real photos per class, 64 px, one epoch per phase)
made through the real command line; the grid retrains only 02_train on that run's manifest.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from catdog import cli, paths, pipeline
from catdog.card import ModelCard
from catdog.runs import INTERACTIVE_RUN, RunLayout

# Tinier than QUICK: what the smoke run overrides (heatmap extras off; 03-05 still run fully).
TINY = {"max_per_class": 16, "image_size": 64, "finetune_layers": 5, "batch_size": 8, "n_samples": 4,
        "openset_images": 20, "n_gallery": 4, "n_images": 2, "compare_methods": False, "faithfulness_images": 0,
        "n_predict": 2}


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
def quick_run(tiny_data, tmp_path_factory):
    """`catdog pipeline --quick` (with a config file and -p overrides) into a fresh reports folder."""
    reports = tmp_path_factory.mktemp("reports")
    config = tmp_path_factory.mktemp("config") / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "data_dir": str(tiny_data)}))
    argv = ["pipeline", "--quick", "--config", str(config), "--reports", str(reports), "--name", "smoke",
            "-p", "head_epochs", "1", "-p", "finetune_epochs", "1"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CATDOG_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        assert cli.main(argv) == 0
    return reports, reports / "smoke"


def _errors(notebook: Path) -> list:
    book = nbformat.read(notebook, as_version=4)
    return [o for c in book.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]


@pytest.mark.slow
def test_quick_pipeline_runs_all_five_notebooks(quick_run, tiny_data):
    _, run = quick_run
    for name in ("01_data", "02_train", "03_evaluate", "04_gradcam", "05_predict"):
        assert (run / f"{name}.ipynb").is_file(), name
        assert _errors(run / f"{name}.ipynb") == []
    params = yaml.safe_load((run / "params.yaml").read_text())
    assert params == {**pipeline.QUICK, **TINY, "data_dir": str(tiny_data), "head_epochs": 1, "finetune_epochs": 1}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["quick"] is True
    assert [n["status"] for n in summary["notebooks"]] == ["ok"] * 5
    assert summary["params"] == params and summary["metrics_source"] == "evaluation"
    with (run / "data" / "manifest.csv").open() as f:
        n_test = sum(r["split"] == "test" for r in csv.DictReader(f))
    assert summary["metrics"]["test_n_images"] == n_test
    for key in ("test_accuracy", "test_roc_auc", "val_accuracy"):
        assert 0.0 <= summary["metrics"][key] <= 1.0
    assert summary["metrics"]["test_log_loss"] > 0 and summary["train_seconds"] > 0
    for artefact in ("data/manifest.csv", "model/model.keras", "model/training_curves.png", "gradcam/test_panels.png",
                     "predictions.csv"):
        assert (run / artefact).is_file(), artefact


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
    base = {**TINY, "manifest": str(run / "data" / "manifest.csv"), "head_epochs": 1, "finetune_epochs": 0}
    table = pipeline.run_grid(grid, base, tmp_path / "grids", quick=True, name="lr", notebooks=["02_train"])
    folder = tmp_path / "grids" / "lr"
    with (folder / "comparison.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and {float(r["head_lr"]) for r in rows} == {0.001, 0.01}
    assert all(r["status"] == "ok" and 0 <= float(r["test_accuracy"]) <= 1 for r in rows)
    assert float(rows[0]["test_accuracy"]) >= float(rows[1]["test_accuracy"])
    assert list(rows[0]) == ["run", "head_lr", "status", *pipeline.METRIC_COLUMNS]
    assert (folder / "comparison.md").read_text().strip() == table.strip()
    assert sum(line.startswith("| 0") for line in table.splitlines()) == 2
    for r in rows:
        summary = json.loads((folder / r["run"] / "summary.json").read_text())
        assert summary["metrics_source"] == "model_card"
    with pytest.raises(ValueError, match="cannot sort by"):
        pipeline.run_grid(grid, base, tmp_path / "grids", quick=True, sort_by="nonsense")
