"""``catdog demo``: a local web page to try your own photos (Gradio), on the same code as ``catdog predict``.

The page is layout only. For every photo :class:`DemoModel` asks a
:class:`~catdog.predict.Predictor` for the row ``catdog predict`` would print (label, calibrated
confidence, "uncertain", "neither"), asks the bundle's explainer for the class map
``catdog explain`` would draw, and :func:`catdog.rendering.render` turns it into the three
pictures (grayscale attention map, colour heatmap, overlay) at the photo's own resolution.

The server is bound to 127.0.0.1 with sharing off and an upload size limit; a file that is not
an image gets the reason :mod:`catdog.images` gives (no traceback on the page).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from catdog import paths
from catdog.bundle import Bundle
from catdog.conventions import CLASS_NAMES
from catdog.data import read_manifest
from catdog.gradcam import METHODS, method_label
from catdog.images import IMAGE_EXTENSIONS, load_image, load_original
from catdog.metrics import percent
from catdog.predict import Predictor
from catdog.rendering import render

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
PORT = 7860
MAX_FILE_SIZE = "20mb"  # phone photos are 2-12 MB; bigger uploads are refused by Gradio before they reach us
DISPLAY_MAX_SIDE = 1024  # the three pictures are drawn at the photo's size, capped here (the page shows ~400 px)
ALPHA = 0.4  # overlay opacity, as in `catdog explain`
TARGETS = {"predicted class": "predicted", "cat map": "cat", "dog map": "dog"}
MEANINGS = {
    "cat": "The model sees a cat; the percentage is calibrated: of the photos it labels with this confidence, "
           "about that share really are cats.",
    "dog": "The model sees a dog; the percentage is calibrated: of the photos it labels with this confidence, "
           "about that share really are dogs.",
    "uncertain": "The model cannot tell cat from dog here: its calibrated probability is close to 50 %; "
                 "the maps show the class it leans to.",
    "neither": "This photo looks unlike the cat and dog photos the model knows (its \"neither\" detector "
               "rejected it), so it gives no cat/dog answer.",
}
PICTURES = ("Attention map (grayscale)", "Heatmap", "Overlay")
API_NAME = "analyse"  # the page's one endpoint (also what `catdog bench demo` calls)


# ---------------------------------------------------------------- the model side (no Gradio)
@dataclass
class Analysis:
    """What the page shows for one photo: the prediction row and the three pictures (or an error)."""

    label: str  # cat, dog, uncertain, neither, or error
    confidence: float | None  # calibrated p of the class the model leans to (None for neither/error)
    leaning: str | None  # cat or dog: the class explained when the target is "predicted"
    explained: str | None  # the class the maps are for
    method: str
    row: dict[str, Any]  # the `catdog predict` row
    pictures: tuple[np.ndarray, np.ndarray, np.ndarray] | None  # gray, heatmap, overlay
    error: str = ""


class DemoModel:
    """A :class:`~catdog.bundle.Bundle` answering for one photo file at a time, as predict and explain do."""

    def __init__(self, bundle: Bundle):
        self.bundle = bundle
        # reject only where the model has a detector: a model without one still gets a cat/dog answer
        self.predictor = Predictor(bundle, reject=bundle.has_detector, batch_size=1, workers=1, progress=False)
        self._warm_up()

    def _warm_up(self) -> None:
        """Trace the prediction and default heatmap functions now: the first upload would wait ~10 s otherwise."""
        blank = np.zeros((1, self.bundle.image_size, self.bundle.image_size, 3), np.uint8)
        self.predictor.predict_arrays(blank)
        self.bundle.explainer.explain(blank, "predicted", "gradcam")

    def analyse(self, path: str | Path, target: str = "predicted", method: str = "gradcam",
                alpha: float = ALPHA) -> Analysis:
        """The prediction row of ``path`` and its class map (``target``: predicted, cat or dog) as three pictures."""
        row = next(self.predictor.predict_paths([Path(path)]))  # exactly what `catdog predict` prints for it
        if row["label"] == "error":
            return Analysis("error", None, None, None, method, row, None, row["error"])
        leaning = "dog" if row["p_dog"] >= self.bundle.threshold else "cat"
        label = "uncertain" if row["uncertain"] and row["label"] != "neither" else row["label"]
        confidence = None if row["label"] == "neither" else (row["p_dog"] if leaning == "dog" else row["p_cat"])
        explained = leaning if target == "predicted" else target
        explainer = self.bundle.explainer
        cam = explainer.explain(load_image(path, explainer.image_size[0])[None], explained, method)[0]
        pictures = render(load_original(path, DISPLAY_MAX_SIDE), cam, alpha=alpha)
        return Analysis(label, confidence, leaning, explained, method, row, pictures)

    def card_facts(self) -> str:
        """One line of model card facts for the page footer."""
        card = self.bundle.card
        if card is None:
            return f"Model `{self.bundle.path.name}`: no model card (uncalibrated, threshold 0.5)."
        test = card.metrics.get("test", {})
        accuracy = (f"test accuracy {test['accuracy']:.2%} on {test.get('n_images', '?')} held-out photos"
                    if "accuracy" in test else "no test accuracy on its card")
        detector = "with" if self.bundle.has_detector else "without"
        return (f"Model `{self.bundle.path.name}`: {card.architecture}, input {card.image_size}x"
                f"{card.image_size} px, {accuracy}, temperature {card.temperature:.3f}, {detector} a "
                "\"neither\" detector.")


def result_markdown(analysis: Analysis, name: str = "") -> str:
    """The label, its confidence and what it means, as Markdown (or the reason a file cannot be used)."""
    if analysis.label == "error":
        kinds = ", ".join(sorted(e.lstrip(".").upper() for e in IMAGE_EXTENSIONS))
        return (f"### Cannot use this file\n**{name or 'the upload'}**: {analysis.error}.\n\n"
                f"Upload a photo ({kinds}).")
    if analysis.confidence is None:
        headline = f"## {analysis.label}"
    else:
        lean = f" (leans {analysis.leaning})" if analysis.label == "uncertain" else ""
        headline = f"## {analysis.label}{lean}: {percent(analysis.confidence)} confidence"
    row = analysis.row
    numbers = f"p(cat) {row['p_cat']:.3f} · p(dog) {row['p_dog']:.3f}"
    if row.get("ood_score") is not None:
        numbers += f" · \"neither\" score {row['ood_score']:.3g}"
    maps = f"Maps: {method_label(analysis.method)} for *{analysis.explained}*."
    return f"{headline}\n{MEANINGS[analysis.label]}\n\n{numbers}. {maps}"


def example_photos(bundle: Bundle, per_class: int = 2) -> list[str]:
    """A few test-split photos of the model's own manifest (paths into ../shared); none without the shared folder."""
    if paths.shared_dir() is None or bundle.manifest is None or not bundle.manifest.is_file():
        return []
    test = read_manifest(bundle.manifest, "test")
    chosen: list[str] = []
    for label in CLASS_NAMES:
        files = (str(item.path) for item in test if item.label == label and Path(item.path).is_file())
        chosen += [f for f, _ in zip(files, range(per_class))]
    return chosen


