"""The ``catdog`` command line: thin wrappers around the library (every command is one call)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from catdog import paths
from catdog.conventions import DEFAULT_TFLITE_VARIANTS, TFLITE_VARIANTS
from catdog.runs import DEFAULT_REPORTS


def _data(args: argparse.Namespace) -> int:
    if args.data_command == "fetch":
        from catdog.fetch import fetch_data

        mode = "copy" if args.copy else "download" if args.download else "link"
        dest = fetch_data(args.dest, mirror=args.mirror, url=args.url, mode=mode, force=args.force)
        print(dest)
    else:
        from catdog.data import prepare

        summary = prepare(args.root or paths.default_data_dir(), args.out, val_fraction=args.val,
                          test_fraction=args.test, seed=args.seed, max_per_class=args.max_per_class,
                          force=args.force)
        print(json.dumps(summary, indent=2))
    return 0


def _train(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from catdog.pipeline import load_yaml
    from catdog.training import TrainConfig, train_recipe

    # the options given (argparse leaves the others None), parsed like every notebook parameter
    names = {f.name for f in fields(TrainConfig)}
    params = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if args.no_augment:
        params["augment"] = False
    members = [load_yaml(text) for text in args.member or []]
    result = train_recipe(args.manifest, args.run_dir, TrainConfig.from_params(**params), members)
    print(result.model_path)
    print(json.dumps(result.card.metrics.get("test", {}), indent=2))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from catdog.evaluation import evaluate

    out = evaluate(args.model, args.manifest, split=args.split, out_parent=args.out, heatmaps=not args.no_heatmaps,
                   image_size=args.image_size)
    print(out)
    print((out / "metrics.json").read_text())
    return 0


def _compare(args: argparse.Namespace) -> int:
    from catdog.evaluation import compare_models

    out = compare_models(args.models, args.manifest, splits=args.split, out_parent=args.out)
    print(out)
    print((out / "comparison.md").read_text())
    return 0


def _all_unreadable(n_rows: int, n_errors: int) -> int:
    """Exit status: 1 (with a message) when there were inputs and none of them could be read."""
    if n_rows and n_errors == n_rows:
        print(f"catdog: error: none of the {n_rows} input file(s) could be read (see the error column)",
              file=sys.stderr)
        return 1
    return 0


def _predict_merge(args: argparse.Namespace) -> int:
    from catdog.predict import merge_shards

    defaults = vars(build_parser().parse_args(["predict", "merge"]))
    given = [f"--{name.replace('_', '-')}" for name, value in defaults.items()
             if name not in ("command", "verbose", "paths", "func") and getattr(args, name) != value]
    if given:
        raise ValueError(f"catdog predict merge OUT.csv SHARD.csv... takes no {', '.join(given)}")
    if len(args.paths) < 3:
        raise ValueError("catdog predict merge needs the new CSV and every shard's CSV: "
                         "catdog predict merge OUT.csv SHARD.csv...")
    out = merge_shards(args.paths[1], args.paths[2:])
    print(f"wrote {out} from {len(args.paths) - 2} shard(s)", file=sys.stderr)
    return 0


def _predict(args: argparse.Namespace) -> int:
    if args.paths[0] == "merge":  # as typed: a folder named merge is given as ./merge
        return _predict_merge(args)
    import csv

    from catdog.bundle import Bundle
    from catdog.predict import COLUMNS, Predictor, csv_row, iter_image_files, parse_shard, predict_to_csv, shard_files

    shard = parse_shard(args.shard) if args.shard is not None else None
    bundle = Bundle.load(args.model, engine=args.engine, variant=args.variant)
    if bundle.engine == "keras" and not args.verbose:  # a current TFLite export runs without TensorFlow
        quiet_tensorflow()
    options = dict(model=bundle, reject=not args.no_reject, batch_size=args.batch_size)
    if args.out is None:  # stream rows to stdout
        if args.resume:
            raise ValueError("--resume needs --out (the CSV file to continue)")
        iter_image_files(args.paths)  # bad arguments fail before any output
        rows = Predictor(**options).predict_paths(shard_files(args.paths, shard))
        writer = csv.DictWriter(sys.stdout, fieldnames=COLUMNS, extrasaction="ignore")
        n_rows = n_errors = 0
        for row in rows:
            if not n_rows:  # the header only once a row exists: a failing run prints no half table
                writer.writeheader()
            writer.writerow(csv_row(row))
            n_rows, n_errors = n_rows + 1, n_errors + (row["label"] == "error")
        return _all_unreadable(n_rows, n_errors)
    out = predict_to_csv(args.paths, args.out, resume=args.resume, shard=shard, **options)
    print(f"wrote {out}", file=sys.stderr)
    with open(out, newline="", encoding="utf-8") as f:
        labels = [row.get("label") for row in csv.DictReader(f)]
    return _all_unreadable(len(labels), labels.count("error"))


def _explain(args: argparse.Namespace) -> int:
    from catdog.explain import explain_paths

    rows = explain_paths(args.model, args.paths, args.out, method=args.method, target=args.target,
                         colormap=args.colormap, alpha=args.alpha)
    bad = [r for r in rows if r.get("error")]  # each was already logged as "skipped <path>: <reason>"
    print(f"wrote panels for {len(rows) - len(bad)} images to {args.out}"
          + (f" ({len(bad)} unreadable, skipped)" if bad else ""))
    return _all_unreadable(len(rows), len(bad))


def _export(args: argparse.Namespace) -> int:
    from catdog.export import export_tflite

    for variant, path in export_tflite(args.model or paths.default_model_path(), args.out,
                                       variants=tuple(args.variants)).items():
        print(f"{variant}: {path}")
    return 0


def _pipeline(args: argparse.Namespace) -> int:
    from catdog.pipeline import parse_cli_params, run_grid, run_pipeline

    params = parse_cli_params(args.param or [], args.config)
    if args.grid:
        table = run_grid(args.grid, base_params=params, reports_dir=args.reports, quick=args.quick,
                         sort_by=args.sort_by, name=args.name, notebooks=args.only)
        print(table)
    else:
        run_dir = run_pipeline(params, reports_dir=args.reports, name=args.name, quick=args.quick,
                               notebooks=args.only)
        print(run_dir)
    return 0


def _bench(args: argparse.Namespace) -> int:
    if args.which == "demo":  # the web page's upload-to-result time, through its own HTTP API
        from catdog.demo import latency_benchmark

        result = latency_benchmark(args.model, args.out)
    else:
        from catdog import benchmarks

        result = benchmarks.run(args.which, model_path=args.model, out_dir=args.out, n_images=args.n_images,
                                against=args.against)
    print(json.dumps(result, indent=2))
    return 0


def _ensemble(args: argparse.Namespace) -> int:
    from catdog.training import build_ensemble

    result = build_ensemble(args.models, args.out, args.manifest, openset_images=args.openset_images,
                            float16_weights=args.float16_weights)
    print(result.model_path)
    print(json.dumps(result.card.metrics["test"], indent=2))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from catdog.demo import launch

    launch(args.model, args.host, args.port)
    return 0


# catdog.models.BACKBONES, spelled out so `catdog --help` needs no TensorFlow (a test keeps them equal).
BACKBONES = ("mobilenet_v2", "inception_v3", "simple_cnn", "efficientnet_lite0", "efficientnet_lite1",
             "efficientnet_lite2")
DISTRIBUTIONS = ("none", "mirrored", "multiworker")  # catdog.training.DISTRIBUTIONS, likewise
PREDICT_EPILOG = """examples:
  catdog predict photos/ --out predictions.csv --resume
  catdog predict photos/ --shard 2/8 --out shard-2.csv --resume     # one of 8 jobs (e.g. a Slurm array task)
  catdog predict merge predictions.csv shard-*.csv                  # then join all 8

