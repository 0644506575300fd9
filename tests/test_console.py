"""What the command line shows a person: TensorFlow's start-up noise stays out; names it offers stay true."""

from __future__ import annotations

import re
import subprocess
import sys

from catdog import cli, models
from conftest import real_photos

TF_LOG_LINE = re.compile(r"^(?:[IWEF]\d{4} |WARNING: All log messages before absl)", re.MULTILINE)


def test_backbone_choices_are_the_models_backbones():
    assert cli.BACKBONES == models.BACKBONES


def test_a_command_prints_no_tensorflow_start_up_lines_unless_verbose():
    photo = str(real_photos("cat", 1)[0])
    quiet = subprocess.run([sys.executable, "-m", "catdog.cli", "predict", photo, "--no-reject"],
                           capture_output=True, text=True, timeout=600)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.splitlines()[1].split(",")[1] in ("cat", "dog")
    assert not TF_LOG_LINE.search(quiet.stderr), quiet.stderr
