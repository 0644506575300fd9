"""Running the notebooks as a pipeline (papermill), parameter grids, and the notebooks' helpers.

``catdog pipeline`` runs ``notebooks/01_data`` … ``05_predict`` top to bottom with
papermill into a NEW run folder ``runs/<timestamp-or-name>/`` (ignored by git):

- ``params.yaml``: the effective parameters (pass it back with ``--config`` to repeat a run);
- ``01_data.ipynb`` … ``05_predict.ipynb``: the executed notebooks, outputs included;
- ``data/``, ``model/``, ``evaluation/``, ``gradcam/``, ``predictions.csv``: what they wrote;
- ``summary.json``: status, key test metrics, training time and parameters (grids compare these).

:class:`catdog.runs.RunLayout` names every one of these paths.

Each notebook receives only the parameters its ``parameters`` cell declares (plus
``run_dir``). A failing notebook stops the chain: the partially executed notebook is kept,
the failing cell's error is printed and :class:`PipelineError` is raised.

The small helpers the notebooks themselves call live in :mod:`catdog.notebook`.
"""

from __future__ import annotations

import ast
import contextlib
import csv
import functools
import itertools
import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from catdog import paths
from catdog.card import ModelCard
from catdog.conventions import VERSION
from catdog.runs import DEFAULT_REPORTS, RunLayout, say

KERNEL_NAME = "catdog"
KERNEL_DISPLAY_NAME = "Python (catdog)"
KERNEL_PREFIX = Path(sys.prefix)  # the kernelspec is installed inside this environment
NOTEBOOK_DIR = paths.REPO_ROOT / "notebooks"

# Parameters holding file or folder paths: relative values given to the pipeline are made
# absolute against the caller's working directory (the kernel may run elsewhere).
PATH_PARAMS = frozenset({"data_dir", "manifest", "model_path", "user_images_dir", "input_dir", "init_model"})

# `--quick`: a few hundred images, small inputs, one epoch per phase: a few minutes on 2 CPU cores.
QUICK: dict[str, Any] = {
    "max_per_class": 100,
    "image_size": 96,
    "head_epochs": 1,
    "finetune_epochs": 1,
    "finetune_layers": 10,
    "warmup_epochs": 0,
    "members": [],  # one model, not the shipped ensemble
    "batch_size": 16,
    "n_samples": 8,
    "n_images": 4,
    "faithfulness_images": 8,
    "n_predict": 4,
}

# Summary metrics a grid's comparison table shows, and every key a grid can be sorted by.
METRIC_COLUMNS = ("test_accuracy", "test_log_loss", "test_roc_auc", "test_ece", "train_seconds")
SORT_KEYS = tuple(f"{split}_{metric}{suffix}" for split in ("test", "val")
                  for metric in ("accuracy", "log_loss", "roc_auc", "ece", "brier", "average_precision")
                  for suffix in ("", "_uncalibrated")) + ("train_seconds", "wall_seconds")


def lower_is_better(key: str) -> bool:
    """True for losses, calibration errors and times (sorted ascending); accuracy-like keys sort descending."""
    return any(word in key for word in ("log_loss", "ece", "brier", "seconds"))


class PipelineError(RuntimeError):
    """A notebook of the pipeline failed; ``run_dir`` keeps everything that finished."""

    def __init__(self, message: str, run_dir: Path, notebook: str):
        super().__init__(message)
        self.run_dir = run_dir
        self.notebook = notebook


