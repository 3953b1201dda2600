"""Trained runs re-scored under each ``scoring.combine_levels``, side by side, without retraining.

    python benchmarks/rescore_runs.py RUN [RUN ...] [--levels sum max]

Each RUN is a run folder that ``vad evaluate`` has scored (``RUN/eval/scores.csv`` holds every
type's raw frame scores). The run's own combine rule and smoothing are applied to them with each
``--levels`` value (``sum``: one merge over every type; ``max``: the object types and the
frame-level types merged apart, the larger level taken), and the frame AUC is printed: micro,
macro, and the mean per-video AUC of each group of test videos named alike (the letters before
a trailing number: ``benchmarks/real_scenes.py`` names its test videos by anomaly kind, fast0,
rewind1, ...; videos named by a number alone form no group). A run with only object types or only frame-level types scores the same either way.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from ped2 import combined_metrics  # noqa: E402

from mulde.config import COMBINE_LEVELS  # noqa: E402
from mulde.pipeline.run import load_run  # noqa: E402


def rescore(run_dir: Path, levels: str) -> dict:
    """Micro / macro AUC % and the mean per-video AUC % of each group of test videos."""
    import pandas as pd

    run = load_run(run_dir, device="cpu")
    scoring = run.config.get("scoring", {})
    sigma, rule = float(scoring.get("smoothing_sigma") or 0), scoring.get("combine", "sum")
    frame = pd.read_csv(run_dir / "eval" / "scores.csv")
    m = combined_metrics(run, frame, list(run.feature_types), rule, levels, sigma)
    groups: dict[str, list[float]] = {}
    for vid, auc in (m.get("per_video_auc") or {}).items():
        prefix = re.sub(r"[\d_-]+$", "", str(vid))
        if auc is not None and prefix:  # numbered videos (Ped2's 01, 02, ...) form no groups
            groups.setdefault(prefix, []).append(auc)
    return {"micro": 100 * m["micro_auc"], "macro": 100 * m["macro_auc"],
            "groups": {k: 100 * float(np.mean(v)) for k, v in sorted(groups.items())}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--levels", nargs="+", default=["sum", "max"], choices=COMBINE_LEVELS)
    args = ap.parse_args()
    print(f"# command: python benchmarks/rescore_runs.py {' '.join(sys.argv[1:])}")
    print("| run | types | combine_levels | micro | macro | per group of test videos |")
    print("| --- | --- | --- | --- | --- | --- |")
    for run_dir in args.runs:
        if not (run_dir / "eval" / "scores.csv").is_file():
            print(f"error: {run_dir}: no eval/scores.csv; run `vad evaluate --model {run_dir}` first", file=sys.stderr)
            return 2
        types = "+".join(load_run(run_dir, device="cpu").feature_types)
        for levels in args.levels:
            r = rescore(run_dir, levels)
            groups = ", ".join(f"{k} {v:.1f}" for k, v in r["groups"].items())
            print(f"| {run_dir} | {types} | {levels} | {r['micro']:.1f} | {r['macro']:.1f} | {groups} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
