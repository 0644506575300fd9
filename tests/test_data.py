"""Dataset discovery in every layout, scanning with a skipped-file report, splits and manifests."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

import catdog.data as data
from catdog.data import DatasetError, discover, prepare, read_manifest, scan, split
from conftest import make_bad_files, real_photos


def _copy(photos: list[Path], dest: Path, name=lambda p: p.name) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for p in photos:
        shutil.copy(p, dest / name(p))


def _labels(items) -> Counter:
    return Counter(i.label for i in items)


# ---------------------------------------------------------------- layouts
@pytest.mark.parametrize("cat_name, dog_name", [("Cat", "Dog"), ("cats", "dogs"), ("CAT", "dog")])
def test_class_per_folder_any_case(tmp_path, cat_name, dog_name):
    _copy(real_photos("cat", 3), tmp_path / cat_name)
    _copy(real_photos("dog", 4), tmp_path / dog_name)
    items = discover(tmp_path)
    assert _labels(items) == {"cat": 3, "dog": 4}
    assert all(i.split is None for i in items)


def test_class_folders_one_level_down(tmp_path):
    _copy(real_photos("cat", 2), tmp_path / "PetImages" / "Cat")
    _copy(real_photos("dog", 2), tmp_path / "PetImages" / "Dog")
    assert _labels(discover(tmp_path)) == {"cat": 2, "dog": 2}


def test_train_test_validation_layout_keeps_explicit_splits(tmp_path):
    for s, n in (("train", 6), ("validation", 2), ("test", 3)):
        _copy(real_photos("cat", n, start=10 * len(s)), tmp_path / s / "cat")
        _copy(real_photos("dog", n, start=10 * len(s)), tmp_path / s / "dog")
    items = discover(tmp_path)
    assert Counter(i.split for i in items) == {"train": 12, "validation": 4, "test": 6}
    result = split(scan(tmp_path, progress=False), seed=1)
    by_path = {i.path: i.split for i in result}
    assert all(by_path[i.path] == i.split for i in items if i.split in ("test", "validation"))
    assert Counter(i.split for i in result)["train"] == 12


def test_kaggle_flat_layout(tmp_path):
    _copy(real_photos("cat", 3), tmp_path / "train", name=lambda p: f"cat.{p.stem}.jpg")
    _copy(real_photos("dog", 2), tmp_path / "train", name=lambda p: f"dog.{p.stem}.jpg")
    items = discover(tmp_path)
    assert _labels(items) == {"cat": 3, "dog": 2}
    assert all(i.split is None for i in items)  # Kaggle's train/ alone is not a split


def test_one_class_only_is_a_clear_error(tmp_path):
    _copy(real_photos("cat", 3), tmp_path / "Cat")
    (tmp_path / "Dog").mkdir()  # empty class folder
    with pytest.raises(DatasetError, match="no images of class 'dog'"):
        discover(tmp_path)


def test_no_layout_is_a_clear_error(tmp_path):
    (tmp_path / "holiday").mkdir()
    with pytest.raises(DatasetError, match="no cat/dog images found"):
        discover(tmp_path)
    with pytest.raises(DatasetError, match="not found"):
        discover(tmp_path / "missing")


# ---------------------------------------------------------------- scanning
def test_scan_skips_bad_files_with_reasons_and_keeps_odd_good_ones(class_folders, tmp_path):
    bad = make_bad_files(class_folders / "Cat")
    result = scan(class_folders, progress=False)
    skipped = {Path(s["path"]).name: s["reason"] for s in result.skipped}
    assert set(skipped) == {"zero.jpg", "corrupt.jpg", "truncated.jpg", "notes.jpg", "Thumbs.db"}
    assert "empty file" in skipped["zero.jpg"] and "not an image" in skipped["Thumbs.db"]
    kept = {Path(i.path).name for i in result.items}
    assert {"alpha.png", "gray.jpg", "cmyk.jpg", "palette.gif", "tiny.png", "photo.webp", "rotated.jpg",
            bad["non_ascii"].name} <= kept
    report = result.write_skipped(tmp_path / "skipped.csv").read_text(encoding="utf-8")
    assert "zero.jpg" in report and "reason" in report.splitlines()[0]


def test_second_scan_uses_the_cache(class_folders, monkeypatch):
    first = scan(class_folders, progress=False)
    calls = []
    monkeypatch.setattr(data, "probe", lambda p: calls.append(p))
    second = scan(class_folders, progress=False)
    assert calls == [] and second.items == first.items
    (class_folders / "Cat" / sorted(p.name for p in (class_folders / "Cat").iterdir())[0]).touch()
    scan(class_folders, progress=False)
    assert len(calls) == 1  # only the changed file is decoded again


def test_scan_never_modifies_the_data(class_folders):
    make_bad_files(class_folders / "Dog")
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in class_folders.rglob("*")}
    scan(class_folders, progress=False)
    assert before == {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in class_folders.rglob("*")}


# ---------------------------------------------------------------- splitting
@pytest.fixture
def dataset_with_duplicates(tmp_path) -> Path:
    root = tmp_path / "pets"
    _copy(real_photos("cat", 40), root / "Cat")
    _copy(real_photos("dog", 40), root / "Dog")
    for k in range(5):  # byte-identical copies under new names, one crossing classes
        shutil.copy(root / "Cat" / real_photos("cat", 40)[k].name, root / "Cat" / f"dup{k}.jpg")
    shutil.copy(root / "Cat" / real_photos("cat", 40)[7].name, root / "Dog" / "crossdup.jpg")
    return root


def test_split_is_deterministic_stratified_and_keeps_duplicates_together(dataset_with_duplicates):
    result = scan(dataset_with_duplicates, progress=False)
    a = split(result, val_fraction=0.2, test_fraction=0.2, seed=3)
    b = split(result, val_fraction=0.2, test_fraction=0.2, seed=3)
    c = split(result, val_fraction=0.2, test_fraction=0.2, seed=4)
    assert a == b and a != c
    assert len(a) == len(result.items)
    for s, share in (("train", 0.6), ("validation", 0.2), ("test", 0.2)):
        for label in ("cat", "dog"):
            n_class = sum(i.label == label for i in a)
            n = sum(i.label == label and i.split == s for i in a)
            assert abs(n - share * n_class) <= 3, (s, label, n)
    split_of = {i.path: i.split for i in a}
    groups: dict[str, set] = {}
    for path, digest in result.hashes.items():
        groups.setdefault(digest, set()).add(split_of[path])
    assert sum(len(g) > 1 for g in groups.values()) == 0
    assert max(Counter(result.hashes.values()).values()) == 2  # the duplicates were really there


def test_bad_fractions_are_rejected(dataset_with_duplicates):
    with pytest.raises(ValueError, match="fractions"):
        split(scan(dataset_with_duplicates, progress=False), val_fraction=0.6, test_fraction=0.5)


def test_prepare_writes_manifest_report_and_summary(dataset_with_duplicates, tmp_path):
    make_bad_files(dataset_with_duplicates / "Dog")
    out = tmp_path / "run"
    summary = prepare(dataset_with_duplicates, out, seed=0)
    items = read_manifest(out / "manifest.csv")
    assert len(items) == summary["n_images"] and summary["n_skipped"] == 5
    assert summary["duplicate_groups"] == 6
    assert set(summary["counts"]) == {"train", "validation", "test"}
    assert (out / "skipped.csv").read_text().count("\n") == 6
    assert read_manifest(out / "manifest.csv", "test") == [i for i in items if i.split == "test"]
    again = prepare(dataset_with_duplicates, tmp_path / "run2", seed=0)
    assert again["manifest_sha256"] == summary["manifest_sha256"]


def test_prepare_subset_is_balanced(dataset_with_duplicates, tmp_path):
    summary = prepare(dataset_with_duplicates, tmp_path / "small", max_per_class=10)
    assert summary["n_images"] == 20


def test_bad_manifest_is_a_clear_error(tmp_path):
    bad = tmp_path / "m.csv"
    bad.write_text("path,label,split\nx.jpg,horse,train\n")
    with pytest.raises(DatasetError, match="line 2"):
        read_manifest(bad)
    with pytest.raises(DatasetError, match="not found"):
        read_manifest(tmp_path / "nope.csv")


# ---------------------------------------------------------------- file hashes
def test_a_file_is_read_once_per_version_for_its_hash(tmp_path, monkeypatch):
    """Loading a model checks its detector, export and runners against one hash: the bytes are read once,
    and read again as soon as the file changes (even in place, to the same size)."""
    import builtins
    import hashlib
    import os

    from catdog import paths

    reads = []

    def counting_open(file, *args, **kwargs):
        reads.append(Path(file).name)
        return builtins.open(file, *args, **kwargs)

    monkeypatch.setattr(paths, "open", counting_open, raising=False)
    model = tmp_path / "model.keras"
    model.write_bytes(b"first version")
    monkeypatch.chdir(tmp_path)
    for name in (model, str(model), "model.keras", "./model.keras"):
        assert paths.file_sha256(name) == hashlib.sha256(b"first version").hexdigest()
    assert reads == ["model.keras"]

    with open(model, "r+b") as f:  # same inode, same size
        f.write(b"FIRST")
    assert paths.file_sha256(model) == hashlib.sha256(b"FIRST version").hexdigest()
    replacement = tmp_path / "new.keras"
    replacement.write_bytes(b"other version")
    os.replace(replacement, model)
    assert paths.file_sha256(model) == hashlib.sha256(b"other version").hexdigest()
    assert len(reads) == 3