# =============================================================================== parameters
_SCIENTIFIC = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _numbers(value: Any) -> Any:
    """Floats YAML 1.1 leaves as strings (``1e-3``, ``3e5``: it wants ``1.0e-3``), at any depth."""
    if isinstance(value, str) and _SCIENTIFIC.match(value.strip()):
        return float(value)
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    return value


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that also reads ``1e-3`` as a number."""
    return _numbers(yaml.safe_load(text))


def _parse_value(text: str) -> Any:
    """A ``-p`` value as a YAML scalar: ``3`` -> 3, ``1e-3`` -> 0.001, ``true`` -> True, ``null``/``none`` -> None."""
    if text.strip() == "":
        return ""
    if text.strip().lower() in ("none", "null", "~"):
        return None
    try:
        return load_yaml(text)
    except yaml.YAMLError:
        return text


def parse_cli_params(pairs: Sequence[Sequence[str]] | None, config_yaml: str | Path | None = None) -> dict:
    """Parameters from a YAML file (if given), then ``-p key value`` pairs on top.

    Values of pairs are parsed as YAML scalars (ints, floats incl. ``1e-3``, booleans,
    ``null``/``none`` -> None, ``""`` -> empty string); anything else stays a string.
    """
    params: dict[str, Any] = {}
    if config_yaml is not None:
        config_yaml = Path(config_yaml)
        if not config_yaml.is_file():
            raise FileNotFoundError(f"parameter file not found: {config_yaml}")
        loaded = load_yaml(config_yaml.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{config_yaml}: expected a mapping of parameter: value, got {type(loaded).__name__}")
        params.update(loaded)
    for pair in pairs or []:
        if len(pair) != 2:
            raise ValueError(f"expected -p KEY VALUE, got {list(pair)}")
        key, value = pair
        params[str(key)] = _parse_value(str(value))
    return params


def notebook_paths(folder: str | Path | None = None) -> list[Path]:
    """The pipeline's notebooks (``NN_name.ipynb``) in the repo's ``notebooks/`` folder, in order."""
    folder = Path(folder) if folder else NOTEBOOK_DIR
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb") if p.is_file())


def _select_notebooks(selection: Iterable[str] | None) -> list[Path]:
    """Notebooks by name (``04_gradcam``, ``04_gradcam.ipynb``, ``04``) or path; all when ``None``."""
    available = notebook_paths()
    if not available:
        raise FileNotFoundError(f"no notebooks found in {NOTEBOOK_DIR}")
    if not selection:
        return available
    chosen: list[Path] = []
    for entry in selection:
        path = Path(entry)
        if path.suffix == ".ipynb" and path.is_file() and path.parent.resolve() != NOTEBOOK_DIR.resolve():
            chosen.append(path.resolve())
            continue
        name = path.name.removesuffix(".ipynb")
        match = [p for p in available if p.stem == name or p.stem.split("_", 1)[0] == name]
        if len(match) != 1:
            raise ValueError(f"unknown notebook {entry!r}; choose from {', '.join(p.stem for p in available)}")
        chosen.append(match[0])
    return sorted(set(chosen), key=chosen.index)


def declared_parameters(notebook: str | Path) -> dict[str, Any]:
    """``{name: default source text}`` of a notebook's ``parameters`` cell, as papermill reads it."""
    path = Path(notebook).resolve()
    return dict(_declared(str(path), path.stat().st_mtime_ns))


@functools.lru_cache(maxsize=64)
def _declared(path: str, mtime_ns: int) -> dict[str, Any]:
    import papermill

    with _quiet_papermill():  # inspect_notebook logs "Input Notebook: …" at INFO every call
        info = papermill.inspect_notebook(path)
    if not info:
        raise ValueError(f"{path}: no cell tagged 'parameters'")
    return {name: spec.get("default") for name, spec in info.items()}


@contextlib.contextmanager
def _quiet_papermill():
    """papermill's logger at WARNING for the duration (its warnings and errors still show)."""
    log = logging.getLogger("papermill")
    level = log.level
    log.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        log.setLevel(level)


def _check_params(params: Mapping[str, Any], notebooks: Sequence[Path]) -> None:
    """Reject parameters no notebook declares (typos would otherwise be ignored silently)."""
    if "run_dir" in params:
        raise ValueError("run_dir is set by the pipeline; choose the folder with reports_dir/--reports and name/--name")
    known = set().union(*(declared_parameters(nb) for nb in notebooks))
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)}; the notebooks take: {', '.join(sorted(known))}")
    check_param_values(params, notebooks)


# Simple ranges checked before a run starts: (low, high, low inclusive, high inclusive); None = open.
_RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "image_size": (32, None, True, True),
    "batch_size": (1, None, True, True),
    "max_per_class": (1, None, True, True),
    "val_fraction": (0, 1, False, False),
    "test_fraction": (0, 1, False, False),
    "dropout": (0, 1, True, False),
    "alpha": (0, 1, True, True),
    "head_lr": (0, None, False, True),
    "finetune_lr": (0, None, False, True),
}
_NON_NEGATIVE = ("_epochs", "finetune_layers", "patience", "openset_images", "n_samples", "n_images", "n_gallery",
                 "n_predict", "faithfulness_images", "seed")


def _default_value(source: Any) -> Any:
    """A parameters-cell default (source text such as ``224``, ``"jet"``, ``1e-3``) as a value; text if not a literal."""
    try:
        return ast.literal_eval(str(source))
    except (ValueError, SyntaxError):
        return source


