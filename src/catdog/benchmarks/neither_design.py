"""Choosing the "neither" rule on the crosscheck tune half.

A grid over pet branches and threshold rules (:func:`openset_design_search`), and a logistic combination
against the grid's choice, both judged by cross-validation inside the tune half (:func:`openset_logistic_cv`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from sklearn.model_selection import StratifiedKFold

from catdog.benchmarks.common import ModelLike, as_bundle, cost_ratio, machine_environment, write_report
from catdog.benchmarks.crosscheck import (KINDS, NON_PET_PHOTO, openset_scores, rate_with_interval, read_crosscheck,
                                          threshold_detector)
from catdog.benchmarks.speed import REJECTION_BUDGET
from catdog.data import labels_of, read_manifest, seeded_subset
from catdog.images import load_batch
from catdog.inference import KerasRunner, pet_branch
from catdog.openset import RULE_SIGNALS, OpenSetDetector, fit_logistic, fit_openset, rule_signals
from catdog.paths import REPO_ROOT

# ---------------------------------------------------------------- choosing the "neither" rule
CANDIDATE_BRANCHES = (("efficientnet_lite0", 160), ("efficientnet_lite0", 224), ("efficientnet_lite1", 240),
                      ("efficientnet_lite2", 260))
# The rule family searched (see OpenSetDetector.decide): distance threshold quantile, pet_low, pet_high, wild_ratio.
DESIGN_GRID = {"quantile": (0.99, 0.995, 0.998, 1.0), "pet_low": (0.0, 0.003, 0.01, 0.02, 0.05),
               "pet_high": (0.5, 0.7, 0.9, 0.95, 0.99), "wild_ratio": (None, 0.5, 1.0, 2.0, 4.0)}
# The selection rule, fixed before any report-half number: the highest mean of near-miss and non-pet-photo
# (near misses included) rejection on the TUNE half, among rules that reject at most 2% of tune pet photos
# and at most 1% of PetImages VALIDATION photos, with a branch whose measured cost keeps rejection on
# within REJECTION_BUDGET x rejection off.
DESIGN_LIMITS = {"pet photo": 0.02, "PetImages validation": 0.01}
# Where the distance is measured: the trained model's pooled features (what the detector ships with), or the
# frozen branch's own ImageNet features (a detector of the same kind fitted on the same train photos), which
# might generalise beyond PetImages better than fine-tuned ones.
FEATURE_SOURCES = ("classifier", "branch")


def _branch_signals(model: keras.Model, branch: tuple[str, int], batch_size: int = 32
                    ) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """images -> ``pet``, ``wild`` (as prediction computes them) and ``features`` (pooled) through a frozen
    ImageNet branch; the branch is built and traced once, for every set of images it is called on."""
    net = keras.Model(model.inputs[0], pet_branch(model.inputs[0], branch, features=True))
    fn = tf.function(lambda x: net(x, training=False))

    def signals(images: np.ndarray) -> dict[str, np.ndarray]:
        out = [fn(tf.constant(images[i:i + batch_size], tf.float32)) for i in range(0, len(images), batch_size)]
        return {"pet": np.concatenate([o["pet_prob"].numpy().reshape(-1) for o in out]).astype(np.float64),
                "wild": np.concatenate([o["wild_prob"].numpy().reshape(-1) for o in out]).astype(np.float64),
                "features": np.concatenate([o["branch_features"].numpy() for o in out])}
    return signals


def _search_rules(tune: dict[str, np.ndarray], val: dict[str, np.ndarray], kinds: np.ndarray,
                  calibration: np.ndarray | None = None) -> list[dict]:
    """Every rule of :data:`DESIGN_GRID` that keeps :data:`DESIGN_LIMITS`, best first, with its tune-half rates.

    Thresholds are quantiles of the ``calibration`` distances (default: all validation distances),
    computed as :meth:`OpenSetDetector.calibrate` computes them.
    """
    photos = np.isin(kinds, ["near miss", NON_PET_PHOTO])
    calibration = val["distance"] if calibration is None else calibration
    found = []
    for q in DESIGN_GRID["quantile"]:
        threshold = float(np.quantile(calibration, q, method="higher"))
        for low in DESIGN_GRID["pet_low"]:
            for high in [h for h in DESIGN_GRID["pet_high"] if h >= low]:
                for ratio in DESIGN_GRID["wild_ratio"]:
                    rule = threshold_detector(threshold, low, high, ratio)
                    t = rule.decide(tune["distance"], tune["pet"], tune["wild"])
                    v = rule.decide(val["distance"], val["pet"], val["wild"])
                    rates = {kind: float(t[kinds == kind].mean()) for kind in KINDS if (kinds == kind).any()}
                    rates["non-pet photos incl. near misses"] = float(t[photos].mean())
                    rates["PetImages validation"] = float(v.mean())
                    if rates["pet photo"] <= DESIGN_LIMITS["pet photo"] and \
                            rates["PetImages validation"] <= DESIGN_LIMITS["PetImages validation"]:
                        score = (rates["near miss"] + rates["non-pet photos incl. near misses"]) / 2
                        found.append({"score": score, "quantile": q, "pet_low": low, "pet_high": high,
                                      "wild_ratio": ratio, "rates": rates})
    return sorted(found, key=lambda r: -r["score"])


def openset_design_search(model: ModelLike | None = None, out_dir: str | Path | None = None, *,
                          branches: Sequence[tuple[str, int]] = CANDIDATE_BRANCHES, crosscheck: str | Path | None = None,
                          max_val: int | None = None, batch_size: int = 32, overwrite: bool = False,
                          seed: int = 0) -> dict:
    """Choose the "neither" rule on the crosscheck TUNE half and PetImages VALIDATION only; writes
    ``openset_design.{json,md}``.

    For each candidate ImageNet branch and each source of the distance (:data:`FEATURE_SOURCES`): the
    rules of :data:`DESIGN_GRID` that keep :data:`DESIGN_LIMITS`, scored by the selection rule written
    above them, and the measured cost of prediction with that branch (rejection on) over prediction
    without it, at batch 32. The chosen design is the best-scoring one among branches within
    :data:`REJECTION_BUDGET`. The report half and PetImages test are never read here:
    :func:`openset_report` reports the chosen rule on them.
    """
    bundle = as_bundle(model)
    out_dir = Path(out_dir) if out_dir else REPO_ROOT / "reports" / "benchmarks"
    if not overwrite and (out_dir / "openset_design.json").exists():
        raise FileExistsError(f"{out_dir} already holds an open-set design search (pass overwrite=True)")
    manifest = bundle.require_manifest()
    detector = bundle.detector or fit_openset(bundle.path, manifest, save=False)
    fitted = {"max_train": detector.info.get("max_train"), "max_val": detector.info.get("max_val"),
              "seed": detector.info.get("seed", 0)}
    cross = [r for r in read_crosscheck(crosscheck) if r["half"] == "tune"]
    val_items = seeded_subset(read_manifest(manifest, "validation"), max_val, seed)
    # the photos the detector is fitted and calibrated on (fit_openset's seeded subsets), so thresholds are as fitted
    train_items = seeded_subset(read_manifest(manifest, "train"), fitted["max_train"], fitted["seed"])
    calibrating = {str(Path(i.path)) for i in seeded_subset(read_manifest(manifest, "validation"),
                                                            fitted["max_val"], fitted["seed"])}
    batches = {"tune": load_batch([r["path"] for r in cross], bundle.image_size),
               "val": load_batch([i.path for i in val_items], bundle.image_size),
               "train": load_batch([i.path for i in train_items], bundle.image_size)}
    kind_of = {Path(r["path"]): r["kind"] for r in cross}
    kinds = np.array([kind_of[p] for p in batches["tune"].paths])
    in_calibration = np.array([str(p) in calibrating for p in batches["val"].paths])
    label_of = {str(Path(i.path)): i for i in train_items}
    train_labels = labels_of([label_of[str(p)] for p in batches["train"].paths])
    runner = bundle.runner

    def classifier_features(images: np.ndarray) -> np.ndarray:
        return np.concatenate([runner.predict(images[i:i + batch_size])["features"]
                               for i in range(0, len(images), batch_size)])

    classifier_distance = {k: detector.score(classifier_features(batches[k].inputs)) for k in ("tune", "val")}
    timing = batches["tune"].inputs[:32].astype(np.float32)
    candidates = []
    for branch in branches:
        signals_of = _branch_signals(bundle.model, branch, batch_size)
        signals = {k: signals_of(batches[k].inputs) for k in ("tune", "val", "train")}
        with_branch = KerasRunner(bundle.model, branch=branch)
        cost = cost_ratio(lambda b: bundle.predict(b, reject=False),
                          lambda b: detector.score(with_branch.predict(b)["features"]), timing)
        frozen = OpenSetDetector.fit(signals["train"]["features"], train_labels)
        distance = {"classifier": classifier_distance,
                    "branch": {k: frozen.score(signals[k]["features"]) for k in ("tune", "val")}}
        for source in FEATURE_SOURCES:
            tune, val = ({"distance": distance[source][k], "pet": signals[k]["pet"], "wild": signals[k]["wild"]}
                         for k in ("tune", "val"))
            rules = _search_rules(tune, val, kinds, distance[source]["val"][in_calibration])
            candidates.append({"branch": list(branch), "features": source, "cost_ratio": round(cost, 3),
                               "n_rules_within_limits": len(rules), "best": rules[0] if rules else None,
                               "best_without_wild": next((r for r in rules if r["wild_ratio"] is None), None)})
    eligible = [c for c in candidates if c["best"] and c["cost_ratio"] <= REJECTION_BUDGET]
    chosen = max(eligible, key=lambda c: c["best"]["score"]) if eligible else None
    result = {"model": str(bundle.path), "grid": {k: list(v) for k, v in DESIGN_GRID.items()},
              "feature_sources": FEATURE_SOURCES, "limits": DESIGN_LIMITS, "budget": REJECTION_BUDGET,
              "n_tune": int(len(kinds)), "n_tune_by_kind": {k: int((kinds == k).sum()) for k in KINDS},
              "n_validation": int(len(batches["val"].paths)), "n_calibration": int(in_calibration.sum()),
              "n_train": int(len(train_labels)), "candidates": candidates,
              "chosen": ({"branch": chosen["branch"], "features": chosen["features"], **chosen["best"]}
                         if chosen else None),
              "environment": machine_environment(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_report(out_dir, "openset_design", result, _design_markdown(result))
    return result


def _rule_cells(rule: dict | None) -> str:
    if rule is None:
        return "| – | – | – | – | – | – | – | – |"
    r = rule["rates"]
    ratio = "–" if rule["wild_ratio"] is None else f"{rule['wild_ratio']:g}"
    return (f"| {rule['quantile']:g} | {rule['pet_low']:g} | {rule['pet_high']:g} | {ratio} | {r['pet photo']:.1%} "
            f"| {r['near miss']:.1%} | {r['non-pet photos incl. near misses']:.1%} | {r['PetImages validation']:.1%} |")


def _design_markdown(result: dict) -> str:
    chosen = result["chosen"]
    lines = ["# Choosing the \"neither\" rule (crosscheck tune half, PetImages validation)", "",
             f"Model `{Path(result['model']).name}`. Rule family: `neither = pet_prob < pet_low or (pet_prob < pet_high "
             "and distance > threshold) or wild_prob > wild_ratio x pet_prob`, threshold = a quantile of the distances "
             f"of the {result['n_calibration']} PetImages validation photos the detector calibrates on. The distance "
             "is measured on the trained model's pooled features (`classifier`) or on the frozen branch's ImageNet "
             f"features (`branch`, a detector of the same kind fitted on the same {result['n_train']} train photos). "
             "Selection rule, fixed before any report-half number: the highest mean of "
             "near-miss and non-pet-photo rejection on the tune half, among rules rejecting at most "
             f"{result['limits']['pet photo']:.0%} of tune pet photos and {result['limits']['PetImages validation']:.0%} "
             f"of PetImages validation photos, with a branch costing at most {result['budget']}x prediction without "
             f"it. {result['n_tune']} tune images ({', '.join(f'{k} {n}' for k, n in result['n_tune_by_kind'].items())}),"
             f" {result['n_validation']} validation photos. The report half is read only by `openset.md`.", "",
             "| branch | distance on | cost (x without) | rules within limits | best rule | quantile | pet_low | pet_high "
             "| wild_ratio | pet photos rejected | near misses | non-pet photos | PetImages val |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in result["candidates"]:
        name = f"{c['branch'][0]} @ {c['branch'][1]} px | {c['features']}"
        lines.append(f"| {name} | {c['cost_ratio']:.2f} | {c['n_rules_within_limits']} | best "
                     + _rule_cells(c["best"]))
        lines.append(f"| {name} | | | best without the wild rule " + _rule_cells(c["best_without_wild"]))
    lines.append("")
    if chosen:
        lines.append(f"Chosen: {chosen['branch'][0]} at {chosen['branch'][1]} px, distance on the "
                     f"{chosen['features']} features, quantile {chosen['quantile']:g}, pet_low {chosen['pet_low']:g}, "
                     f"pet_high {chosen['pet_high']:g}, wild_ratio {chosen['wild_ratio']}. These are "
                     "`catdog.openset`'s defaults.")
    else:
        lines.append("No candidate keeps the limits within the cost budget.")
    env = result["environment"]
    lines.append(f"\nCost measured on {env['cpu_count']} CPU cores, 1-min load average {env['load_average_1min']}.")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- a logistic combination, cross-validated
LOGISTIC_FOLDS = 5


def cross_validate_designs(tune: dict[str, np.ndarray], kinds: np.ndarray, petimages: dict[str, np.ndarray], *,
                           folds: int = LOGISTIC_FOLDS, seed: int = 0) -> dict[str, np.ndarray]:
    """Held-out decisions of the grid rule and the logistic design on every tune photo.

    ``tune`` and ``petimages`` hold ``distance``, ``z`` (:meth:`OpenSetDetector.relative_distance`), ``pet`` and
    ``wild`` per photo; ``petimages`` are the detector's calibration photos (the distance threshold's quantiles
    and the 1% limit), used whole in every fold. The tune photos are split in ``folds`` folds stratified by
    kind; each fold's photos are decided by the grid rule (:func:`_search_rules`, best first) and by
    :func:`catdog.openset.fit_logistic`, each chosen on the other folds. Returns
    ``{"grid": rejected, "logistic": rejected}``, boolean arrays in tune order.
    """
    out = {"grid": np.zeros(len(kinds), bool), "logistic": np.zeros(len(kinds), bool)}
    x, x_petimages = _logistic_rows(tune), _logistic_rows(petimages)
    splits = StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(kinds)), kinds)
    for chosen_on, held_out in splits:
        part = {name: values[chosen_on] for name, values in tune.items()}
        rules = _search_rules(part, petimages, kinds[chosen_on], petimages["distance"])
        if not rules:
            raise ValueError("no rule of the grid keeps the limits on the tune folds")
        best = rules[0]
        threshold = float(np.quantile(petimages["distance"], best["quantile"], method="higher"))
        out["grid"][held_out] = threshold_detector(threshold, best["pet_low"], best["pet_high"], best["wild_ratio"]).decide(
            *(tune[name][held_out] for name in ("distance", "pet", "wild")))
        pets = chosen_on[kinds[chosen_on] == "pet photo"]
        non_pets = chosen_on[np.isin(kinds[chosen_on], ["near miss", NON_PET_PHOTO])]
        weights, bias = fit_logistic(x[pets], x[non_pets], x_petimages, max_pets=DESIGN_LIMITS["pet photo"],
                                     max_petimages=DESIGN_LIMITS["PetImages validation"])
        out["logistic"][held_out] = x[held_out] @ np.asarray(weights) + bias > 0
    return out


def _logistic_rows(signals: dict[str, np.ndarray]) -> np.ndarray:
    """:func:`catdog.openset.rule_signals` of photos' ``z``, ``pet`` and ``wild``, as the detector computes them."""
    return rule_signals(signals["z"], signals["pet"], signals["wild"])


