"""Tests for catdog.figures: every figure function returns a Figure and writes a non-empty PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import QuadMesh
from matplotlib.figure import Figure
from scipy import special

from catdog import figures
from catdog import metrics as ev
from catdog.paths import data_mirror

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(fig: Figure, path: Path) -> None:
    assert isinstance(fig, Figure)
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5_000


@pytest.fixture(scope="module")
def predictions() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    p = ev.sigmoid(np.where(y == 1, 2.0, -2.0) + rng.normal(0, 2.0, y.size))
    return y, p


@pytest.fixture(autouse=True)
def no_pyplot_figures_left():
    """Figures are built without pyplot, so nothing stays open between tests."""
    import matplotlib.pyplot as plt

    before = set(plt.get_fignums())
    yield
    assert set(plt.get_fignums()) == before


def test_confusion_matrix_figure(tmp_path, predictions):
    y, p = predictions
    fig = figures.confusion_matrix_figure(y, ev.predict_labels(p), path=tmp_path / "cm.png")
    _assert_png(fig, tmp_path / "cm.png")
    texts = {t.get_text() for ax in fig.axes for t in ax.texts}
    assert str(int(((y == 0) & (p < 0.5)).sum())) in texts  # counts in cells
    assert any(t.endswith("%") for t in texts)  # shares in cells
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["cat", "dog"]


def test_confusion_matrix_figure_one_class(tmp_path):
    fig = figures.confusion_matrix_figure([0, 0, 0], [0, 1, 0], path=tmp_path / "cm1.png")
    _assert_png(fig, tmp_path / "cm1.png")


def test_roc_and_pr_figures(tmp_path, predictions):
    y, p = predictions
    roc = figures.roc_figure(y, p, path=tmp_path / "roc.png")
    pr = figures.pr_figure(y, p, path=tmp_path / "pr.png", threshold=0.7)
    _assert_png(roc, tmp_path / "roc.png")
    _assert_png(pr, tmp_path / "pr.png")
    roc_legend = [t.get_text() for t in roc.axes[0].get_legend().get_texts()]
    pr_legend = [t.get_text() for t in pr.axes[0].get_legend().get_texts()]
    assert any("AUC" in t for t in roc_legend) and any("Chance" in t for t in roc_legend)
    assert any("AP" in t for t in pr_legend) and any("threshold 0.70" in t for t in pr_legend)


def test_roc_and_pr_one_class_show_a_note(tmp_path):
    fig = figures.roc_figure([1, 1, 1], [0.2, 0.8, 0.9], path=tmp_path / "roc1.png")
    assert any("only dog" in t.get_text() for t in fig.axes[0].texts)
    figures.pr_figure([0, 0], [0.2, 0.8], path=tmp_path / "pr1.png")
    assert (tmp_path / "pr1.png").stat().st_size > 0


def test_reliability_figure(tmp_path, predictions):
    y, p = predictions
    fig = figures.reliability_figure(y, p, path=tmp_path / "rel.png")
    _assert_png(fig, tmp_path / "rel.png")
    assert f"ECE {ev.expected_calibration_error(y, p):.3f}" in fig.get_suptitle()
    both = figures.reliability_figure(
        y, p, n_bins=10, path=tmp_path / "rel2.png", p_uncalibrated=ev.sigmoid(3 * special.logit(p))
    )
    _assert_png(both, tmp_path / "rel2.png")
    assert "uncalibrated" in both.get_suptitle()
    assert len(both.axes[0].get_lines()) == 3  # diagonal + two curves


def _history_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_training_curves_figure(tmp_path):
    header = "epoch,phase,accuracy,loss,val_accuracy,val_loss,learning_rate"
    rows = [
        f"{e},{'head' if e < 4 else 'finetune'},{0.8 + 0.02 * e},{0.5 - 0.04 * e},{0.81 + 0.015 * e},"
        f"{0.46 - 0.03 * e},{1e-3 if e < 4 else 1e-5}"
        for e in range(8)
    ]
    csv_path = _history_csv(tmp_path / "history.csv", header, rows)
    fig = figures.training_curves_figure(csv_path, path=tmp_path / "curves.png")
    _assert_png(fig, tmp_path / "curves.png")
    assert all(any("fine-tuning" in t.get_text() for t in ax.texts) for ax in fig.axes)
    assert "head 4, fine-tune 4" in fig.get_suptitle()


def test_training_curves_tolerates_missing_columns_and_phases(tmp_path):
    csv_path = _history_csv(tmp_path / "h.csv", "epoch,loss,val_loss", ["0,0.7,0.6", "1,0.5,", "2,0.4,0.45"])
    fig = figures.training_curves_figure(csv_path, path=tmp_path / "h.png")
    _assert_png(fig, tmp_path / "h.png")
    assert any("no accuracy" in t.get_text() for t in fig.axes[0].texts)

    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"accuracy": [0.6, 0.7], "phase": ["finetune", "finetune"]})
    fig = figures.training_curves_figure(frame, path=tmp_path / "df.png")
    _assert_png(fig, tmp_path / "df.png")


def _photos(n_per_class: int = 3) -> tuple[list[Path], list[int]]:
    root = data_mirror()
    if root is None or not (root / "Cat").is_dir():
        pytest.skip("shared PetImages not available")
    paths, labels = [], []
    for label, cls in enumerate(("Cat", "Dog")):
        files = sorted((root / cls).glob("*.jpg"))[:n_per_class]
        paths += files
        labels += [label] * len(files)
    return paths, labels


def test_gallery_figure_with_overlay_and_unreadable_file(tmp_path):
    photos, _ = _photos(2)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"this is not a jpeg")
    paths = [*photos, broken, tmp_path / "missing.jpg"]
    overlays = {str(photos[0]): np.full((50, 50, 3), 200, dtype=np.uint8)}
    fig = figures.gallery_figure(paths, [p.name for p in paths], path=tmp_path / "g.png", overlays=overlays, ncols=3)
    _assert_png(fig, tmp_path / "g.png")
    notes = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert sum("cannot show image" in t for t in notes) == 2
    assert fig.axes[0].images[0].get_array().shape[:2] == (50, 50)  # the overlay replaced the photo
    with pytest.raises(ValueError):
        figures.gallery_figure(paths, ["only one title"])


def test_gallery_figure_empty(tmp_path):
    fig = figures.gallery_figure([], [], path=tmp_path / "empty.png")
    assert (tmp_path / "empty.png").stat().st_size > 0
    assert any("no images" in t.get_text() for t in fig.axes[0].texts)


def test_sample_grid_figure_is_balanced(tmp_path):
    photos, labels = _photos(3)
    fig = figures.sample_grid_figure(photos, ["cat" if v == 0 else "dog" for v in labels], n=4, path=tmp_path / "s.png")
    _assert_png(fig, tmp_path / "s.png")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert sorted(t.split(" ")[0] for t in titles) == ["cat", "cat", "dog", "dog"]


def test_class_balance_figure(tmp_path):
    counts = {"train": {"cat": 9000, "dog": 8990}, "validation": {"cat": 1250, "dog": 1249},
              "test": {"cat": 1250, "dog": 1251}}
    fig = figures.class_balance_figure(counts, path=tmp_path / "b.png")
    _assert_png(fig, tmp_path / "b.png")
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {"9,000", "8,990", "1,249", "1,251"} <= texts


def test_sample_grid_shows_unreadable_files_as_placeholders(tmp_path):
    photos, labels = _photos(2)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    fig = figures.sample_grid_figure([*photos, broken], [*labels, 0], n=6, path=tmp_path / "s.png")
    _assert_png(fig, tmp_path / "s.png")
    assert sum("cannot show image" in t.get_text() for ax in fig.axes for t in ax.texts) == 1


def test_augmentation_figure_skips_unreadable_photos(tmp_path):
    photos, _ = _photos(1)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    fig = figures.augmentation_figure([photos[0], broken, photos[1]], {"rotation": 0.0}, image_size=48,
                                      n_variants=2, path=tmp_path / "aug.png")
    _assert_png(fig, tmp_path / "aug.png")
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert labels == [f"Cat/{photos[0].name}", f"Dog/{photos[1].name}"]  # one row per readable photo
    assert "rotation" not in fig.get_suptitle() and "zoom 0.15" in fig.get_suptitle()


# --------------------------------------------------------------------------- heatmap figures
def test_percent_never_rounds_to_certainty():
    assert ev.percent(0.99997) == ">99.9%" and ev.percent(0.00003) == "<0.1%"
    assert ev.percent(0.873) == "87.3%" and ev.percent(0.999) == "99.9%" and ev.percent(0.001) == "0.1%"
    assert ev.percent(0.996, 0) == ">99%" and ev.percent(0.004, 0) == "<1%" and ev.percent(0.5, 0) == "50%"
    assert ev.percent(None) == ev.percent(float("nan")) == "–"


def _colorbars(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]


def _texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.texts] + [t.get_text() for ax in fig.axes for t in ax.texts]


def test_panel_figure_has_one_colorbar_in_the_heatmaps_colours(tmp_path):
    from catdog.rendering import colormap_rgb, render

    original = np.full((40, 60, 3), 120, np.uint8)
    _, heatmap, overlay = render(original, np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8), "viridis")
    fig = figures.panel_figure(original, heatmap, overlay, "a title", tmp_path / "p.png", colormap="viridis",
                               feature_map=(7, 7))
    _assert_png(fig, tmp_path / "p.png")
    bars = _colorbars(fig)
    assert len(bars) == 1 and bars[0].get_ylabel() == figures.COLORBAR_LABEL
    cmap = next(c for c in bars[0].collections if isinstance(c, QuadMesh)).get_cmap()  # the bar's colours
    np.testing.assert_allclose(cmap(1.0)[:3], colormap_rgb("viridis")[255] / 255, atol=1e-6)
    np.testing.assert_allclose(cmap(0.0)[:3], colormap_rgb("viridis")[0] / 255, atol=1e-6)
    assert not any("too coarse" in t for t in _texts(fig))  # 7x7 localises well enough


def test_coarse_feature_map_warning_is_drawn_on_the_figure():
    image = np.zeros((30, 30, 3), np.uint8)
    fig = figures.panel_figure(image, image, image, "t", feature_map=(3, 3))
    assert "feature map 3×3: too coarse to localise; use a larger image_size" in _texts(fig)
    assert figures.coarse_map_note((7, 7)) is None and figures.coarse_map_note(None) is None
    assert figures.coarse_map_note((6, 9)).startswith("feature map 6×9")


@pytest.fixture(scope="module")
def cnn_explainers():
    """The from-scratch CNN (3 poolings) at 32 px (a 4x4 feature map) and 56 px (7x7)."""
    import keras

    from catdog.gradcam import CamExplainer
    from catdog.models import build_model

    keras.utils.set_random_seed(3)
    return {size: CamExplainer(build_model("simple_cnn", size, weights=None)) for size in (32, 56)}


def test_method_figures_use_labels_colorbar_and_warn_on_coarse_maps(tmp_path, cnn_explainers):
    photos, _ = _photos(1)
    coarse, fine = cnn_explainers[32], cnn_explainers[56]
    assert coarse.feature_map_size == (4, 4) and fine.feature_map_size == (7, 7)
    fig = figures.compare_methods_figure(coarse, photos, colormap="jet", path=tmp_path / "m.png")
    titles = [ax.get_title() for ax in fig.axes]
    assert "Grad-CAM" in titles and "Grad-CAM++" in titles and any(t.startswith("Score-CAM") for t in titles)
    assert not {"gradcam", "gradcampp", "scorecam"} & set(titles)
    assert len(_colorbars(fig)) == 1
    assert "feature map 4×4: too coarse to localise; use a larger image_size" in _texts(fig)

    both = figures.both_classes_figure(fine, photos, method="gradcampp", path=tmp_path / "b.png")
    assert "Grad-CAM++" in both.get_suptitle() and "gradcampp" not in both.get_suptitle()
    assert len(_colorbars(both)) == 1
    assert not any("too coarse" in t for t in _texts(both))
    assert all("%" in ax.get_title() for ax in both.axes[1:3])


def test_explained_figure_titles_use_labels_and_never_say_100_percent(tmp_path):
    from catdog.rendering import save_png

    photo = save_png(tmp_path / "Cat" / "1.png", np.full((20, 20, 3), 90, np.uint8))
    row = {"path": str(photo), "predicted": "cat", "confidence": 0.99997, "method": "gradcampp", "error": ""}
    for kind in ("gray", "heatmap", "overlay"):
        row[kind] = str(save_png(tmp_path / f"{kind}.png", np.zeros((20, 20, 3), np.uint8)))
    fig = figures.explained_figure([row])
    titles = [ax.get_title() for ax in fig.axes] + [ax.get_ylabel() for ax in fig.axes]
    assert "Grad-CAM++ map (gray)" in titles
    assert any("predicted cat (>99%)" in t for t in titles) and not any("100%" in t for t in titles)
