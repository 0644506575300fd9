"""The layout of a run folder, in one place: where each notebook and the pipeline read and write.

A run folder (``runs/<run>/``, made by ``catdog pipeline`` or chosen in a notebook) holds:

- ``data/``: ``manifest.csv``, ``skipped.csv``, ``dataset.json`` and the data figures (``01_data``);
- ``model/``: ``model.keras``, its card, history, "neither" detector and checkpoints (``02_train``);
- ``evaluation/<report>/``: one folder per evaluation (``03_evaluate``);
- ``gradcam/``: heatmap panels, figures and the faithfulness report (``04_gradcam``);
- ``predictions.csv`` and ``uploads/`` (``05_predict``);
- ``params.yaml`` and ``summary.json`` (the pipeline).

Core module: no heavy imports, so the command line and the pipeline can use it cheaply.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from catdog import paths

# New runs go to runs/ (ignored by git); reports/runs/ keeps the records committed on purpose.
DEFAULT_REPORTS = paths.REPO_ROOT / "runs"
INTERACTIVE_RUN = DEFAULT_REPORTS / "interactive"  # run_dir "" in a notebook opened in Jupyter


@dataclass(frozen=True)
class RunLayout:
    """The paths inside one run folder ``root`` (nothing is created)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))  # accept a str; frozen dataclasses need this

    # ------------------------------------------------------------ 01_data
    @property
    def data(self) -> Path:
        """``data/``: the manifest, the skipped files, the dataset summary and the data figures."""
        return self.root / "data"

    @property
    def manifest(self) -> Path:
        """``data/manifest.csv`` (``path,label,split``), read by every later notebook."""
        return self.data / "manifest.csv"

    @property
    def skipped(self) -> Path:
        """``data/skipped.csv``: each file left out of the manifest and why."""
        return self.data / "skipped.csv"

    @property
    def dataset(self) -> Path:
        """``data/dataset.json``: counts, fractions and the manifest checksum."""
        return self.data / "dataset.json"

    # ------------------------------------------------------------ 02_train
    @property
    def model_dir(self) -> Path:
        """``model/``: the training run folder (model, card, history, detector, checkpoints)."""
        return self.root / "model"

    @property
    def model(self) -> Path:
        """``model/model.keras``: the model the run trained."""
        return self.model_dir / "model.keras"

    # ------------------------------------------------------------ 03-05
    @property
    def evaluation(self) -> Path:
        """``evaluation/``: one report folder per evaluation."""
        return self.root / "evaluation"

    @property
    def gradcam(self) -> Path:
        """``gradcam/``: heatmap panels, figures and the faithfulness report."""
        return self.root / "gradcam"

    @property
    def predictions(self) -> Path:
        """``predictions.csv``: what ``05_predict`` classified."""
        return self.root / "predictions.csv"

    @property
    def uploads(self) -> Path:
        """``uploads/``: photos dropped into the upload button, and their heatmaps."""
        return self.root / "uploads"

    # ------------------------------------------------------------ the pipeline
    @property
    def params(self) -> Path:
        """``params.yaml``: the effective parameters (``catdog pipeline --config`` repeats the run)."""
        return self.root / "params.yaml"

    @property
    def summary(self) -> Path:
        """``summary.json``: status, key metrics, training time and parameters."""
        return self.root / "summary.json"


def say(message: str) -> None:
    """A progress message on stderr (stdout carries results: CSV rows, paths, tables)."""
    print(message, file=sys.stderr, flush=True)


def unattended_kernel() -> bool:
    """True inside a Jupyter kernel nobody watches: a notebook run by papermill or nbconvert (nbclient).

    Such a run asks the kernel with ``allow_stdin`` off (nobody could answer ``input()``),
    while JupyterLab, Notebook and VS Code turn it on. IPython is only looked up, never
    imported: a plain Python process is not in a kernel.
    """
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return False
    try:
        request = kernel.get_parent().get("content", {})
    except (AttributeError, TypeError):  # an ipykernel without get_parent(): its own flag
        return not getattr(kernel, "_allow_stdin", True)
    return not request.get("allow_stdin", True)


def show_progress(requested: bool = True) -> bool:
    """Whether to draw a tqdm progress bar: as ``requested``, except in an unattended kernel.

    A saved notebook would keep a widget bar frozen at its first state ("0%") where widgets
    are not rendered, and a text bar as one output line per refresh; the cell's result says
    what was done anyway.
    """
    return requested and not unattended_kernel()


__all__ = ["DEFAULT_REPORTS", "INTERACTIVE_RUN", "RunLayout", "say", "show_progress", "unattended_kernel"]