--engine auto (the default) runs MODEL.float32.tflite when a current one sits beside the model
(`catdog export --variants float32`; `make` writes the shipped model's), else the Keras model: the same
answers either way (p(dog) within 1e-4); the TFLite file runs about 2x faster on CPU and starts without
TensorFlow (one photo: under 2 s instead of about 10).

--shard K/N predicts only the files whose path relative to the folder given hashes (SHA-1) to shard K,
so the N shards never overlap, and every rerun, on any machine, picks the same files. With --out it
also writes OUT.shard.json: the shard, the inputs and how many files the shard has.

`catdog predict merge OUT.csv SHARD.csv...` joins the CSVs of all N shards into OUT (sorted by path;
OUT must not exist and appears whole or not at all). From each CSV's .shard.json it checks first:
identical headers, one job (same N, same inputs), every shard 1..N given exactly once, every row in
the shard its path hashes to and no path twice, and each shard finished (as many rows as files).
"merge" is only a command as the first path: a folder named merge is given as ./merge.
"""

EXAMPLES = """examples (one per command):
  catdog data fetch                                  # link data/PetImages to the local mirror
  catdog data prepare --out data/prepared            # scan, clean and split into data/prepared/manifest.csv
  catdog train --manifest data/prepared/manifest.csv --run-dir runs/mine
  catdog evaluate --model runs/mine/model.keras      # metrics and figures in runs/evaluations/<new>/
  catdog compare models/a.keras models/b.keras       # same images, 95% intervals, McNemar
  catdog ensemble a.keras b.keras --out ab.keras     # one model: the mean of their calibrated logits
  catdog predict photos/ --out predictions.csv       # one CSV row per image; --resume continues it
  catdog explain photos/cat.jpg --out explained/     # Grad-CAM gray map, heatmap, overlay and panel PNGs
  catdog export --variants float32 int8              # TensorFlow Lite files beside the model
  catdog pipeline --quick -p image_size 128          # notebooks 01-05 into runs/<new>/
  catdog bench inference                             # results in reports/benchmarks/
"""


TRAIN_DEFAULT = "(default: the training default)"  # replaced by TrainConfig's value when help is shown


def _layer_count(text: str) -> int | str:
    """``--finetune-layers``: a count >= 0, or ``all`` (TrainConfig.from_params reads it as None)."""
    if text.strip().lower() == "all":
        return "all"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'all', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a count >= 0 or 'all', got {value}")
    return value


class _TrainHelp(argparse.RawDescriptionHelpFormatter):
    """Shows :class:`~catdog.training.TrainConfig`'s own defaults in ``catdog train --help``.

    The options default to None (= "use TrainConfig's value"), so argparse alone would print
    None; the real values are looked up only when help is printed, because importing
    ``catdog.training`` loads TensorFlow, which every other command would then pay for.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if TRAIN_DEFAULT in text:
            quiet_tensorflow()
            from catdog.training import TrainConfig

            value = getattr(TrainConfig(), action.dest, None)
            shown = json.dumps(value) if isinstance(value, dict) else value
            text = text.replace(TRAIN_DEFAULT, f"(default: {shown})".replace("%", "%%"))
        return text


def _sub(sub, name: str, help_text: str, example: str,
         formatter: type[argparse.HelpFormatter] = argparse.RawDescriptionHelpFormatter) -> argparse.ArgumentParser:
    """A sub-command whose ``--help`` ends with an example and shows every default."""
    return sub.add_parser(name, help=help_text, description=help_text.replace("%%", "%"), epilog=f"example:\n  {example}",
                          formatter_class=formatter)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every ``catdog`` sub-command (every argument has a help text with its default)."""
    p = argparse.ArgumentParser(prog="catdog", description=__doc__, epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true", help="log more (default: %(default)s)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = _sub(sub, "data", "get and prepare the dataset", "catdog data prepare --out data/prepared")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    fetch = _sub(dsub, "fetch", "fill data/PetImages from a local mirror or the official archive",
                 "catdog data fetch --copy")
    fetch.add_argument("--dest", type=Path, help="target folder (default: $CATDOG_DATA_DIR or data/PetImages)")
    fetch.add_argument("--mirror", type=Path, help="local PetImages copy (default: $CATDOG_DATA_MIRROR or ../shared)")
    fetch.add_argument("--copy", action="store_true", help="copy the mirror instead of linking it (default: %(default)s)")
    fetch.add_argument("--download", action="store_true",
                       help="ignore any mirror and download the archive (default: %(default)s)")
    fetch.add_argument("--url", default=None, help="archive URL (default: Microsoft's)")
    fetch.add_argument("--force", action="store_true", help="replace an existing dataset folder (default: %(default)s)")
    prep = _sub(dsub, "prepare", "scan, clean and split a dataset into a manifest",
                "catdog data prepare data/PetImages --out data/prepared --max-per-class 500")
    prep.add_argument("root", nargs="?", type=Path, help="dataset folder (default: $CATDOG_DATA_DIR or data/PetImages)")
    prep.add_argument("--out", type=Path, required=True,
                      help="folder for manifest.csv, skipped.csv, dataset.json (required)")
    prep.add_argument("--val", type=float, default=0.15, help="validation fraction (default: %(default)s)")
    prep.add_argument("--test", type=float, default=0.15, help="test fraction (default: %(default)s)")
    prep.add_argument("--seed", type=int, default=42, help="seed of the subset and the split (default: %(default)s)")
    prep.add_argument("--max-per-class", type=int, default=None,
                      help="keep a random subset of this many images per class, >= 1 (default: all)")
    prep.add_argument("--force", action="store_true",
                      help="replace a manifest already in --out (default: %(default)s)")
    data.set_defaults(func=_data)

    tr = _sub(sub, "train", "train a model on a manifest (two phases for transfer learning)",
              "catdog train --manifest data/prepared/manifest.csv --run-dir runs/mine --finetune-epochs 2",
              _TrainHelp)
    tr.add_argument("--manifest", type=Path, required=True, help="manifest.csv from `catdog data prepare` (required)")
    tr.add_argument("--run-dir", type=Path, required=True, help="output folder; rerun to resume (required)")
    unset = TRAIN_DEFAULT
    tr.add_argument("--backbone", choices=BACKBONES, help=f"network {unset}")
    tr.add_argument("--image-size", dest="image_size", type=int, help=f"square input size in pixels {unset}")
    tr.add_argument("--weights", help=f"'imagenet', a .h5 path, or 'none' {unset}")
    tr.add_argument("--batch-size", dest="batch_size", type=int, help=f"images per step {unset}")
    tr.add_argument("--head-epochs", dest="head_epochs", type=int, help=f"epochs training the head only {unset}")
    tr.add_argument("--finetune-epochs", dest="finetune_epochs", type=int, help=f"fine-tuning epochs {unset}")
    tr.add_argument("--finetune-layers", dest="finetune_layers", type=_layer_count,
                    help=f"top backbone layers unfrozen for fine-tuning: a count, or 'all' (None) {unset}")
    tr.add_argument("--head-lr", dest="head_lr", type=float, help=f"learning rate of the head phase {unset}")
    tr.add_argument("--finetune-lr", dest="finetune_lr", type=float, help=f"learning rate of fine-tuning {unset}")
    tr.add_argument("--schedule", choices=["plateau", "cosine"], help=f"learning-rate schedule of every phase {unset}")
    tr.add_argument("--warmup-epochs", dest="warmup_epochs", type=int,
                    help=f"cosine only: fine-tune rate rises linearly from 0 over these epochs {unset}")
    tr.add_argument("--patience", type=int, help=f"early-stopping patience in epochs {unset}")
    tr.add_argument("--seed", type=int, help=f"random seed {unset}")
    tr.add_argument("--init-model", dest="init_model", help=f"continue training this saved .keras model {unset}")
    tr.add_argument("--no-augment", action="store_true", help="train without augmentation (default: %(default)s)")
    tr.add_argument("--augmentation", help=f"JSON overrides of the augmentation, e.g. '{{\"shear\": 0}}' {unset}")
    tr.add_argument("--openset-images", dest="openset_images", type=int,
                    help=f"train and validation photos for the 'neither' detector (0: no detector) {unset}")
    tr.add_argument("--member", action="append", metavar="OVERRIDES",
                    help="train an ensemble: repeat once per member with that member's settings over the other "
                         "options, as a YAML/JSON mapping, e.g. --member '{}' --member "
                         "'{backbone: efficientnet_lite0, image_size: 256}' (default: one model, no ensemble)")
    tr.add_argument("--distribution", choices=DISTRIBUTIONS,
                    help="tf.distribute strategy: none (one device), mirrored (every GPU of this machine), "
                         "multiworker (the machines in TF_CONFIG; run the same command on each); --batch-size is "
                         "the global batch, split over the replicas, and the learning rates are used as given "
                         "(default: none)")
    tr.set_defaults(func=_train)

    ev = _sub(sub, "evaluate", "metrics, figures and predictions of a model on a split",
              "catdog evaluate --model runs/mine/model.keras --split validation")
    ev.add_argument("--model", type=Path, default=None, help="model .keras (default: the shipped model)")
    ev.add_argument("--manifest", type=Path, default=None, help="manifest (default: the model's own)")
    ev.add_argument("--split", default="test", choices=["train", "validation", "test"],
                    help="split to evaluate (default: %(default)s)")
    ev.add_argument("--out", type=Path, default=DEFAULT_REPORTS / "evaluations",
                    help="parent folder; each run gets a new sub-folder (default: %(default)s)")
    ev.add_argument("--no-heatmaps", action="store_true",
                    help="gallery without Grad-CAM overlays (default: %(default)s)")
    ev.add_argument("--image-size", dest="image_size", type=int, default=None,
                    help="evaluate the same weights at this input size (default: the size it was trained at; "
                         "the card's temperature was fitted at that size)")
    ev.set_defaults(func=_evaluate)

    cmp = _sub(sub, "compare", "several models on the same images: metrics, 95%% intervals, McNemar, "
               "their ensemble and the images every model gets wrong",
               "catdog compare models/a.keras models/b.keras --split test")
    cmp.add_argument("models", nargs="+", type=Path, help="saved .keras models (the first is the reference; required)")
    cmp.add_argument("--manifest", type=Path, default=None, help="manifest (default: the first model's)")
    cmp.add_argument("--split", nargs="+", default=["validation", "test"],
                     choices=["train", "validation", "test"], help="splits to compare on (default: %(default)s)")
    cmp.add_argument("--out", type=Path, default=DEFAULT_REPORTS / "comparisons",
                     help="parent folder; each comparison gets a new sub-folder (default: %(default)s)")
    cmp.set_defaults(func=_compare)

    ens = _sub(sub, "ensemble", "combine saved models into one .keras model (mean calibrated logit) with its own "
               "card, calibration and 'neither' detector", "catdog ensemble models/a.keras runs/b/model.keras --out runs/ab.keras")
    ens.add_argument("models", nargs="+", type=Path, help="saved .keras models with their cards (required)")
    ens.add_argument("--out", type=Path, required=True, help="the new .keras file; must not exist (required)")
    ens.add_argument("--manifest", type=Path, default=None,
                     help="manifest for calibration and metrics (default: the first model's)")
    ens.add_argument("--openset-images", dest="openset_images", type=int, default=2000,
                     help="train and validation photos for the 'neither' detector; 0 skips it (default: %(default)s)")
    ens.add_argument("--float16-weights", dest="float16_weights", action="store_true",
                     help="store the kernels in float16: half the file, computed in float32 as before (default: off)")
    ens.set_defaults(func=_ensemble)

    pr = _sub(sub, "predict", "classify image files or folders; CSV path,label,confidence,p_cat,p_dog",
              "catdog predict photos/ --out predictions.csv --resume")
    pr.epilog = PREDICT_EPILOG
    pr.add_argument("paths", nargs="+",
                    help="image files and/or folders (walked recursively; required); or merge OUT.csv SHARD.csv... "
                         "to join the CSVs of --shard runs (a folder named merge: ./merge)")
    pr.add_argument("--model", type=Path, default=None, help="model .keras (default: the shipped model)")
    pr.add_argument("--out", type=Path, default=None, help="CSV file (default: print to stdout)")
    pr.add_argument("--resume", action="store_true", help="skip files already in --out (default: %(default)s)")
    pr.add_argument("--shard", metavar="K/N",
                    help="predict only shard K of N (1 <= K <= N) of the files; see below (default: all files)")
    pr.add_argument("--engine", choices=["auto", "keras", "tflite"], default="auto",
                    help="run the Keras model or its TensorFlow Lite export; auto: the float32 export when a "
                         "current one sits beside the model, else Keras (default: %(default)s)")
    pr.add_argument("--variant", choices=TFLITE_VARIANTS, default="float32",
                    help="which export --engine tflite runs (made by catdog export; default: %(default)s)")
    pr.add_argument("--no-reject", action="store_true", help="never answer 'neither' (default: %(default)s)")
    pr.add_argument("--batch-size", type=int, default=32, help="images per model call (default: %(default)s)")
    pr.set_defaults(func=_predict)

    ex = _sub(sub, "explain", "Grad-CAM panels (gray map, heatmap, overlay) for files or folders",
              "catdog explain photos/cat.jpg --out explained/ --method gradcampp")
    ex.add_argument("paths", nargs="+", type=Path, help="image files and/or folders (walked recursively; required)")
    ex.add_argument("--out", type=Path, required=True,
                    help="folder for the PNGs; names already there are never replaced (required)")
    ex.add_argument("--model", type=Path, default=None, help="model .keras (default: the shipped model)")
    ex.add_argument("--method", choices=["gradcam", "gradcampp", "scorecam"], default="gradcam",
                    help="attention-map method (default: %(default)s)")
    ex.add_argument("--target", choices=["predicted", "cat", "dog"], default="predicted",
                    help="class whose evidence is shown (default: %(default)s)")
    ex.add_argument("--colormap", default="jet", help="OpenCV colour map of the heatmap (default: %(default)s)")
    ex.add_argument("--alpha", type=float, default=0.4, help="heatmap weight in the overlay, 0-1 (default: %(default)s)")
    ex.set_defaults(func=_explain)

    exp = _sub(sub, "export", "export the model to TensorFlow Lite (float32, float16, int8)",
               "catdog export --model runs/mine/model.keras --variants int8")
    exp.add_argument("--model", type=Path, default=None, help="model .keras (default: the shipped model)")
    exp.add_argument("--out", type=Path, default=None, help="folder (default: beside the model)")
    exp.add_argument("--variants", nargs="+", choices=TFLITE_VARIANTS, default=list(DEFAULT_TFLITE_VARIANTS),
                     metavar="VARIANT", help=f"TensorFlow Lite variants to write, of {', '.join(TFLITE_VARIANTS)} "
                                             f"(default: {' '.join(DEFAULT_TFLITE_VARIANTS)})")
    exp.set_defaults(func=_export)

    pl = _sub(sub, "pipeline", "run notebooks 01-05 with papermill into runs/<run>/",
              "catdog pipeline --quick -p image_size 128 --name small")
    pl.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"),
                    help="a notebook parameter, checked against the notebooks' parameters cells; repeatable "
                         "(default: the notebooks' own)")
    pl.add_argument("--config", type=Path, help="YAML file of parameters (default: %(default)s)")
    pl.add_argument("--grid", type=Path, help="YAML grid: one pipeline per parameter combination (default: %(default)s)")
    pl.add_argument("--quick", action="store_true",
                    help="few hundred images, 1 epoch, small input (default: %(default)s)")
    pl.add_argument("--name", help="run name (default: UTC timestamp)")
    pl.add_argument("--reports", type=Path, default=DEFAULT_REPORTS, help="parent folder of runs (default: %(default)s)")
    pl.add_argument("--only", nargs="+", help="run only these notebooks, e.g. 04_gradcam (default: all)")
    pl.add_argument("--sort-by", default="test_accuracy",
                    help="grid: metric to sort the comparison by (default: %(default)s)")
    pl.set_defaults(func=_pipeline)

    be = _sub(sub, "bench", "benchmarks; results go to reports/benchmarks/", "catdog bench inference --n-images 64")
    be.add_argument("which", choices=["features", "gradcam", "faithfulness", "inference", "cost", "crosscheck",
                                      "openset", "openset-design", "openset-logistic", "demo"],
                    help="benchmark to run; cost: the classifiers of --model and the --against models side by side; "
                         "crosscheck: the classifier alone on crosscheck's cats and dogs (report "
                         "half); openset-design chooses the 'neither' rule on crosscheck's tune half, "
                         "openset reports it on the other half; openset-logistic cross-validates a logistic "
                         "combination against that rule on the tune half (required)")
    be.add_argument("--model", type=Path, default=None, help="model .keras (default: the shipped model)")
    be.add_argument("--out", type=Path, default=paths.REPO_ROOT / "reports" / "benchmarks",
                    help="results folder (default: %(default)s)")
    be.add_argument("--n-images", type=int, default=None, help="images to use (default: the benchmark's own)")
    be.add_argument("--against", type=Path, nargs="+", default=[], metavar="MODEL",
                    help="cost: models whose speed is compared with --model's (default: none)")
    be.set_defaults(func=_bench)

    dm = _sub(sub, "demo", "a local web page (Gradio) to try your own photos: label, confidence and heatmaps",
              "catdog demo --port 7860   # then open http://127.0.0.1:7860")
    dm.add_argument("--model", type=Path, default=None, help="model .keras (default: the shipped model)")
    dm.add_argument("--port", type=int, default=7860, help="port to listen on (default: %(default)s)")
    dm.add_argument("--host", default="127.0.0.1",
                    help="address to bind; another than 127.0.0.1 exposes the page to your network "
                         "(default: %(default)s)")
    dm.set_defaults(func=_demo)
    return p


def _silence_stdout() -> None:
    """Point stdout at /dev/null so Python's final flush does not raise BrokenPipeError again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout replaced (tests) or already closed
        pass


def quiet_tensorflow(distribution: str | None = None) -> None:
    """Import TensorFlow with its C++ start-up lines kept off the terminal (shown again with ``-v``).

    On a CPU machine TensorFlow opens every command with CUDA probing and CPU-feature notes, one of them an
    alarming ``E0000 ... failed call to cuInit``. ``TF_CPP_MIN_LOG_LEVEL`` silences its later logs, but the
    first lines are written straight to file descriptor 2 before its logging starts, so the import runs with
    that descriptor pointed at a temporary file, which is shown if the import fails. ``distribution``
    "multiworker" sets up that strategy there instead of listing devices: TensorFlow allows it only before.
    """
    import os
    import tempfile

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with tempfile.TemporaryFile() as captured:
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            if distribution == "multiworker":  # its collectives must be set up before TensorFlow's devices
                from catdog.training import strategy_for

                strategy_for(distribution)
            else:
                tf.config.list_logical_devices()  # device set-up logs too
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``catdog`` console script."""
    args = build_parser().parse_args(argv)
    # `data` and `pipeline` never load TensorFlow here; `predict` loads it only for the Keras engine
    if not args.verbose and args.command not in ("data", "pipeline", "predict"):
        quiet_tensorflow(getattr(args, "distribution", None))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    if not args.verbose:  # TensorFlow's own INFO lines (a multi-worker run logs every collective op) are noise here
        logging.getLogger("tensorflow").setLevel(logging.WARNING)
    from catdog.pipeline import PipelineError

    try:
        return args.func(args)
    except BrokenPipeError:  # `catdog predict big/ | head -3`: the reader left; stop quietly
        _silence_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for a program ended by a closed pipe
    except (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
            ValueError) as exc:  # bad input: one clear line, no traceback
        print(f"catdog: error: {exc}", file=sys.stderr)
        return 2
    except PipelineError as exc:  # the failing cell's error was already shown above
        print(f"catdog: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
