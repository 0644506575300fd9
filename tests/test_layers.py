"""The layer contract of ``pyproject.toml`` ([tool.importlinter]): the package keeps it, import-linter
really catches a break of it, and the entry points stay light (``catdog --help`` loads no TensorFlow)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
HEAVY = ("tensorflow", "keras", "matplotlib", "cv2")


def _lint_imports(project: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the ``catdog`` package in ``project/src``, with ``project/pyproject.toml``."""
    env = {**os.environ, "PYTHONPATH": str(project / "src")}  # ahead of the editable install's path entry
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--config", str(project / "pyproject.toml")],
                          cwd=project, env=env, capture_output=True, text=True, timeout=300)


def test_the_package_keeps_its_layers():
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def test_an_upward_import_or_a_heavy_core_or_tflite_import_breaks_the_contract(tmp_path):
    shutil.copytree(REPO / "src" / "catdog", tmp_path / "src" / "catdog", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    with (tmp_path / "src" / "catdog" / "metrics.py").open("a", encoding="utf-8") as f:
        f.write("\nimport catdog.cli  # deliberately upward: core -> entry point\n")
    with (tmp_path / "src" / "catdog" / "card.py").open("a", encoding="utf-8") as f:
        f.write("\nimport matplotlib  # deliberately heavy in a core module\n")
    with (tmp_path / "src" / "catdog" / "tflite.py").open("a", encoding="utf-8") as f:
        f.write("\nimport tensorflow  # the TFLite path must start without it\n")
    result = _lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "catdog.metrics -> catdog.cli" in result.stdout  # the copy was analysed, and the break named
    assert "catdog.card -> matplotlib" in result.stdout
    assert "catdog.tflite -> tensorflow" in result.stdout


def test_the_command_line_and_notebook_helpers_load_no_heavy_library():
    code = ("import sys\n"
            "import catdog.cli, catdog.notebook, catdog.pipeline\n"
            "try:\n"
            "    catdog.cli.main(['--help'])\n"
            "except SystemExit:\n"
            "    pass\n"
            f"print('loaded:', sorted(m for m in {HEAVY!r} if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage: catdog" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "loaded: []"