# ---------------------------------------------------------------- the page (Gradio)
def _photo_input():  # -> gr.Image
    """A photo input (upload, paste, webcam) that hands the uploaded file to catdog unopened.

    Gradio's Image opens uploads with Pillow before the handler runs, so a file that is not a
    picture would fail there with a bare "Error"; catdog's decoder names the problem instead.
    The method is replaced on the instance: a subclass of a Gradio component would make Gradio
    write a ``.pyi`` stub beside this module.
    """
    import gradio as gr

    photo = gr.Image(label="Your photo", type="filepath", image_mode=None, height=320,
                     sources=["upload", "clipboard", "webcam"], elem_id="photo")
    gradio_preprocess = photo.preprocess

    def preprocess(payload):  # noqa: ANN001, ANN202 - Gradio's signature
        if payload is not None and payload.path and not (payload.url or "").startswith("data:"):
            return str(payload.path)
        return gradio_preprocess(payload)

    photo.preprocess = preprocess
    return photo


def build_app(demo_model: DemoModel, examples: Sequence[str] = ()):  # -> gr.Blocks
    """The page: photo in; label, confidence and meaning; the three pictures; switches; examples; card footer."""
    import gradio as gr

    def analyse(photo: str | None, target: str, method: str, alpha: float):
        if not photo:
            return "Drop, paste or pick a photo of a cat or a dog.", None, None, None
        analysis = demo_model.analyse(photo, TARGETS[target], method, alpha)
        text = result_markdown(analysis, Path(photo).name)
        return (text, *(analysis.pictures or (None, None, None)))

    with gr.Blocks(title="catdog: cat or dog?", analytics_enabled=False) as app:
        gr.Markdown("# catdog: cat, dog, or neither?\nDrop, paste or pick a photo (or use the webcam); the "
                    "maps show where the model looked.")
        with gr.Row():
            with gr.Column(scale=1):
                photo = _photo_input()
                target = gr.Radio(list(TARGETS), value="predicted class", label="Map for", elem_id="target")
                method = gr.Radio([(method_label(m), m) for m in METHODS], value="gradcam", label="Method",
                                  info="Grad-CAM++ and Score-CAM are prepared on first use (some seconds); "
                                       "Score-CAM runs 32 masked copies of the photo, so it stays slower.",
                                  elem_id="method")
                alpha = gr.Slider(0.0, 1.0, value=ALPHA, step=0.05, label="Overlay opacity", elem_id="alpha")
            with gr.Column(scale=1):
                result = gr.Markdown("Drop, paste or pick a photo of a cat or a dog.", elem_id="result")
        with gr.Row():
            pictures = [gr.Image(label=name, type="numpy", format="png", interactive=False, height=320,
                                 elem_id=f"picture-{i}") for i, name in enumerate(PICTURES)]
        if examples:
            gr.Examples(examples=[[e] for e in examples], inputs=[photo], label="Example photos (test split)")
        gr.Markdown(demo_model.card_facts(), elem_id="footer")

        # one endpoint for every control: a new photo, map, method or opacity redraws the result
        gr.on([photo.change, target.change, method.change, alpha.release], analyse,
              [photo, target, method, alpha], [result, *pictures], api_name=API_NAME)
    return app


