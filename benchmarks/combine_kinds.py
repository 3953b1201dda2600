"""Objects + the flow-grid frame feature on the synthetic benchmark, per anomaly kind and combine rule.

    python benchmarks/combine_kinds.py [--variants demo perspective small] [--seeds 0]
                                       [--rules sum max holdout_sum holdout_max] [--steps 1000]
                                       [--crossfit-folds 0 4] [--flowgrid-method farneback dis]
                                       [--opt KEY=VALUE ...]

Each variant (``benchmarks/demo_kinds.py``: the demo scene, strong perspective with small
objects, small objects) stands in for a scene the defaults were not chosen on. Per variant and
seed, one run models the demo's object velocity rows and the flow-grid frame feature
(``extractor.frame_features: [flowgrid]``), with the default calibration hold-out; every combine
rule is then applied to the same run's per-type frame scores (no retraining). With several
``--crossfit-folds`` values there is one run per value (``scoring.crossfit_folds``: the flow-grid
type's statistics from videos a model did not see), and the rows name it. Each test video holds
one anomaly kind, so its per-video AUC is that kind's figure. With several
``--flowgrid-method`` values the flow grid is extracted with each optical flow method
(``extractor.flowgrid_method``) and modelled in its own run, side by side. ``--opt`` sets
further options of every run (e.g. ``sigma_high=auto``); the run folders are named after them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from demo_kinds import VARIANTS, opt_suffix, render_scene  # noqa: E402
from ped2 import rule_metrics  # noqa: E402

from mulde.cli import key_value  # noqa: E402
from mulde.config import resolve_config  # noqa: E402
from mulde.extractors.flow import FLOW_METHODS  # noqa: E402
from mulde.pipeline.demo import DEMO_OPTIONS  # noqa: E402
from mulde.pipeline.evaluate import evaluate_run  # noqa: E402
from mulde.pipeline.extract import build_extractors, cache_for, extract_split, open_dataset  # noqa: E402
from mulde.pipeline.train import train_run  # noqa: E402

KINDS = ("fast", "wrong_direction", "large_object", "loitering")


def kind_auc(per_video: dict[str, float], manifest: dict) -> dict[str, float]:
    """Mean per-video AUC of the videos holding each anomaly kind."""
    out: dict[str, list[float]] = {}
    for video, auc in per_video.items():
        for a in manifest["videos"][video]["anomalies"]:
            out.setdefault(a["kind"], []).append(auc)
    return {k: float(np.mean(v)) for k, v in out.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=["demo", "perspective", "small"], choices=list(VARIANTS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--rules", nargs="+", default=["sum", "max", "holdout_sum", "holdout_max"])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--crossfit-folds", type=int, nargs="+", default=[0])
    ap.add_argument("--flowgrid-method", nargs="+", default=[None], metavar="METHOD", choices=FLOW_METHODS,
                    help="optical flow methods of the flow grid to compare (default: its own)")
    ap.add_argument("--out", default=str(REPO / ".bench-runs" / "combine-kinds"))
    ap.add_argument("--opt", action="append", default=[], type=key_value, metavar="KEY=VALUE", help="extra options of every run")
    args = ap.parse_args()
    extra = dict(args.opt)
    suffix = opt_suffix(extra)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    rows: dict[tuple[str, str], list[tuple[float, float, dict[str, float]]]] = {}
    t0 = time.perf_counter()
    for variant in args.variants:
        for seed in args.seeds:
            base, data, manifest = render_scene(args.out, variant, seed)
            for method in args.flowgrid_method:
                opts = {**DEMO_OPTIONS, "root": str(data), "cache": str(base / "cache"), "seed": seed,
                        "device": "cpu", "steps": args.steps, "frame_features": ["flowgrid"],
                        "feature_types": ["velocity", "flowgrid"],
                        **({"flowgrid_method": method} if method else {}), **extra}
                cfg = resolve_config(opts)
                ds = open_dataset(cfg)
                extractors = build_extractors(cfg)
                used = next(ex.cfg.method for ex in extractors if ex.name == "flowgrid")  # default resolved
                for extractor in extractors:
                    for split in ("train", "test"):
                        extract_split(ds, split, extractor, cache_for(cfg), progress=False)
                for folds in args.crossfit_folds:
                    cfg = resolve_config({**opts, "scoring.crossfit_folds": folds})
                    run_dir = base / f"run-{used}-crossfit{folds}{suffix}"
                    train_run(cfg, run_dir, progress=False)
                    m = evaluate_run(run_dir, progress=False, plots=False)
                    named = {**types_alone(run_dir),
                             **rule_metrics(run_dir, list(m["feature_types"]), args.rules, ["flowgrid"])}
                    tag = f", crossfit {folds}" if len(args.crossfit_folds) > 1 else ""
                    tag += f", flow grid {used}" if len(args.flowgrid_method) > 1 else ""
                    for name, met in named.items():
                        rows.setdefault((variant, name + tag), []).append(
                            (met["micro_auc"], met["macro_auc"], kind_auc(met["per_video_auc"], manifest)))
                        print(variant, seed, name + tag, f"{100 * met['micro_auc']:.1f}", flush=True)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"\n{stamp}, {os.cpu_count()} cores, `python benchmarks/combine_kinds.py {' '.join(sys.argv[1:])}`, "
          f"{time.perf_counter() - t0:.0f} s; MULDE cpu preset, {args.steps} steps, seeds {args.seeds} (mean)\n")
    print("| scene | scored by | micro | macro | too fast | wrong direction | oversized | loitering |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for (variant, name), vals in rows.items():
        micro = 100 * np.mean([v[0] for v in vals])
        macro = 100 * np.mean([v[1] for v in vals])
        kinds = [100 * np.mean([v[2][k] for v in vals if k in v[2]]) if any(k in v[2] for v in vals) else float("nan")
                 for k in KINDS]
        print(f"| {variant} | {name} | {micro:.1f} | {macro:.1f} | " + " | ".join(f"{k:.1f}" for k in kinds) + " |")
    return 0


def types_alone(run_dir: Path) -> dict[str, dict]:
    """Each type alone: its own standardised, smoothed frame scores (as ``vad evaluate``'s per_type)."""
    import pandas as pd

    from mulde.pipeline.evaluate import auc_metrics
    from mulde.pipeline.run import load_run
    from mulde.pipeline.score import combine, smooth

    run = load_run(run_dir, device="cpu")
    frame = pd.read_csv(run_dir / "eval" / "scores.csv")
    sigma = float(run.config["scoring"]["smoothing_sigma"] or 0)
    rule = run.config["scoring"]["combine"]
    out = {}
    for t in run.feature_types:
        scores = {v: smooth(combine({t: g[f"score_{t}"].to_numpy()}, run.stats, rule), sigma)
                  for v, g in frame.groupby("video", sort=False)}
        labels = {v: g["label"].to_numpy().astype(int) for v, g in frame.groupby("video", sort=False)}
        out[f"{t} alone"] = auc_metrics(scores, labels)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
