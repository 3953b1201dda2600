"""Where MULDE loses to the GMM on Ped2: readouts, type swaps and calibration, on one training.

    python benchmarks/ped2_gap.py --cache ~/.cache/mulde              # seeds 0 1 2, the cpu preset
    python benchmarks/ped2_gap.py --cache ~/.cache/mulde --seeds 0 --opt steps=3000

Trains MULDE (the run's preset) and the GMM baseline once per feature type on the cached Ped2
object features, keeps MULDE's per-level values f(x, σ_1..L), and then scores the same network
several ways without retraining, each through the pipeline's own frame max, conformal combination
and smoothing (what ``vad evaluate`` does):

- readouts of the L-vector: the paper's one-Gaussian GMM (MULDE's ``score_samples``), more
  components, diagonal covariance, only the levels at or above a σ, the mean of standardised
  levels, one level alone, the L-vector's first principal direction;
- type swaps: each subset of feature types scored by the GMM instead of MULDE (which type's
  scores cost the combination most);
- calibration: the mean conformal surprise (−log10 p) of the normal test frames and of the
  normal test objects, per type; 0.43 means the training frames are exchangeable with them.

Prints markdown tables (mean ± std over seeds). Features must be in the cache or are extracted.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mulde.cli import key_value  # noqa: E402
from mulde.config import resolve_config  # noqa: E402
from mulde.detector.base import fit_gmm, gmm_nll  # noqa: E402
from mulde.pipeline.evaluate import auc_metrics  # noqa: E402
from mulde.pipeline.extract import build_extractors, cache_for, load_tables, open_dataset  # noqa: E402
from mulde.pipeline.score import combine, frame_max, smooth, standardise, type_stats  # noqa: E402
from mulde.pipeline.train import make_configured_detector  # noqa: E402

DEFAULT_ROOT = REPO.parent / "shared" / "data" / "ucsd_ped2"
CALIBRATED = 1 / np.log(10)  # mean of -log10 U for U uniform: exchangeable frames

Readout = Callable[[Any, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""(fitted MULDE, training L-vectors, test L-vectors) -> (training row scores, test row scores)."""


def detector_readout(name: str | None = None) -> Readout:
    """The detector's own readout (``score_levels``): its fitted GMM, or ``name`` (mean, max, median)."""
    return lambda det, ltr, lte: (det.score_levels(ltr, name), det.score_levels(lte, name))