def _range_of(name: str) -> tuple[float | None, float | None, bool, bool] | None:
    if name in _RANGES:
        return _RANGES[name]
    if name.endswith(_NON_NEGATIVE) or name in _NON_NEGATIVE:
        return (0, None, True, True)
    return None


def _check_value(name: str, value: Any, default: Any) -> str | None:
    """Why ``value`` does not fit parameter ``name`` (type of its default, simple range), or None."""
    if value is None or default is None:  # None means "not set" / "all": every notebook accepts it
        return None if value is None or _range_of(name) is None else _check_range(name, value)
    kind = type(default)
    if kind is bool:
        if not isinstance(value, bool):
            return f"expected true or false, got {value!r}"
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"expected a whole number, got {value!r}"
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"expected a number, got {value!r}"
    elif kind is str:
        if not isinstance(value, (str, Path)):
            return f"expected text, got {value!r}"
    elif kind is dict:
        if not isinstance(value, dict):
            return f"expected a mapping such as {{shear: 0}}, got {value!r}"
    return _check_range(name, value)


def _check_range(name: str, value: Any) -> str | None:
    bounds = _range_of(name)
    if bounds is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None if bounds is None or isinstance(value, (int, float)) else f"expected a number, got {value!r}"
    low, high, low_in, high_in = bounds
    if (low is not None and (value < low or (value == low and not low_in))) or \
            (high is not None and (value > high or (value == high and not high_in))):
        left = "[" if low_in else "("
        right = "]" if high_in else ")"
        return f"must be in {left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}, got {value!r}"
    return None


def check_param_values(params: Mapping[str, Any], notebooks: Sequence[Path]) -> None:
    """Check each value against the type of its default in the notebooks' parameters cells and simple ranges.

    Raises ValueError naming every bad parameter, before any run folder exists.
    """
    defaults: dict[str, Any] = {}
    for nb in notebooks:
        for name, source in declared_parameters(nb).items():
            defaults.setdefault(name, _default_value(source))
    problems = [f"{name}: {why}" for name, value in params.items() if name in defaults
                and (why := _check_value(name, value, defaults[name]))]
    if problems:
        raise ValueError("bad parameter value(s): " + "; ".join(problems))


def _absolute_paths(params: Mapping[str, Any]) -> dict[str, Any]:
    """Path parameters made absolute against the current working directory ("" / None stay)."""
    out = dict(params)
    for key in PATH_PARAMS & out.keys():
        if isinstance(out[key], (str, Path)) and str(out[key]):
            out[key] = str(Path(out[key]).expanduser().resolve())
    return out