def serve(demo_model: DemoModel, host: str = HOST, port: int = PORT, *, block: bool = True,
          quiet: bool = False):  # -> gr.Blocks
    """Start the page for ``demo_model`` on ``host:port`` (sharing off); ``block=False`` returns once it listens."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry calls from a local demo
    import gradio as gr

    examples = example_photos(demo_model.bundle)
    app = build_app(demo_model, examples)
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["monospace"])  # no web-font download
    app.launch(server_name=host, server_port=port, share=False, max_file_size=MAX_FILE_SIZE, show_error=False,
               allowed_paths=sorted({str(Path(e).parent) for e in examples}), prevent_thread_lock=not block,
               quiet=quiet, theme=theme, footer_links=[])
    return app


def launch(model: str | Path | None = None, host: str = HOST, port: int = PORT, *, block: bool = True,
           quiet: bool = False):  # -> gr.Blocks
    """``catdog demo``: the page for ``model`` (default: the shipped one) on ``host:port``."""
    return serve(DemoModel(Bundle.load(model)), host, port, block=block, quiet=quiet)


def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- latency
def latency_benchmark(model: str | Path | None = None, out_dir: str | Path = paths.REPO_ROOT / "reports" / "benchmarks",
                      photo: str | Path | None = None, runs: int = 10, method: str = "gradcam") -> dict:
    """Time from upload to result for one photo through the running page's HTTP API (after a first call).

    The app is started on a free local port; ``gradio_client`` uploads ``photo`` (default: the
    first example photo) and waits for the label and the three pictures, ``runs`` times. The
    handler's own time (decode, predict, map, render) is measured too, in-process. Writes
    ``demo_latency.json`` and ``.md`` into ``out_dir``.
    """
    from gradio_client import Client, handle_file

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per HTTP request otherwise
    demo_model = DemoModel(Bundle.load(model))
    photo = Path(photo) if photo else Path(next(iter(example_photos(demo_model.bundle)), ""))
    if not photo.is_file():
        raise FileNotFoundError(f"no photo to time: pass one (the example photos need the shared folder, "
                                f"{paths.shared_dir() or 'not found'})")
    port = free_port()
    app = serve(demo_model, HOST, port, block=False, quiet=True)
    try:
        client = Client(f"http://{HOST}:{port}/", verbose=False)
        call = lambda: client.predict(handle_file(str(photo)), "predicted class", method, ALPHA,  # noqa: E731
                                      api_name=f"/{API_NAME}")
        first = _timed(call)
        http = [_timed(call) for _ in range(runs)]
        handler = [_timed(lambda: demo_model.analyse(photo, "predicted", method)) for _ in range(runs)]
    finally:
        app.close()
    result = {"photo": str(photo), "method": method, "runs": runs, "first_call_s": round(first, 4),
              "upload_to_result_s": _summary(http), "handler_s": _summary(handler), "target_s": 1.0,
              "cpu_count": os.cpu_count(), "load_average_1min": os.getloadavg()[0]}
    _write(Path(out_dir), result)
    return result


def _timed(fn) -> float:  # noqa: ANN001
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _summary(seconds: list[float]) -> dict[str, float]:
    return {"median": round(float(np.median(seconds)), 4), "min": round(min(seconds), 4),
            "max": round(max(seconds), 4)}


def _write(out_dir: Path, result: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "demo_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    up, handler = result["upload_to_result_s"], result["handler_s"]
    (out_dir / "demo_latency.md").write_text(
        "# Demo latency: upload to result\n\n"
        f"One photo (`{Path(result['photo']).name}`), {method_label(result['method'])}, predicted class, "
        f"{result['runs']} runs after a first call; {result['cpu_count']} CPU cores, 1-min load average "
        f"{result['load_average_1min']:.2f} (the machine is shared).\n\n"
        "| step | median s | min s | max s |\n|---|---|---|---|\n"
        f"| upload to result (HTTP API: upload, predict, map, 3 PNGs back) | {up['median']} | {up['min']} | "
        f"{up['max']} |\n"
        f"| handler alone (decode, predict, map, render) | {handler['median']} | {handler['min']} | "
        f"{handler['max']} |\n\n"
        f"First call: {result['first_call_s']} s. Target: under {result['target_s']} s. "
        "Reproduce: `catdog bench demo`.\n")


__all__ = ["Analysis", "DemoModel", "build_app", "example_photos", "launch", "latency_benchmark",
           "result_markdown", "serve", "free_port"]
