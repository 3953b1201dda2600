"""UCSD Ped2 accuracy: MULDE vs. the paper's density baselines on the same offline features.

    python benchmarks/ped2.py                      # object-centric (velocity, pose; deep if CLIP weights)
    python benchmarks/ped2.py --frames             # frame-centric with the offline flow-grid feature
    python benchmarks/ped2.py --write-results      # also replace the section in benchmarks/RESULTS.md
    python benchmarks/ped2.py --frame-features flowgrid --combine-rules sum max holdout_sum holdout_max
                                                   # objects + the flow-grid frame feature, every rule

Features are extracted once into the cache (resumable); every detector is then trained on the
same features. MULDE is run with 3 seeds (mean ± std); micro and macro frame-level AUC-ROC are
reported for each feature type alone and for the combination (paper supp. 7.2 rule). With
``--combine-rules`` every rule is applied to the same trained run's per-type frame scores (no
retraining), for the object types together and for all types together.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mulde.atomic import atomic_write  # noqa: E402
from mulde.cli import key_value  # noqa: E402
from mulde.config import resolve_config  # noqa: E402
from mulde.pipeline.evaluate import auc_metrics, evaluate_run  # noqa: E402
from mulde.pipeline.extract import build_extractors, cache_for, extract_split, open_dataset  # noqa: E402
from mulde.pipeline.run import load_run  # noqa: E402
from mulde.pipeline.score import combine, smooth  # noqa: E402
from mulde.pipeline.train import train_run  # noqa: E402

DEFAULT_ROOT = REPO.parent / "shared" / "data" / "ucsd_ped2"

# (name for --detectors, table label, detector options); MULDE rows are repeated over seeds.
DETECTORS = [
    ("MULDE", "MULDE", {"detector": "mulde"}),
    ("MULDE-beta0", "MULDE β=0", {"detector": "mulde", "beta": 0.0}),
    ("GMM", "GMM (AccI-VAD)", {"detector": "gmm"}),
    ("kNN", "kNN k=1 (AccI-VAD)", {"detector": "knn", "k": 1}),
    ("MSMA", "MSMA", {"detector": "msma"}),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(DEFAULT_ROOT))
    ap.add_argument("--cache", default=os.environ.get("MULDE_CACHE", str(REPO / ".bench-cache")))
    ap.add_argument("--out", default=str(REPO / ".bench-runs" / "ped2"))
    ap.add_argument("--frames", action="store_true", help="frame-centric flow-grid instead of objects")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--preset", default="cpu", help="detector preset (cpu on a CPU; paper on a GPU)")
    ap.add_argument("--steps", type=int, default=None, help="override the preset's training steps")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--opt", action="append", default=[], type=key_value, metavar="KEY=VALUE", help="extra config options")
    ap.add_argument("--frame-features", nargs="+", default=[], metavar="BACKBONE",
                    help="objects: also model these frame features (extractor.frame_features), e.g. flowgrid")
    ap.add_argument("--combine-rules", nargs="+", default=None, metavar="RULE",
                    help="report each combine rule (scoring.combine) on the same runs, e.g. sum max holdout_sum")
    ap.add_argument("--holdout", type=float, default=None,
                    help="alerts.calibration_holdout (default 0, the paper's protocol; 0.2 with holdout_* rules: "
                         "the model is still fitted on every video, a probe fitted on the rest gives the statistics)")
    ap.add_argument("--detectors", nargs="+", default=None, metavar="LABEL",
                    choices=[name for name, _, _ in DETECTORS],
                    help="only these rows (default: all)")
    ap.add_argument("--heading", default=None, help="RESULTS.md section heading (default: from the options)")
    ap.add_argument("--write-results", action="store_true")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    if not Path(args.root).is_dir():
        print(f"error: Ped2 not found at {args.root}; pass --root", file=sys.stderr)
        return 2
    extra = dict(args.opt)
    rules = args.combine_rules or []
    holdout = args.holdout if args.holdout is not None else (0.2 if any(r.startswith("holdout") for r in rules) else 0.0)
    base = {"dataset": "ped2", "root": args.root, "cache": args.cache, "preset": args.preset,
            "device": args.device, "alerts.calibration_holdout": holdout, **extra}
    if args.frame_features:
        base["extractor.frame_features"] = args.frame_features
    # the paper's protocol trains on every training video (no videos kept back to calibrate alarms)
    if args.frames:
        base.update({"features": "frames", "backbone": "flowgrid", "lr": 1e-4})
    if args.steps:
        base["steps"] = args.steps
    t_start = time.perf_counter()
    cfg = resolve_config(base)
    ds = open_dataset(cfg)
    t0 = time.perf_counter()
    for extractor in build_extractors(cfg):
        for split in ("train", "test"):
            extract_split(ds, split, extractor, cache_for(cfg), progress=not args.quiet)
    t_extract = time.perf_counter() - t0

    rows: dict[str, dict[str, list[tuple[float, float]]]] = {}
    types: list[str] = []
    t0 = time.perf_counter()
    chosen = [(label, opts) for name, label, opts in DETECTORS if not args.detectors or name in args.detectors]
    for label, opts in chosen:
        seeds = args.seeds if opts["detector"] == "mulde" else [args.seeds[0]]
        for seed in seeds:
            run_cfg = resolve_config({**base, **opts, "seed": seed})
            run_dir = Path(args.out) / f"{label.split()[0].lower()}-{opts.get('beta', 'd')}-s{seed}"
            train_run(run_cfg, run_dir, progress=not args.quiet)
            m = evaluate_run(run_dir, progress=False, plots=seed == seeds[0])
            types = m["feature_types"]
            entry = rows.setdefault(label, {})
            for t in types:
                pt = m["per_type"].get(t, {"micro_auc": m["micro_auc"], "macro_auc": m["macro_auc"]})
                entry.setdefault(t, []).append((pt["micro_auc"], pt["macro_auc"]))
                print(f"    {t} alone: micro {100 * pt['micro_auc']:.1f} macro {100 * pt['macro_auc']:.1f}", flush=True)
            if rules:
                for name, (micro, macro) in rule_table(run_dir, types, rules, args.frame_features).items():
                    entry.setdefault(name, []).append((micro, macro))
                    print(f"    {name}: micro {100 * micro:.1f} macro {100 * macro:.1f}", flush=True)
            elif len(types) > 1:
                entry.setdefault("+".join(types), []).append((m["micro_auc"], m["macro_auc"]))
            print(f"{label:<20} seed {seed}: micro {100 * m['micro_auc']:.1f} macro {100 * m['macro_auc']:.1f}",
                  flush=True)
    t_models = time.perf_counter() - t0
    cols = list(next(iter(rows.values()))) if rows else []

    def cell(vals: list[tuple[float, float]], i: int) -> str:
        v = 100 * np.array([x[i] for x in vals])
        return f"{v.mean():.1f} ± {v.std():.1f}" if len(v) > 1 else f"{v[0]:.1f}"

    header = "| detector | " + " | ".join(f"{c} micro | {c} macro" for c in cols) + " |"
    lines = [header, "|" + " --- |" * (1 + 2 * len(cols))]
    for label, entry in rows.items():
        lines.append(f"| {label} | " + " | ".join(f"{cell(entry[c], 0)} | {cell(entry[c], 1)}" for c in cols) + " |")
    total = time.perf_counter() - t_start
    mode = "frame-centric flow-grid" if args.frames else f"object-centric ({', '.join(types)})"
    if args.opt:
        mode += ", " + ", ".join(f"{k}={v}" for k, v in args.opt)
    from mulde.detector.mulde import mulde_preset

    preset = mulde_preset(args.preset if args.preset != "auto" else "cpu")
    dopt = cfg.detector_options
    units = list(dopt.get("hidden") or preset.hidden)
    batch, steps, lr = (dopt.get("batch_size") or preset.batch_size, dopt.get("steps") or preset.steps,
                        dopt.get("lr") or preset.lr)
    schedule, ema = dopt.get("lr_schedule") or preset.lr_schedule, dopt.get("ema_decay", preset.ema_decay)
    summary = [
        f"### {args.heading}" if args.heading else f"### Ped2, {mode}",
        "",
        f"Machine: {_cpu_name()}, {os.cpu_count()} cores; date {date.today()}; "
        f"command: `python benchmarks/ped2.py {' '.join(sys.argv[1:])}`; preset {args.preset} "
        f"({units} units, batch {batch}, {steps} steps, lr {lr} {schedule}, EMA {ema}); MULDE seeds "
        f"{args.seeds} (mean ± std), MSMA seed {args.seeds[0]}, GMM/kNN deterministic; smoothing σ = "
        f"{cfg.scoring.smoothing_sigma}. "
        f"Runtime: extraction {t_extract:.0f} s (0 when cached), models {t_models:.0f} s, total {total:.0f} s.",
        "",
        *lines,
        "",
    ]
    text = "\n".join(summary)
    print(text)
    if args.write_results:
        _write_section(REPO / "benchmarks" / "RESULTS.md", summary[0], text)
    return 0


def rule_metrics(run_dir: Path, types: list[str], rules: list[str], frame_types: list[str]) -> dict[str, dict]:
    """AUC metrics (:func:`auc_metrics`) of every combine rule, for the object types together
    and for all types, from one evaluation's per-type raw frame scores (``eval/scores.csv``) and
    the run's statistics: the same ``combine`` and smoothing ``vad evaluate`` applies."""
    import pandas as pd

    run = load_run(run_dir, device="cpu")
    frame = pd.read_csv(run_dir / "eval" / "scores.csv")
    sigma = float(run.config.get("scoring", {}).get("smoothing_sigma") or 0)
    levels = run.config.get("scoring", {}).get("combine_levels", "sum")
    objects = [t for t in types if t not in frame_types]
    subsets = [objects] if len(objects) > 1 else []
    if len(types) > len(objects) and len(types) > 1:
        subsets.append(types)
    return {f"{'+'.join(subset)} {rule}": combined_metrics(run, frame, subset, rule, levels, sigma)
            for subset in subsets for rule in rules}