def _plain(value: Any) -> Any:
    """Parameter values papermill and YAML both handle (paths -> str, tuples -> lists)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


# =============================================================================== kernel
@contextlib.contextmanager
def this_environments_kernels() -> Iterator[None]:
    """Within this block Jupyter looks for kernels in this environment first (``<sys.prefix>/share/jupyter``).

    Jupyter's search order puts the user's own kernels (``~/.local/share/jupyter``) before an
    environment's, so another checkout's ``catdog`` kernel there would run that checkout's code;
    ``JUPYTER_PATH`` comes before both.
    """
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(KERNEL_PREFIX / "share" / "jupyter"), *([old] if old else [])])
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = old


def ensure_kernel(name: str = KERNEL_NAME) -> Path:
    """Make sure the Jupyter kernel ``name`` of this environment runs this interpreter; return its folder.

    The kernelspec lives inside the environment (``<sys.prefix>/share/jupyter/kernels``), so two
    checkouts, each with its own ``.venv``, never share or overwrite one kernel. A missing
    kernelspec, or one whose python lives elsewhere, is (re)installed with ipykernel's API; its
    environment keeps TensorFlow's C++ start-up logs out of the pipeline's output.
    """
    from ipykernel.kernelspec import install

    # Read this environment's own kernelspec file, not Jupyter's search result: Jupyter always
    # searches the running interpreter's prefix too, which may hold a kernel of the same name.
    folder = KERNEL_PREFIX / "share" / "jupyter" / "kernels" / name
    try:
        argv = json.loads((folder / "kernel.json").read_text()).get("argv") or [""]
        python = Path(argv[0])
        if python.is_file() and python.absolute() == Path(sys.executable).absolute():
            return folder
        say(f"kernel '{name}' points at {python}, not {sys.executable}: installing this environment's")
    except (OSError, ValueError):
        say(f"installing Jupyter kernel '{name}' for {sys.executable}")
    return Path(install(prefix=str(KERNEL_PREFIX), kernel_name=name, display_name=KERNEL_DISPLAY_NAME,
                        env={"TF_CPP_MIN_LOG_LEVEL": "3"}))


# =============================================================================== running
def _execute(notebook: Path, output: Path, parameters: dict, *, echo: bool) -> None:
    import papermill

    # papermill's progress bar shows the cells; ``echo`` copies what the notebook prints (e.g.
    # Keras' per-epoch lines) to stderr as it runs, so a long training run is visible from the terminal.
    with _quiet_papermill(), this_environments_kernels():  # papermill's INFO lines repeat what we print
        papermill.execute_notebook(str(notebook), str(output), parameters=parameters, kernel_name=KERNEL_NAME,
                                   progress_bar=True, stdout_file=sys.stderr if echo else None,
                                   cwd=str(output.parent), config=_kernel_config())


def _kernel_config() -> Any:
    """Jupyter config that encrypts the kernel's ZMQ traffic (CurveZMQ) when pyzmq supports it.

    ipykernel warns on every start of a kernel that talks plain TCP; "auto" encrypts when the
    kernelspec declares support (ipykernel's does) and otherwise starts it as before.
    """
    import zmq
    from traitlets.config import Config

    return Config({"KernelManager": {"transport_encryption": "auto" if zmq.has("curve") else "disabled"}})


def _error_text(exc: BaseException) -> str:
    """The failing cell's error (papermill's message has the cell number and traceback)."""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        return str(exc).strip()
    return f"{type(exc).__name__}: {exc}"


def run_pipeline(params: Mapping[str, Any] | None, reports_dir: str | Path = DEFAULT_REPORTS, name: str | None = None,
                 quick: bool = False, notebooks: Sequence[str] | None = None, *, echo: bool = True) -> Path:
    """Run the notebooks with papermill into a new ``reports_dir/<timestamp-or-name>/``; return that folder.

    ``quick=True`` starts from :data:`QUICK` and applies ``params`` over it. ``notebooks``
    restricts the run (names such as ``"04_gradcam"`` or ``"04"``); the rest find their
    inputs by their own defaults (e.g. the shipped model). ``echo`` copies what the notebooks
    print (e.g. Keras' per-epoch lines) to stderr while they run.
    Raises :class:`PipelineError` when a notebook fails, after saving the partial notebook
    and ``summary.json``.
    """
    selected = _select_notebooks(notebooks)
    effective = {**(QUICK if quick else {}), **dict(params or {})}
    _check_params(effective, notebook_paths() + [p for p in selected if p not in notebook_paths()])
    effective = _plain(_absolute_paths(effective))
    ensure_kernel()

    run_dir = paths.new_run_dir(reports_dir, name).resolve()
    layout = RunLayout(run_dir)
    layout.params.write_text(yaml.safe_dump(effective, sort_keys=True))
    record: dict[str, Any] = {"run": run_dir.name, "run_dir": str(run_dir), "status": "running", "quick": quick,
                              "catdog_version": VERSION, "notebooks": [], "params": effective}
    started = time.time()
    say(f"run folder: {run_dir}")
    try:
        for k, notebook in enumerate(selected, start=1):
            declared = declared_parameters(notebook)
            nb_params = {key: value for key, value in effective.items() if key in declared}
            nb_params["run_dir"] = str(run_dir)
            output = run_dir / notebook.name
            shown = ", ".join(f"{key}={value!r}" for key, value in nb_params.items() if key != "run_dir")
            say(f"\n==> [{k}/{len(selected)}] {notebook.name}" + (f" ({shown})" if shown else ""))
            entry = {"notebook": notebook.stem, "status": "running", "output": str(output)}
            record["notebooks"].append(entry)
            t0 = time.time()
            try:
                _execute(notebook, output, nb_params, echo=echo)
            except Exception as exc:  # PapermillExecutionError, dead kernel, missing kernel, timeout…
                entry.update(status="failed", seconds=round(time.time() - t0, 1))
                text = _error_text(exc)
                record.update(status="failed", failed_notebook=notebook.stem, error=text[-4000:])
                say(f"\n!!! {notebook.name} failed; the partially executed notebook is {output}\n{text}\n")
                done = [e["notebook"] for e in record["notebooks"] if e["status"] == "ok"]
                last = text.strip().splitlines()[-1].strip() if text.strip() else repr(exc)
                raise PipelineError(f"{notebook.name} failed in {run_dir} ({last}); "
                                    f"finished: {', '.join(done) or 'none'}", run_dir, notebook.stem) from exc
            entry.update(status="ok", seconds=round(time.time() - t0, 1))
            say(f"    {notebook.name} done in {entry['seconds']:.0f} s")
        record["status"] = "ok"
    except KeyboardInterrupt:
        record["status"] = "interrupted"
        for entry in record["notebooks"]:
            if entry["status"] == "running":
                entry["status"] = "interrupted"
        raise
    finally:
        record["wall_seconds"] = round(time.time() - started, 1)
        record.update(summarize_run(run_dir))
        layout.summary.write_text(json.dumps(record, indent=2, default=str) + "\n")
    say(f"\nfinished in {record['wall_seconds']:.0f} s: {run_dir}")
    return run_dir


def _metric_values(block: Mapping[str, Any], prefix: str, suffix: str = "") -> dict[str, Any]:
    keys = ("accuracy", "log_loss", "roc_auc", "ece", "brier", "average_precision", "n_images")
    return {f"{prefix}_{k}{suffix}": block.get(k) for k in keys if k in block}


def summarize_run(run_dir: str | Path) -> dict[str, Any]:
    """Key numbers of a run folder: test metrics, temperature, training time, artefact paths.

    Test metrics come from the newest ``evaluation/**/metrics.json`` (calibrated, plus the
    uncalibrated ones with suffix ``_uncalibrated``); without an evaluation, from the model
    card's test metrics.
    """
    layout = RunLayout(run_dir)
    out: dict[str, Any] = {"metrics": {}}
    model = layout.model
    reports = sorted(layout.evaluation.glob("**/metrics.json"), key=lambda p: p.stat().st_mtime)
    metrics = json.loads(reports[-1].read_text()) if reports else {}
    card = ModelCard.read(model)
    if card is None and metrics.get("model"):  # a run without 02_train: the model it evaluated
        model = Path(metrics["model"])
        card = ModelCard.read(model)
    if card is not None:
        out["model_path"] = str(model)
        out["train_seconds"] = card.total_seconds
        out["phases"] = card.phases
        out["temperature"] = card.temperature
        out["split_sizes"] = card.split_sizes
        out["metrics"].update(_metric_values(card.metrics.get("validation", {}), "val"))
    if reports:
        out["evaluation_dir"] = str(reports[-1].parent)
        out["metrics_source"] = "evaluation"
        out["metrics"].update(_metric_values(metrics.get("calibrated", {}), "test"))
        out["metrics"].update(_metric_values(metrics.get("uncalibrated", {}), "test", "_uncalibrated"))
        out.setdefault("temperature", metrics.get("temperature"))
    elif card is not None and card.metrics.get("test"):
        out["metrics_source"] = "model_card"
        out["metrics"].update(_metric_values(card.metrics["test"], "test"))
    if layout.dataset.is_file():
        dataset = json.loads(layout.dataset.read_text())
        out["n_images"] = dataset.get("n_images")
        out["n_skipped"] = dataset.get("n_skipped")
    return out


# =============================================================================== grids
def _grid_sets(spec: Any) -> list[dict[str, Any]]:
    """Parameter sets from a grid spec: a mapping of key -> list (cartesian product) or a list of mappings."""
    if isinstance(spec, dict):
        keys = list(spec)
        values = [v if isinstance(v, list) else [v] for v in spec.values()]
        if any(not v for v in values):
            raise ValueError("grid: every key needs at least one value")
        return [dict(zip(keys, combo)) for combo in itertools.product(*values)]
    if isinstance(spec, list) and spec and all(isinstance(s, dict) for s in spec):
        return [dict(s) for s in spec]
    raise ValueError("grid YAML must be a mapping of parameter: [values…] or a list of parameter mappings")


def _varying(sets: Sequence[Mapping[str, Any]]) -> list[str]:
    keys = list(dict.fromkeys(k for s in sets for k in s))
    return [k for k in keys if len({json.dumps(s.get(k), sort_keys=True, default=str) for s in sets}) > 1]


def _format(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:.1f}"
        return f"{value:.3g}" if 0 < abs(value) < 1e-3 else f"{value:.4f}"  # learning rates stay readable
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A GitHub-markdown table of ``rows`` (numbers right-aligned, floats to 4 decimals)."""
    numeric = {c for c in columns if any(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool)
                                         for r in rows)}
    lines = ["| " + " | ".join(columns) + " |",
             "|" + "|".join("---:" if c in numeric else "---" for c in columns) + "|"]
    lines += ["| " + " | ".join(_format(r.get(c)).replace("|", "\\|") for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _sort_rows(rows: list[dict], key: str) -> list[dict]:
    descending = not lower_is_better(key)

    def order(row: dict):
        value = row.get(key)
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        if missing:
            return (1, 0, "")
        if isinstance(value, (int, float)):
            return (0, -value if descending else value, "")
        return (0, 0, str(value))

    return sorted(rows, key=order)


def run_grid(grid_yaml: str | Path, base_params: Mapping[str, Any] | None = None,
             reports_dir: str | Path = DEFAULT_REPORTS, quick: bool = False, sort_by: str = "test_accuracy",
             name: str | None = None, *, notebooks: Sequence[str] | None = None, echo: bool = True) -> str:
    """One pipeline per parameter set of ``grid_yaml``, then a comparison table; returns its markdown.

    ``grid_yaml`` holds a mapping of parameter -> list of values (every combination runs,
    e.g. ``image_size: [128, 160, 224]`` and ``finetune_epochs: [0, 2]`` make 6 runs) or a
    list of parameter mappings. Each set is applied over ``base_params`` (and over
    :data:`QUICK` when ``quick``). Runs go to ``reports_dir/<grid name>/NN-…/``; a failing
    run is recorded and the grid moves on. Writes ``grid.yaml``, ``comparison.csv`` and
    ``comparison.md`` (the parameters that vary, status, test accuracy, log loss, ROC AUC,
    ECE and training seconds, sorted by ``sort_by``; best first).
    """
    grid_yaml = Path(grid_yaml)
    if not grid_yaml.is_file():
        raise FileNotFoundError(f"grid file not found: {grid_yaml}")
    spec = load_yaml(grid_yaml.read_text())
    sets = _grid_sets(spec)
    base = dict(base_params or {})
    varying = _varying([{**base, **s} for s in sets]) or list(dict.fromkeys(k for s in sets for k in s))
    allowed = (*SORT_KEYS, "run", *varying)
    sort_key = sort_by if sort_by in allowed else f"test_{sort_by}"
    if sort_key not in allowed:
        raise ValueError(f"cannot sort by {sort_by!r}; choose from {', '.join(allowed)}")
    selected = _select_notebooks(notebooks)
    for s in sets:  # fail on a typo before hours of training, not after
        _check_params({**(QUICK if quick else {}), **base, **s}, notebook_paths() + selected)

    grid_dir = paths.new_run_dir(reports_dir, name or time.strftime("grid-%Y%m%d-%H%M%S", time.gmtime()))
    (grid_dir / "grid.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (grid_dir / "base_params.yaml").write_text(yaml.safe_dump(_plain(base), sort_keys=True))
    rows = []
    for i, s in enumerate(sets, start=1):
        label = "-".join(f"{k}-{s[k]}" for k in varying if k in s) or "run"
        say(f"\n#### grid run {i}/{len(sets)}: {s}")
        try:
            run_dir = run_pipeline({**base, **s}, grid_dir, name=f"{i:02d}-{label}", quick=quick,
                                   notebooks=notebooks, echo=echo)
        except PipelineError as exc:
            run_dir = exc.run_dir
        summary = json.loads(RunLayout(run_dir).summary.read_text())
        row = {"run": run_dir.name, **{k: summary["params"].get(k) for k in varying}, "status": summary["status"],
               **{k: summary["metrics"].get(k) for k in METRIC_COLUMNS if k != "train_seconds"},
               "train_seconds": summary.get("train_seconds")}
        if sort_key not in row:
            row[sort_key] = summary["metrics"].get(sort_key, summary.get(sort_key))
        rows.append(row)
    rows = _sort_rows(rows, sort_key)
    columns = list(dict.fromkeys(["run", *varying, "status", *METRIC_COLUMNS, sort_key]))
    with (grid_dir / "comparison.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({c: ("" if r.get(c) is None else r.get(c)) for c in columns} for r in rows)
    table = (f"Grid {grid_dir.name}: {len(rows)} runs, sorted by {sort_key} "
             f"({'lower' if lower_is_better(sort_key) else 'higher'} is better)\n\n" + markdown_table(rows, columns))
    (grid_dir / "comparison.md").write_text(table + "\n")
    say(f"\ngrid folder: {grid_dir}")
    return table


__all__ = ["QUICK", "KERNEL_NAME", "PipelineError", "parse_cli_params", "notebook_paths", "declared_parameters",
           "ensure_kernel", "run_pipeline", "summarize_run", "run_grid", "markdown_table"]