def _design_rates(rejected: np.ndarray, kinds: np.ndarray) -> dict[str, Any]:
    """Rates per kind, non-pet photos incl. near misses, and the round-3 score, with exact intervals."""
    rates = {kind: rate_with_interval(int(rejected[kinds == kind].sum()), int((kinds == kind).sum())) for kind in KINDS}
    photos = np.isin(kinds, ["near miss", NON_PET_PHOTO])
    rates["non-pet photos incl. near misses"] = rate_with_interval(int(rejected[photos].sum()), int(photos.sum()))
    rates["score"] = (rates["near miss"]["rate"] + rates["non-pet photos incl. near misses"]["rate"]) / 2
    return rates


def openset_logistic_cv(model: ModelLike | None = None, out_dir: str | Path | None = None, *,
                        crosscheck: str | Path | None = None, folds: int = LOGISTIC_FOLDS, seed: int = 0,
                        batch_size: int = 32, overwrite: bool = False, progress: bool = True) -> dict:
    """The logistic combination against the grid rule, cross-validated on the crosscheck TUNE half; writes
    ``openset_logistic_cv.{json,md}``. Decision rule (reports/NEITHER_DESIGN.md, round 4): the logistic design
    wins only with a higher cross-validated score and a pet-photo rate no higher. The report half is not read."""
    bundle = as_bundle(model)
    out_dir = Path(out_dir) if out_dir else REPO_ROOT / "reports" / "benchmarks"
    if not overwrite and (out_dir / "openset_logistic_cv.json").exists():
        raise FileExistsError(f"{out_dir} already holds openset_logistic_cv.json (pass overwrite=True)")
    detector = bundle.detector
    if detector is None or detector.branch is None:
        raise ValueError(f"{bundle.path}: the comparison needs a 'neither' detector with a pet branch")
    cross = [r for r in read_crosscheck(crosscheck) if r["half"] == "tune"]
    calibration = seeded_subset(read_manifest(bundle.require_manifest(), "validation"),
                                detector.info.get("max_val"), detector.info.get("seed", 0))

    def signals(paths: list[str]) -> tuple[dict[str, np.ndarray], list[int]]:
        rows = openset_scores(bundle, paths, batch_size, progress)
        kept = [k for k, row in enumerate(rows) if not row["error"]]
        out = {name: np.array([rows[k][key] for k in kept], np.float64)
               for name, key in (("distance", "ood_score"), ("pet", "pet_prob"), ("wild", "wild_prob"))}
        return out | {"z": detector.relative_distance(out["distance"])}, kept

    tune, kept = signals([r["path"] for r in cross])
    kinds = np.array([cross[k]["kind"] for k in kept])
    petimages, _ = signals([i.path for i in calibration])
    decisions = cross_validate_designs(tune, kinds, petimages, folds=folds, seed=seed)
    designs = {name: _design_rates(rejected, kinds) for name, rejected in decisions.items()}
    grid, logistic = designs["grid"], designs["logistic"]
    wins = logistic["score"] > grid["score"] and logistic["pet photo"]["rate"] <= grid["pet photo"]["rate"]
    # what ships if the logistic design wins: refitted on the whole tune half
    x = _logistic_rows(tune)
    weights, bias = fit_logistic(x[kinds == "pet photo"], x[np.isin(kinds, ["near miss", NON_PET_PHOTO])],
                                 _logistic_rows(petimages), max_pets=DESIGN_LIMITS["pet photo"],
                                 max_petimages=DESIGN_LIMITS["PetImages validation"])
    result = {"model": str(bundle.path), "rule": detector.rule_text(), "signals": list(RULE_SIGNALS),
              "folds": folds, "seed": seed, "limits": DESIGN_LIMITS, "n_tune": int(len(kinds)),
              "n_petimages_calibration": int(len(petimages["distance"])), "designs": designs,
              "logistic_wins": bool(wins), "whole_tune_half_fit": {"weights": list(weights), "bias": bias},
              "environment": machine_environment(),
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_report(out_dir, "openset_logistic_cv", result, _logistic_cv_markdown(result))
    return result


def _logistic_cv_markdown(result: dict) -> str:
    columns = ["pet photo", "near miss", "non-pet photos incl. near misses", NON_PET_PHOTO, "pet drawing",
               "low-res pet"]
    lines = [f"# \"Neither\": a logistic combination against the grid rule ({result['folds']}-fold cross-validation, "
             "tune half)", "",
             f"Every one of the {result['n_tune']} readable photos of crosscheck's **tune** half is decided by each "
             "design as chosen on the other folds (stratified by kind, seed "
             f"{result['seed']}); the {result['n_petimages_calibration']} PetImages calibration photos take part in "
             "every fold. Grid: the round-3 search over `DESIGN_GRID` within the limits "
             f"({result['limits']}). Logistic: `LogisticRegression` on {', '.join(result['signals'])}, pet photos "
             "and PetImages (0) against near misses and non-pet photos (1), cut at the limits. The report half is "
             "not read. Rule, written before these numbers (reports/NEITHER_DESIGN.md, round 4): the logistic "
             "design wins only with a higher score (mean of near-miss and non-pet-photo rejection) and a pet-photo "
             "rate no higher.", "",
             "| design | score | " + " | ".join(columns) + " |", "|---|---:|" + "---:|" * len(columns)]
    for name, rates in result["designs"].items():
        cells = [f"{rates[c]['rate']:.1%} ({rates[c]['rejected']}/{rates[c]['n']})" for c in columns]
        lines.append(f"| {name} | {rates['score']:.3f} | " + " | ".join(cells) + " |")
    verdict = ("**The logistic design wins** by the rule." if result["logistic_wins"]
               else "**The grid rule stays**: the logistic design does not win by the rule.")
    fit = result["whole_tune_half_fit"]
    terms = " ".join(f"{w:+.4g} x {name}" for w, name in zip(fit["weights"], result["signals"]))
    lines += ["", verdict, "", f"Logistic design refitted on the whole tune half: neither when {terms} "
              f"{fit['bias']:+.4g} > 0 (z: the distance relative to the model's own calibration, 0 at the median of "
              "its validation distances, 1 at its threshold).", "",
              f"Rule of the detector this ran with: {result['rule']}.", ""]
    return "\n".join(lines)
