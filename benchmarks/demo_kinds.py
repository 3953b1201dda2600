"""The `vad demo` benchmark per anomaly kind, on the demo scene and on harder variants (not a test).

    python benchmarks/demo_kinds.py [--variants demo perspective] [--sets base track position track+position]
                                    [--seeds 0] [--train-seeds 0 1 2] [--motion mog2 mog2+static]
                                    [--flow farneback dis] [--opt KEY=VALUE ...]

Each variant renders the synthetic benchmark (``mulde.datasets.synthetic``) once, extracts the
demo's features once (``mulde.pipeline.demo.DEMO_OPTIONS``; cached), then trains and evaluates
MULDE for every option set on the same cached features. Each test video holds one anomaly
kind, so its per-video AUC is that kind's figure. ``--motion`` compares motion-proposal methods
(``motion_method``; each extracts its own features) side by side in one run, and ``--flow`` the
optical flow methods (``flow``) the same way. ``--seeds`` renders
a different scene per seed; ``--train-seeds`` trains several times on the same scene and features
(the spread of a kind's AUC between them is training noise). ``--opt`` sets further options of
every run (e.g. ``velocity_norm=height``); the run folders are named after them. With more than one row per
(scene, motion, flow, derived) a mean row follows. Variants:

* ``demo``: exactly the scene `vad demo` renders (8 training, 4 test videos, 150 frames);
* ``perspective``: strong perspective (objects and their image speed 3x larger at the bottom
  than at the top of the walkway) and small objects (object_scale 0.6), more test videos;
* ``small``: small objects only (object_scale 0.5).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mulde.cli import key_value  # noqa: E402
from mulde.config import resolve_config  # noqa: E402
from mulde.datasets.synthetic import generate_synthetic  # noqa: E402
from mulde.extractors.flow import FLOW_METHODS  # noqa: E402
from mulde.pipeline.demo import DEMO_DATA, DEMO_OPTIONS  # noqa: E402
from mulde.pipeline.evaluate import evaluate_run  # noqa: E402
from mulde.pipeline.extract import build_extractor, cache_for, extract_split, open_dataset  # noqa: E402
from mulde.pipeline.train import train_run  # noqa: E402

VARIANTS = {
    "demo": dict(DEMO_DATA),
    "perspective": {**DEMO_DATA, "n_test": 8, "perspective": 2.5, "object_scale": 0.6},
    "small": {**DEMO_DATA, "n_test": 8, "object_scale": 0.5},
}
SETS = {  # explicit, so that a row means the same whatever the demo's own default is
    "base": {"derived": []},
    "track": {"derived": ["track"]},
    "position": {"derived": ["position"]},
    "track+position": {"derived": ["track", "position"]},
}


def opt_suffix(options: dict) -> str:
    """The part of a run folder's name that names the ``--opt`` options it ran with."""
    return "".join(f"-{k}={v}" for k, v in options.items()).replace("/", "_")


def render_scene(out: str | Path, variant: str, seed: int) -> tuple[Path, Path, dict]:
    """The synthetic scene of ``variant`` and ``seed`` under ``out`` (rendered once): its
    folder, its data folder and its manifest."""
    base = Path(out) / f"{variant}-s{seed}"
    data = base / "data"
    if not (data / "synthetic.json").is_file():
        generate_synthetic(data, seed=seed, **VARIANTS[variant])
    return base, data, json.loads((data / "synthetic.json").read_text())


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
    ap.add_argument("--train-seeds", type=int, nargs="+", default=None,
                    help="training seeds per scene (default: the scene's seed)")
    ap.add_argument("--motion", nargs="+", default=[None], metavar="METHOD",
                    help="motion_method values to compare (default: the demo's own)")
    ap.add_argument("--flow", nargs="+", default=[None], metavar="METHOD", choices=["auto", *FLOW_METHODS],
                    help="optical flow methods to compare (default: the demo's own, `auto`)")
    ap.add_argument("--out", default=str(REPO / ".bench-runs" / "demo-kinds"))
    ap.add_argument("--opt", action="append", default=[], type=key_value, metavar="KEY=VALUE", help="extra options for every set")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    extra = dict(args.opt)
    suffix = opt_suffix(extra)
    lines, t0 = [], time.perf_counter()
    kinds_order = ("fast", "wrong_direction", "large_object", "loitering")
    results: dict[tuple[str, str, str, str], list[list[float]]] = {}
    for variant in args.variants:
        for seed in args.seeds:
            base, data, manifest = render_scene(args.out, variant, seed)
            for motion, flow in itertools.product(args.motion, args.flow):
                common = {**DEMO_OPTIONS, "root": str(data), "cache": str(base / "cache"), "seed": seed,
                          "device": "cpu", **extra, **({"motion_method": motion} if motion else {}),
                          **({"flow": flow} if flow else {})}
                cfg = resolve_config(common)
                method = cfg.extractor_options.get("motion_method", "mog2")
                ds, extractor = open_dataset(cfg), build_extractor(cfg)
                flow_used = extractor.cfg.flow  # what `auto` resolved to
                for split in ("train", "test"):
                    extract_split(ds, split, extractor, cache_for(cfg), progress=False)
                for name in args.sets:
                    for train_seed in args.train_seeds or [seed]:
                        run_cfg = resolve_config({**common, **SETS[name], "seed": train_seed})
                        tag = "" if train_seed == seed else f"-t{train_seed}"
                        run_dir = base / f"run-{method}-{flow_used}-{name}{tag}{suffix}"
                        train_run(run_cfg, run_dir, progress=False)
                        m = evaluate_run(run_dir, progress=False, plots=False)
                        kinds = per_kind(m, manifest)
                        row = [m["micro_auc"], m["macro_auc"], *(kinds.get(k, float("nan")) for k in kinds_order)]
                        results.setdefault((variant, method, flow_used, name), []).append(row)
                        cells = " | ".join(f"{100 * x:.1f}" for x in row)
                        lines.append(f"| {variant} | {seed}/{train_seed} | {method} | {flow_used} | {name} | {cells} |")
                        print(lines[-1], flush=True)
    print(f"\n{date.today()}, {os.cpu_count()} cores, `python benchmarks/demo_kinds.py {' '.join(sys.argv[1:])}`, "
          f"{time.perf_counter() - t0:.0f} s\n")
    print("| scene | seed scene/training | motion | flow | derived | micro | macro | too fast | wrong direction "
          "| oversized | loitering |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(lines))
    for (variant, method, flow_used, name), rows in results.items():
        if len(rows) > 1:
            mean = np.mean(rows, axis=0)
            print(f"| {variant} | mean of {len(rows)} | {method} | {flow_used} | {name} | "
                  + " | ".join(f"{100 * x:.1f}" for x in mean) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
