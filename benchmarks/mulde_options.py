"""MULDE's level spacing, noise conditioning and largest noise scale, on synthetic density problems.

For each problem and seed it trains MULDE once per conditioning, log σ (our default) and σ
(the authors' code), and per largest noise scale ``--sigma-high`` (the paper's 1.0, or ``auto``:
the median distance between two standardised training rows), and reads each trained network out
on both scoring grids: the paper's
L levels evenly spaced in [σ_low, σ_high] (``linear``) and levels evenly spaced in log σ
(``geometric``). The spacing only changes the GMM's input, so it needs no retraining.
Problems: the authors' 2-D toy (``mulde.detector.toy``) and a curved 3-D manifold in R^64 with
off-manifold and latent-hole anomalies (``benchmarks/manifolds.py``). Prints AUC-ROC per
anomaly kind as a markdown table. Not a test.

    python benchmarks/mulde_options.py [--seeds 0 1 2] [--steps 2000] [--threads 2]
    python benchmarks/mulde_options.py --conditionings log_sigma --sigma-high 1 auto
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the working tree's mulde

from manifolds import make_manifold  # noqa: E402

from mulde.cli import key_value  # noqa: E402
from mulde.detector import MULDE, make_toy  # noqa: E402
from mulde.detector.base import fit_gmm, gmm_nll  # noqa: E402
from mulde.detector.neural import level_grid  # noqa: E402


def problems(seed: int, which: list[str], n_train: int = 6000) -> dict[str, tuple]:
    out = {}
    if "toy" in which:
        train, test, y = make_toy(seed)
        out["toy 2-D"] = (train, test, y, y.copy(), {1: "anomaly"})
    if "manifold" in which:
        tr, te, yy, kk = make_manifold(n_train=n_train, seed=seed)
        out["manifold 3-in-64"] = (tr, te, yy, kk, {1: "off", 2: "hole"})
    return out


def aucs(y: np.ndarray, kind: np.ndarray, names: dict[int, str], score: np.ndarray) -> dict[str, float]:
    res = {"all": roc_auc_score(y, score)}
    for k, name in names.items():
        keep = (kind == 0) | (kind == k)
        if len(names) > 1:
            res[name] = roc_auc_score(kind[keep] == k, score[keep])
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--units", type=int, nargs="+", default=[512, 512])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--n-train", type=int, default=6000, help="manifold training rows")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--opt", action="append", default=[], type=key_value, metavar="KEY=VALUE",
                    help="a further MULDE option for every run, e.g. tf32=false (repeatable)")
    ap.add_argument("--problems", nargs="+", default=["toy", "manifold"], choices=["toy", "manifold"])
    ap.add_argument("--conditionings", nargs="+", default=["log_sigma", "sigma"], choices=["log_sigma", "sigma"])
    ap.add_argument("--sigma-high", nargs="+", default=["1.0"], metavar="SCALE",
                    help="largest noise scales to compare: numbers and/or auto (default: 1.0, the paper's)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    highs = [h if h == "auto" else float(h) for h in args.sigma_high]
    extra = dict(args.opt)
    results: dict[tuple[str, str, str, str], list[dict[str, float]]] = {}
    t0 = time.perf_counter()
    for seed in args.seeds:
        for pname, (train, test, y, kind, names) in problems(seed, args.problems, args.n_train).items():
            for cond in args.conditionings:
                for high in highs:
                    m = MULDE(hidden=tuple(args.units), steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                              device=args.device, seed=seed, conditioning=cond, sigma_high=high,
                              **extra).fit(train, progress=False)
                    shown = f"{high} ({m.sigma_high_:.2f})" if high == "auto" else str(high)
                    for spacing in ("linear", "geometric"):
                        grid = level_grid(m.config.sigma_low, m.sigma_high_, m.config.n_levels, spacing)
                        gmm = fit_gmm(m.log_density(train, grid), 1, seed=seed)
                        score = gmm_nll(gmm, m.log_density(test, grid))
                        res = aucs(y, kind, names, score)
                        results.setdefault((pname, cond, str(high), spacing), []).append(res)
                        print(f"seed {seed} {pname:<18} {cond:<9} sigma_high {shown:<12} {spacing:<9} "
                              + " ".join(f"{k} {v:.3f}" for k, v in res.items()), flush=True)
    print(f"\n{date.today()}, `python benchmarks/mulde_options.py {' '.join(sys.argv[1:])}`, "
          f"{args.units} units, batch {args.batch_size}, {args.steps} steps, lr {args.lr:g}, device {args.device}, "
          f"{extra or 'no further options'}, seeds {args.seeds}, "
          f"{time.perf_counter() - t0:.0f} s\n")
    print("| problem | conditioning | sigma_high | level spacing | AUC (mean ± std over seeds) |")
    print("| --- | --- | --- | --- | --- |")
    for (pname, cond, high, spacing), runs in results.items():
        cells = []
        for key in runs[0]:
            v = 100 * np.array([r[key] for r in runs])
            cells.append(f"{key} {v.mean():.1f} ± {v.std():.1f}")
        print(f"| {pname} | {cond} | {high} | {spacing} | {'; '.join(cells)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
