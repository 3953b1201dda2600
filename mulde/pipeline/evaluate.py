"""Stage 4: score the test split and compute frame-level AUC-ROC (``vad evaluate``).

micro AUC: one ROC over all test frames of all videos (one threshold for every video; the
paper's main metric). macro AUC: the mean of per-video AUCs. A video whose frames are all one
class has no ROC; it is left out of the macro mean and counted in ``macro_excluded`` (on
Ped2, 4 of the 12 test videos are anomalous in every frame).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from mulde.atomic import atomic_path, atomic_write
from mulde.config import write_config
from mulde.errors import InputError
from mulde.pipeline.extract import build_extractors, cache_for, load_tables, open_dataset
from mulde.pipeline.run import Run, check_features, load_run, requested_device, run_config
from mulde.pipeline.score import combine, score_video, smooth

log = logging.getLogger(__name__)


def auc_metrics(scores: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict[str, Any]:
    """Micro and macro frame-level AUC-ROC over videos (dicts keyed by video id)."""
    ids = list(scores)
    y = np.concatenate([labels[v] for v in ids])
    s = np.concatenate([scores[v] for v in ids])
    if y.min() == y.max():
        raise InputError("the test labels hold a single class; AUC-ROC needs normal and anomalous frames")
    per_video = {}
    for v in ids:
        if labels[v].min() != labels[v].max():
            per_video[v] = float(roc_auc_score(labels[v], scores[v]))
    return {
        "micro_auc": float(roc_auc_score(y, s)),
        "macro_auc": float(np.mean(list(per_video.values()))) if per_video else float("nan"),
        "per_video_auc": per_video,
        "macro_videos": len(per_video),
        "macro_excluded": [v for v in ids if v not in per_video],
        "n_frames": int(len(y)),
        "anomalous_fraction": float(y.mean()),
    }


def evaluate_run(run_dir: str | Path, overrides: dict[str, Any] | None = None, out: str | Path | None = None,
                 progress: bool = True, plots: bool = True, run: Run | None = None) -> dict[str, Any]:
    """Score a run's test split, write scores.csv, metrics.json and plots; return the metrics."""
    from mulde.pipeline.report import plot_evaluation

    run = run or load_run(run_dir, device=requested_device(overrides))
    cfg = run_config(run, overrides)
    out = Path(out).expanduser() if out else run.folder / "eval"
    ds = open_dataset(cfg)
    extractors = build_extractors(cfg)
    check_features(run, extractors)
    test = load_tables(ds, "test", extractors, cache_for(cfg), progress=progress)
    sigma = float(cfg.scoring.smoothing_sigma or 0)
    window = int(cfg.scoring.track_window or 0)
    combined, labels, per_type_smoothed, rows = {}, {}, {t: {} for t in run.feature_types}, []
    for item, tables in test:
        n = len(item.labels) if item.labels is not None else next(iter(tables.values())).n_frames
        final, per_type, _ = score_video(tables, run.detectors, run.stats, n, sigma, window, cfg.scoring.derived,
                                          cfg.scoring.derived_window, cfg.scoring.combine,
                                          cfg.scoring.combine_levels)
        combined[item.video_id] = final
        frame_rows = {"video": item.video_id, "frame": np.arange(n), "score": final}
        if item.labels is not None:
            labels[item.video_id] = item.labels.astype(np.int64)
            frame_rows["label"] = item.labels
        for t, s in per_type.items():
            per_type_smoothed[t][item.video_id] = smooth(combine({t: s}, run.stats, cfg.scoring.combine), sigma)
        frame_rows.update({f"score_{t}": s for t, s in per_type.items()})
        rows.append(pd.DataFrame(frame_rows))
    unlabelled = [v for v in combined if v not in labels]
    if labels:
        metrics = auc_metrics({v: combined[v] for v in labels}, labels)
    else:
        log.warning("%s: the test split has no labels; writing scores and plots without AUC-ROC "
                    "(for a folder dataset add test/labels.csv)", ds.root)
        metrics = {"micro_auc": None, "macro_auc": None, "per_video_auc": {}, "macro_videos": 0,
                   "macro_excluded": [], "n_frames": int(sum(len(s) for s in combined.values()))}
    if unlabelled and labels:
        log.warning("%d test videos have no labels and are left out of the AUC: %s", len(unlabelled),
                    ", ".join(unlabelled[:5]) + (" ..." if len(unlabelled) > 5 else ""))
    metrics["unlabelled_videos"] = unlabelled
    metrics["per_type"] = {}
    if len(run.feature_types) > 1 and labels:
        for t in run.feature_types:
            m = auc_metrics({v: per_type_smoothed[t][v] for v in labels}, labels)
            metrics["per_type"][t] = {"micro_auc": m["micro_auc"], "macro_auc": m["macro_auc"]}
    metrics.update({
        "dataset": ds.name, "root": str(ds.root), "features": cfg.extractor.features,
        "extractor": run.extractor, "feature_types": list(run.feature_types),
        "detector": cfg.detector.name, "smoothing_sigma": sigma, "combine": cfg.scoring.combine,
        "combine_levels": cfg.scoring.combine_levels,
        "run": str(run.folder),
    })
    out.mkdir(parents=True, exist_ok=True)
    frame_table = pd.concat(rows, ignore_index=True)
    with atomic_path(out / "scores.csv") as tmp:
        frame_table.to_csv(tmp, index=False)
    atomic_write(out / "metrics.json", json.dumps(metrics, indent=2))
    write_config(cfg, out)
    if plots:
        plot_evaluation(combined, labels, metrics, out / "scores.png")
    return metrics
