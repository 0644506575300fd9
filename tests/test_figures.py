"""Tests for catdog.figures: every figure function returns a Figure and writes a non-empty PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
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
