"""The web demo in a real browser: ``catdog demo`` on a free local port, driven by headless Chromium.

Chromium is Debian's ``chromium`` package (``.ci/run`` installs it), driven by Playwright with
``executable_path`` (no Playwright browser download). The app runs in a subprocess exactly as a
user starts it, so these tests cover the command, the page and the model behind it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from catdog import paths
from conftest import REPO, real_photos

CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")
# The README's picture of the page is refreshed only when asked (CATDOG_SCREENSHOT=1), so a test run
# leaves the working tree as it was.
README_SCREENSHOT = REPO / "reports" / "figures" / "demo.png"
STARTUP_S = 240  # TensorFlow, the model and the traced heatmap function load first; the machine is shared
RESULT_MS = 60_000

# find_spec, not importorskip: importing gradio here would cost the test process ~15 s for nothing
needs_browser = [
    pytest.mark.skipif(importlib.util.find_spec("gradio") is None,
                       reason="gradio is not installed (pip install -r requirements.txt)"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                       reason="playwright is not installed (pip install -r requirements.txt)"),
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"no Chromium browser at {CHROMIUM} "
                       "(Debian: apt-get install -y chromium chromium-driver)"),
    pytest.mark.skipif(not paths.default_model_path().is_file(), reason="shipped model not present"),
]


def browser_test(fn):
    """Mark ``fn`` as needing gradio, Playwright, Chromium and the shipped model."""
    for mark in needs_browser:
        fn = mark(fn)
    return fn


def test_catdog_demo_defaults_to_localhost_and_help_stays_light(capsys):
    from catdog.cli import build_parser, main

    args = build_parser().parse_args(["demo"])
    assert (args.host, args.port, args.model) == ("127.0.0.1", 7860, None)
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0 and "127.0.0.1" in capsys.readouterr().out
    # `catdog --help` must not pay for the web stack or TensorFlow
    code = "import sys, catdog.cli; catdog.cli.build_parser(); print(sorted({'gradio', 'tensorflow'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, proc: subprocess.Popen, log: Path) -> None:
    """Return once ``url`` answers; fail with the server's log if it exits or takes too long."""
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"`catdog demo` exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    pytest.fail(f"`catdog demo` did not answer within {STARTUP_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    """``catdog demo`` on a free port in a subprocess; its URL."""
    folder = tmp_path_factory.mktemp("demo")
    port, log = _free_port(), folder / "server.log"
    env = {**os.environ, "CATDOG_CACHE_DIR": str(folder / "cache"), "GRADIO_ANALYTICS_ENABLED": "False",
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "catdog.cli", "demo", "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_up(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def page(server):
    """A headless Chromium tab showing the demo."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # Chromium refuses to start as root with its sandbox on (containers, CI)
        args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        tab = browser.new_page(viewport={"width": 1280, "height": 900})
        tab.goto(server)
        tab.wait_for_selector("#photo input[type=file]", state="attached")
        yield tab
        browser.close()


def _upload(page, path: Path) -> None:
    page.set_input_files("#photo input[type=file]", str(path))


def _wait_for_result(page, text: str) -> str:
    """The result panel's text once it contains ``text``."""
    page.wait_for_function("t => document.querySelector('#result').innerText.includes(t)", arg=text,
                           timeout=RESULT_MS)
    return page.inner_text("#result")


def _picture_sizes(page) -> list[tuple[int, int] | None]:
    """(width, height) of each of the three rendered pictures as the browser decoded them (None: none shown)."""
    return page.evaluate("""() => [0, 1, 2].map(i => {
        const img = document.querySelector(`#picture-${i} img`);
        return img && img.complete && img.naturalWidth ? [img.naturalWidth, img.naturalHeight] : null; })""")


@browser_test
def test_a_cat_photo_shows_its_label_confidence_and_three_maps_at_the_photos_size(page, tmp_path):
    photo = real_photos("cat", 1)[0]
    size = Image.open(photo).size
    _upload(page, photo)
    text = _wait_for_result(page, "confidence")
    assert re.match(r"cat: (>99\.9|\d{1,2}\.\d)% confidence", text), text  # metrics.percent
    assert "The model sees a cat" in text and "Grad-CAM for cat" in text
    page.wait_for_function("() => [0, 1, 2].every(i => { const im = document.querySelector(`#picture-${i} img`);"
                           " return im && im.complete && im.naturalWidth > 0; })", timeout=RESULT_MS)
    assert _picture_sizes(page) == [list(size)] * 3  # grayscale map, heatmap, overlay at the photo's resolution
    assert "test accuracy" in page.inner_text("#footer") and "mobilenet_v2" in page.inner_text("#footer")
    if paths.shared_dir() is not None:  # example photos from the model's test split
        assert page.get_by_text("Example photos").count() == 1
    screenshot = README_SCREENSHOT if os.environ.get("CATDOG_SCREENSHOT") else tmp_path / "demo.png"
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000


@browser_test
def test_the_map_switch_redraws_the_maps_for_the_other_class(page):
    photo = real_photos("cat", 1)[0]
    _upload(page, photo)
    _wait_for_result(page, "Grad-CAM for cat")
    page.get_by_label("dog map").check()
    text = _wait_for_result(page, "Grad-CAM for dog")
    assert text.startswith("cat")  # the label stays; only the explained class changes
    page.get_by_label("predicted class").check()
    _wait_for_result(page, "Grad-CAM for cat")


@browser_test
def test_a_file_that_is_not_an_image_gets_a_clear_message_and_no_traceback(page, tmp_path):
    fake = tmp_path / "notes.jpg"  # an image name, text inside: it reaches the model side
    fake.write_text("this is not a picture\n")
    _upload(page, fake)
    text = _wait_for_result(page, "Cannot use this file")
    assert "notes.jpg: not an image" in text
    assert _picture_sizes(page) == [None, None, None]  # no stale maps of the previous photo
    other = tmp_path / "notes.txt"  # not even an image name: the page refuses it before upload
    other.write_text("this is not a picture either\n")
    _upload(page, other)
    page.get_by_text("Invalid file type: notes.txt").wait_for(timeout=RESULT_MS)
    body = page.inner_text("body")
    assert "Traceback" not in body and 'File "' not in body