def combined_metrics(run, frame, types: list[str], rule: str, levels: str, sigma: float) -> dict:
    """AUC metrics of ``types`` merged by ``rule`` and ``levels`` and smoothed, per video of an
    evaluation's ``scores.csv`` (``frame``), as ``vad evaluate`` does it."""
    scores, labels = {}, {}
    for vid, g in frame.groupby("video", sort=False):
        scores[vid] = smooth(combine({t: g[f"score_{t}"].to_numpy() for t in types}, run.stats, rule, levels), sigma)
        labels[vid] = g["label"].to_numpy().astype(int)
    return auc_metrics(scores, labels)


def rule_table(run_dir: Path, types: list[str], rules: list[str], frame_types: list[str]
               ) -> dict[str, tuple[float, float]]:
    """(micro, macro) AUC of every combine rule (:func:`rule_metrics`)."""
    return {k: (m["micro_auc"], m["macro_auc"]) for k, m in rule_metrics(run_dir, types, rules, frame_types).items()}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _write_section(path: Path, heading: str, text: str) -> None:
    """Replace (or append) the section that starts with ``heading`` in RESULTS.md."""
    old = path.read_text() if path.exists() else "# Measured results\n\n"
    if heading in old:
        start = old.index(heading)
        nxt = old.find("\n### ", start + len(heading))
        old = old[:start] + text + (old[nxt + 1:] if nxt != -1 else "")
    else:
        old = old.rstrip("\n") + "\n\n" + text
    atomic_write(path, old)


if __name__ == "__main__":
    sys.exit(main())
