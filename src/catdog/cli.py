"""The ``catdog`` command line: thin wrappers around the library (every command is one call)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from catdog import paths
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
                          test_fraction=args.test, seed=args.seed, max_per_class=args.max_per_class)
        print(json.dumps(summary, indent=2))
    return 0


def _train(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from catdog.training import TrainConfig, train

    # the options given (argparse leaves the others None), parsed like every notebook parameter
    names = {f.name for f in fields(TrainConfig)}
    params = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if args.no_augment:
        params["augment"] = False
    result = train(args.manifest, args.run_dir, TrainConfig.from_params(**params))
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


def _predict(args: argparse.Namespace) -> int:
    from catdog.predict import COLUMNS, Predictor, predict_to_csv

    options = dict(model=args.model, engine=args.engine, reject=not args.no_reject, batch_size=args.batch_size)
    if args.out is None:  # stream rows to stdout
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in Predictor(**options).predict_paths(args.paths):
            writer.writerow(row)
        return 0
    out = predict_to_csv(args.paths, args.out, resume=args.resume, **options)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _explain(args: argparse.Namespace) -> int:
    from catdog.explain import explain_paths

    rows = explain_paths(args.model, args.paths, args.out, method=args.method, target=args.target,
                         colormap=args.colormap, alpha=args.alpha)
    bad = [r for r in rows if r.get("error")]
    for r in bad:
        print(f"skipped {r['path']}: {r['error']}", file=sys.stderr)
    print(f"wrote panels for {len(rows) - len(bad)} images to {args.out}")
    return 0


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
    from catdog import benchmarks

    result = benchmarks.run(args.which, model_path=args.model, out_dir=args.out, n_images=args.n_images)
    print(json.dumps(result, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every ``catdog`` sub-command."""
    p = argparse.ArgumentParser(prog="catdog", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="get and prepare the dataset")
    dsub = data.add_subparsers(dest="data_command", required=True)
    fetch = dsub.add_parser("fetch", help="fill data/PetImages from a local mirror or the official archive")
    fetch.add_argument("--dest", type=Path, help="target folder (default: $CATDOG_DATA_DIR or data/PetImages)")
    fetch.add_argument("--mirror", type=Path, help="local PetImages copy (default: $CATDOG_DATA_MIRROR or ../shared)")
    fetch.add_argument("--copy", action="store_true", help="copy the mirror instead of linking it")
    fetch.add_argument("--download", action="store_true", help="ignore any mirror and download the archive")
    fetch.add_argument("--url", default=None, help="archive URL (default: Microsoft's)")
    fetch.add_argument("--force", action="store_true", help="replace an existing dataset folder")
    prep = dsub.add_parser("prepare", help="scan, clean and split a dataset into a manifest")
    prep.add_argument("root", nargs="?", type=Path, help="dataset folder (default: data/PetImages)")
    prep.add_argument("--out", type=Path, required=True, help="folder for manifest.csv, skipped.csv, dataset.json")
    prep.add_argument("--val", type=float, default=0.15, help="validation fraction")
    prep.add_argument("--test", type=float, default=0.15, help="test fraction")
    prep.add_argument("--seed", type=int, default=42)
    prep.add_argument("--max-per-class", type=int, default=None, help="keep a random subset per class")
    data.set_defaults(func=_data)

    tr = sub.add_parser("train", help="train a model on a manifest (two phases for transfer learning)")
    tr.add_argument("--manifest", type=Path, required=True)
    tr.add_argument("--run-dir", type=Path, required=True, help="output folder; rerun to resume")
    tr.add_argument("--backbone", choices=["mobilenet_v2", "inception_v3", "simple_cnn"])
    tr.add_argument("--image-size", dest="image_size", type=int)
    tr.add_argument("--weights", help="'imagenet', a .h5 path, or 'none'")
    tr.add_argument("--batch-size", dest="batch_size", type=int)
    tr.add_argument("--head-epochs", dest="head_epochs", type=int)
    tr.add_argument("--finetune-epochs", dest="finetune_epochs", type=int)
    tr.add_argument("--finetune-layers", dest="finetune_layers", type=int)
    tr.add_argument("--head-lr", dest="head_lr", type=float)
    tr.add_argument("--finetune-lr", dest="finetune_lr", type=float)
    tr.add_argument("--schedule", choices=["plateau", "cosine"], help="learning-rate schedule of every phase")
    tr.add_argument("--warmup-epochs", dest="warmup_epochs", type=int,
                    help="cosine only: fine-tune rate rises linearly from 0 over these epochs")
    tr.add_argument("--patience", type=int, help="early-stopping patience in epochs")
    tr.add_argument("--seed", type=int)
    tr.add_argument("--init-model", dest="init_model", help="continue training this saved .keras model")
    tr.add_argument("--no-augment", action="store_true")
    tr.add_argument("--augmentation", help="JSON overrides of the augmentation, e.g. '{\"shear\": 0}'")
    tr.add_argument("--openset-images", dest="openset_images", type=int,
                    help="train and validation photos for the 'neither' detector (0: no detector)")
    tr.set_defaults(func=_train)

    ev = sub.add_parser("evaluate", help="metrics, figures and predictions of a model on a split")
    ev.add_argument("--model", type=Path, default=None, help="model .keras (default: the shipped model)")
    ev.add_argument("--manifest", type=Path, default=None, help="manifest (default: the model's own)")
    ev.add_argument("--split", default="test", choices=["train", "validation", "test"])
    ev.add_argument("--out", type=Path, default=paths.REPO_ROOT / "reports" / "evaluations",
                    help="parent folder; each run gets a new sub-folder")
    ev.add_argument("--no-heatmaps", action="store_true", help="gallery without Grad-CAM overlays")
    ev.add_argument("--image-size", dest="image_size", type=int, default=None,
                    help="evaluate the same weights at this input size (default: the size it was trained at; "
                         "the card's temperature was fitted at that size)")
    ev.set_defaults(func=_evaluate)

    cmp = sub.add_parser("compare", help="several models on the same images: metrics, 95%% intervals, McNemar, "
                         "their ensemble and the images every model gets wrong")
    cmp.add_argument("models", nargs="+", type=Path, help="saved .keras models (the first is the reference)")
    cmp.add_argument("--manifest", type=Path, default=None, help="manifest (default: the first model's)")
    cmp.add_argument("--split", nargs="+", default=["validation", "test"],
                     choices=["train", "validation", "test"])
    cmp.add_argument("--out", type=Path, default=paths.REPO_ROOT / "reports" / "comparisons",
                     help="parent folder; each comparison gets a new sub-folder")
    cmp.set_defaults(func=_compare)

    pr = sub.add_parser("predict", help="classify image files or folders; CSV path,label,confidence,p_cat,p_dog")
    pr.add_argument("paths", nargs="+", type=Path)
    pr.add_argument("--model", type=Path, default=None)
    pr.add_argument("--out", type=Path, default=None, help="CSV file (default: print to stdout)")
    pr.add_argument("--resume", action="store_true", help="skip files already in --out")
    pr.add_argument("--engine", choices=["keras", "tflite"], default="keras")
    pr.add_argument("--no-reject", action="store_true", help="never answer 'neither'")
    pr.add_argument("--batch-size", type=int, default=32)
    pr.set_defaults(func=_predict)

    ex = sub.add_parser("explain", help="Grad-CAM panels (gray map, heatmap, overlay) for files or folders")
    ex.add_argument("paths", nargs="+", type=Path)
    ex.add_argument("--out", type=Path, required=True)
    ex.add_argument("--model", type=Path, default=None)
    ex.add_argument("--method", choices=["gradcam", "gradcampp", "scorecam"], default="gradcam")
    ex.add_argument("--target", choices=["predicted", "cat", "dog"], default="predicted")
    ex.add_argument("--colormap", default="jet")
    ex.add_argument("--alpha", type=float, default=0.4)
    ex.set_defaults(func=_explain)

    exp = sub.add_parser("export", help="export the model to TensorFlow Lite (float32, float16, int8)")
    exp.add_argument("--model", type=Path, default=None)
    exp.add_argument("--out", type=Path, default=None, help="folder (default: beside the model)")
    exp.add_argument("--variants", nargs="+", default=["float32", "float16", "int8"])
    exp.set_defaults(func=_export)

    pl = sub.add_parser("pipeline", help="run notebooks 01-05 with papermill into reports/runs/<run>/")
    pl.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"), help="a notebook parameter")
    pl.add_argument("--config", type=Path, help="YAML file of parameters")
    pl.add_argument("--grid", type=Path, help="YAML grid: one pipeline per parameter combination")
    pl.add_argument("--quick", action="store_true", help="few hundred images, 1 epoch, small input")
    pl.add_argument("--name", help="run name (default: UTC timestamp)")
    pl.add_argument("--reports", type=Path, default=DEFAULT_REPORTS)
    pl.add_argument("--only", nargs="+", help="run only these notebooks (e.g. 04_gradcam)")
    pl.add_argument("--sort-by", default="test_accuracy", help="grid: metric to sort the comparison by")
    pl.set_defaults(func=_pipeline)

    be = sub.add_parser("bench", help="benchmarks; results go to reports/benchmarks/")
    be.add_argument("which", choices=["features", "gradcam", "faithfulness", "inference", "openset"])
    be.add_argument("--model", type=Path, default=None)
    be.add_argument("--out", type=Path, default=paths.REPO_ROOT / "reports" / "benchmarks")
    be.add_argument("--n-images", type=int, default=None)
    be.set_defaults(func=_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``catdog`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    from catdog.pipeline import PipelineError

    try:
        return args.func(args)
    except (FileNotFoundError, FileExistsError, ValueError) as exc:  # bad input: one clear line, no traceback
        print(f"catdog: error: {exc}", file=sys.stderr)
        return 2
    except PipelineError as exc:  # the failing cell's error was already shown above
        print(f"catdog: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