def gmm_readout(k: int = 1, cov: str = "full", min_sigma: float = 0.0) -> Readout:
    """A GMM refitted on the training L-vectors (levels σ >= ``min_sigma`` only)."""
    def read(det: Any, ltr: np.ndarray, lte: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keep = det.sigmas_ >= min_sigma
        g = fit_gmm(ltr[:, keep], k, cov, det.config.gmm_reg_covar, det.config.seed)
        return gmm_nll(g, ltr[:, keep]), gmm_nll(g, lte[:, keep])
    return read


def pc1_readout(det: Any, ltr: np.ndarray, lte: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Projection of the standardised levels on their first principal direction."""
    ztr, zte = ((x - det.level_mean_) / det.level_std_ for x in (ltr, lte))
    w, v = np.linalg.eigh(np.cov(ztr.T))
    d = v[:, -1] * np.sign(v[:, -1].sum())  # oriented so that a larger f (less likely) scores higher
    return ztr @ d, zte @ d


def level_readout(j: int) -> Readout:
    return lambda det, ltr, lte: (ltr[:, j], lte[:, j])


class Split:
    """One split's object rows per type, where each row's frame lies, and the videos' labels."""

    def __init__(self, items: list, types: list[str]) -> None:
        self.tables = {t: [tabs[t] for _, tabs in items] for t in types}
        self.values = {t: np.concatenate([tab.values for tab in self.tables[t]]) for t in types}
        self.labels = [np.asarray(item.labels, int) for item, _ in items] if items[0][0].labels is not None else None

    def frames(self, ftype: str, rows: np.ndarray, fill: float) -> list[np.ndarray]:
        out, start = [], 0
        for tab in self.tables[ftype]:
            out.append(frame_max(tab, rows[start:start + len(tab)], tab.n_frames, fill))
            start += len(tab)
        return out


def evaluate(train: Split, test: Split, rows: dict[str, tuple[np.ndarray, np.ndarray]], rule: str,
             sigma: float) -> tuple[float, dict[str, float], dict[str, float], dict[str, float]]:
    """Micro AUC of the combination and of each type alone, and the mean surprise of the normal
    test frames and objects per type, from per-row (train, test) scores."""
    stats, test_frames, alone, frame_cal, row_cal = {}, {}, {}, {}, {}
    normal = np.concatenate(test.labels) == 0
    for t, (rtr, rte) in rows.items():
        fill = float(rtr.min())
        stats[t] = type_stats(train.frames(t, rtr, fill), rtr)
        test_frames[t] = test.frames(t, rte, fill)
        alone[t] = _micro({t: test_frames[t]}, {t: stats[t]}, test.labels, rule, sigma)
        frame_cal[t] = float(standardise(np.concatenate(test_frames[t]), stats[t], "conformal")[normal].mean())
        row_stats = type_stats([rtr], rtr)
        row_normal = np.concatenate([lab[tab.frame_idx] == 0 for lab, tab in zip(test.labels, test.tables[t])])
        row_cal[t] = float(standardise(rte, row_stats, "conformal")[row_normal].mean())
    return _micro(test_frames, stats, test.labels, rule, sigma), alone, frame_cal, row_cal


def _micro(frames: dict[str, list[np.ndarray]], stats: dict, labels: list[np.ndarray], rule: str,
           sigma: float) -> float:
    n = len(labels)
    scores = {str(i): smooth(combine({t: f[i] for t, f in frames.items()}, stats, rule), sigma) for i in range(n)}
    return 100 * auc_metrics(scores, {str(i): labels[i] for i in range(n)})["micro_auc"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(DEFAULT_ROOT))
    ap.add_argument("--cache", default=os.environ.get("MULDE_CACHE", str(REPO / ".bench-cache")))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--opt", action="append", default=[], type=key_value, metavar="KEY=VALUE", help="extra config options")
    args = ap.parse_args()
    if not Path(args.root).is_dir():
        print(f"error: Ped2 not found at {args.root}; pass --root", file=sys.stderr)
        return 2
    extra = dict(args.opt)
    base = {"dataset": "ped2", "root": args.root, "cache": args.cache, "preset": args.preset, **extra}
    cfg = resolve_config(base)
    ds = open_dataset(cfg)
    extractors = build_extractors(cfg, ds)
    tr_items = load_tables(ds, "train", extractors, cache_for(cfg))
    te_items = load_tables(ds, "test", extractors, cache_for(cfg))
    types = list(tr_items[0][1])
    train, test = Split(tr_items, types), Split(te_items, types)
    rule, sigma = cfg.scoring.combine, float(cfg.scoring.smoothing_sigma or 0)
    t0 = time.perf_counter()

    gmm_rows = {}
    for t in types:
        g = make_configured_detector(resolve_config({**base, "detector": "gmm"})).fit(train.values[t])
        gmm_rows[t] = (g.score_samples(train.values[t]), g.score_samples(test.values[t]))

    results: dict[str, list] = {}
    swaps: dict[str, list[float]] = {}
    for seed in args.seeds:
        dets, levels = {}, {}
        for t in types:
            dets[t] = make_configured_detector(resolve_config({**base, "detector": "mulde", "seed": seed}))
            dets[t].fit(train.values[t], progress=False)
            levels[t] = (dets[t].log_density(train.values[t]), dets[t].log_density(test.values[t]))
        sigmas = dets[types[0]].sigmas_
        j04 = int(np.argmin(np.abs(sigmas - 0.4)))
        readouts: dict[str, Readout] = {
            "L-vector GMM, 1 component (paper; default)": detector_readout("gmm"),
            "L-vector GMM, 3 components": gmm_readout(3),
            "L-vector GMM, 5 components": gmm_readout(5),
            "L-vector GMM, diagonal": gmm_readout(cov="diag"),
            "L-vector GMM, levels σ >= 0.05": gmm_readout(min_sigma=0.05),
            "L-vector GMM, levels σ >= 0.4": gmm_readout(min_sigma=0.4),
            "mean of standardised levels": detector_readout("mean"),
            "first principal direction of the levels": pc1_readout,
            f"one level, σ = {sigmas[j04]:.2f}": level_readout(j04),
        }
        for name, read in readouts.items():
            rows = {t: read(dets[t], *levels[t]) for t in types}
            results.setdefault(name, []).append(evaluate(train, test, rows, rule, sigma))
            if name.endswith("(paper; default)"):
                for r in range(len(types) + 1):
                    for subset in itertools.combinations(types, r):
                        mixed = {t: gmm_rows[t] if t in subset else rows[t] for t in types}
                        key = "none" if not subset else " + ".join(subset)
                        swaps.setdefault(key, []).append(evaluate(train, test, mixed, rule, sigma)[0])
        print(f"seed {seed} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    gmm_result = evaluate(train, test, gmm_rows, rule, sigma)

    def ms(v: list[float], digits: int = 1) -> str:
        a = np.asarray(v)
        return f"{a.mean():.{digits}f} ± {a.std():.{digits}f}" if len(a) > 1 else f"{a[0]:.{digits}f}"

    print(f"\nPed2 object types {', '.join(types)}; rule {rule}, smoothing σ {sigma}; MULDE preset {args.preset}"
          f" {args.opt or ''}, seeds {args.seeds}; micro AUC %; {time.perf_counter() - t0:.0f} s\n")
    print("| readout of MULDE's levels | all types | per seed | " + " | ".join(f"{t} alone" for t in types) + " |")
    print("|" + " --- |" * (3 + len(types)))
    for name, res in results.items():
        print(f"| {name} | {ms([r[0] for r in res])} | {' / '.join(f'{r[0]:.1f}' for r in res)} | "
              + " | ".join(ms([r[1][t] for r in res]) for t in types) + " |")
    print(f"| GMM on the features (baseline) | {gmm_result[0]:.1f} | - | "
          + " | ".join(f"{gmm_result[1][t]:.1f}" for t in types) + " |")
    print("\n| types scored by the GMM instead of MULDE | all types |\n| --- | --- |")
    for key, v in swaps.items():
        print(f"| {key} | {ms(v)} |")
    paper = results["L-vector GMM, 1 component (paper; default)"]
    print(f"\nMean surprise of normal test frames / objects ({CALIBRATED:.2f} = exchangeable with training)\n")
    print("| detector | " + " | ".join(f"{t} frames | {t} objects" for t in types) + " |")
    print("|" + " --- |" * (1 + 2 * len(types)))
    print("| MULDE | " + " | ".join(f"{ms([r[2][t] for r in paper], 2)} | {ms([r[3][t] for r in paper], 2)}"
                                    for t in types) + " |")
    print("| GMM | " + " | ".join(f"{gmm_result[2][t]:.2f} | {gmm_result[3][t]:.2f}" for t in types) + " |")
    per_frame_tr = np.mean([c for tab in train.tables[types[0]] for c in np.bincount(tab.frame_idx, minlength=tab.n_frames)])
    normal_counts = [c for lab, tab in zip(test.labels, test.tables[types[0]])
                     for c in np.bincount(tab.frame_idx, minlength=tab.n_frames)[lab == 0]]
    print(f"\nobjects per frame: training {per_frame_tr:.2f}, normal test frames {np.mean(normal_counts):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
