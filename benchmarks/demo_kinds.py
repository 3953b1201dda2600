"""The `vad demo` benchmark per anomaly kind, on the demo scene and on harder variants (not a test).

    python benchmarks/demo_kinds.py [--variants demo perspective] [--sets base track position track+position]
                                    [--seeds 0] [--opt KEY=VALUE ...]

Each variant renders the synthetic benchmark (``mulde.datasets.synthetic``) once, extracts the
demo's features once (``mulde.pipeline.demo.DEMO_OPTIONS``; cached), then trains and evaluates
MULDE for every option set on the same cached features. Each test video holds one anomaly
kind, so its per-video AUC is that kind's figure. Variants:

* ``demo``: exactly the scene `vad demo` renders (8 training, 4 test videos, 150 frames);
* ``perspective``: strong perspective (objects and their image speed 3x larger at the bottom
  than at the top of the walkway) and small objects (object_scale 0.6), more test videos;
* ``small``: small objects only (object_scale 0.5).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mulde.config import resolve_config  # noqa: E402
from mulde.datasets.synthetic import generate_synthetic  # noqa: E402
from mulde.pipeline.demo import DEMO_DATA, DEMO_OPTIONS  # noqa: E402
from mulde.pipeline.evaluate import evaluate_run  # noqa: E402
from mulde.pipeline.extract import build_extractor, cache_for, extract_split, open_dataset  # noqa: E402
from mulde.pipeline.train import train_run  # noqa: E402

VARIANTS = {
    "demo": dict(DEMO_DATA),
    "perspective": {**DEMO_DATA, "n_test": 8, "perspective": 2.5, "object_scale": 0.6},
    "small": {**DEMO_DATA, "n_test": 8, "object_scale": 0.5},
}
SETS = {
    "base": {},
    "track": {"derived": ["track"]},
    "position": {"derived": ["position"]},
    "track+position": {"derived": ["track", "position"]},
}


def per_kind(metrics: dict, manifest: dict) -> dict[str, float]:
    """Mean per-video AUC of the videos holding each anomaly kind."""
    out: dict[str, list[float]] = {}
    for video, auc in metrics["per_video_auc"].items():
        for a in manifest["videos"][video]["anomalies"]:
            out.setdefault(a["kind"], []).append(auc)
    return {k: float(np.mean(v)) for k, v in sorted(out.items())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=["demo", "perspective"], choices=list(VARIANTS))
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", default=str(REPO / ".bench-runs" / "demo-kinds"))
    ap.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help="extra options for every set")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    extra = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.opt)}
    lines, t0 = [], time.perf_counter()
    for variant in args.variants:
        for seed in args.seeds:
            base = Path(args.out) / f"{variant}-s{seed}"
            data = base / "data"
            if not (data / "synthetic.json").is_file():
                generate_synthetic(data, seed=seed, **VARIANTS[variant])
            manifest = json.loads((data / "synthetic.json").read_text())
            common = {**DEMO_OPTIONS, "root": str(data), "cache": str(base / "cache"), "seed": seed,
                      "device": "cpu", **extra}
            cfg = resolve_config(common)
            ds, extractor = open_dataset(cfg), build_extractor(cfg)
            for split in ("train", "test"):
                extract_split(ds, split, extractor, cache_for(cfg), progress=False)
            for name in args.sets:
                run_cfg = resolve_config({**common, **SETS[name]})
                run_dir = base / f"run-{name}"
                train_run(run_cfg, run_dir, progress=False)
                m = evaluate_run(run_dir, progress=False, plots=False)
                kinds = per_kind(m, manifest)
                cells = " | ".join(f"{100 * kinds.get(k, float('nan')):.1f}" for k in
                                   ("fast", "wrong_direction", "large_object", "loitering"))
                lines.append(f"| {variant} | {seed} | {name} | {100 * m['micro_auc']:.1f} | "
                             f"{100 * m['macro_auc']:.1f} | {cells} |")
                print(lines[-1], flush=True)
    print(f"\n{date.today()}, {os.cpu_count()} cores, `python benchmarks/demo_kinds.py {' '.join(sys.argv[1:])}`, "
          f"{time.perf_counter() - t0:.0f} s\n")
    print("| scene | seed | derived | micro | macro | too fast | wrong direction | oversized | loitering |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
