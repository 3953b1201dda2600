"""Stage 4: score the test split and compute frame-level AUC-ROC (``vad evaluate``).

micro AUC: one ROC over all test frames of all videos (one threshold for every video; the
paper's main metric). macro AUC: the mean of per-video AUCs. A video whose frames are all one
class has no ROC; it is left out of the macro mean and counted in ``macro_excluded`` (on
Ped2, 4 of the 12 test videos are anomalous in every frame).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from mulde.config import write_config
from mulde.datasets.registry import get_dataset
from mulde.errors import DatasetError, InputError
from mulde.pipeline.cache import extractor_key
from mulde.pipeline.extract import build_extractor, cache_for, load_split
from mulde.pipeline.run import Run, load_run
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


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def evaluate_run(run_dir: str | Path, overrides: dict[str, Any] | None = None, out: str | Path | None = None,
                 progress: bool = True, plots: bool = True, run: Run | None = None) -> dict[str, Any]:
    """Score a run's test split, write scores.csv, metrics.json and plots; return the metrics."""
    from mulde.pipeline.report import plot_evaluation

    run = run or load_run(run_dir, device=(overrides or {}).get("device"))
    cfg = {**run.config, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    out = Path(out).expanduser() if out else run.folder / "eval"
    ds = get_dataset(cfg["dataset"], cfg["root"])
    extractor = build_extractor(cfg)
    key = extractor_key(extractor.name, extractor.config())
    if key != run.extractor_key:
        raise InputError(
            f"{run.folder}: the model was trained on features {run.extractor_key} but this config extracts {key}; "
            "evaluate with the run's own feature options (drop the overriding flags) or retrain"
        )
    test = load_split(ds, "test", extractor, cache_for(cfg), progress=progress)
    sigma = float(cfg.get("smoothing_sigma") or 0)
    combined, labels, per_type_smoothed, rows = {}, {}, {t: {} for t in run.feature_types}, []
    for item, tables in test:
        if item.labels is None:
            raise DatasetError(f"{item.source}: test video has no labels; `vad evaluate` needs annotations "
                               "(for a folder dataset add test/labels.csv)")
        n = len(item.labels)
        final, per_type, _ = score_video(tables, run.detectors, run.stats, n, sigma,
                                          int(run.config.get("track_window") or 0))
        combined[item.video_id], labels[item.video_id] = final, item.labels.astype(np.int64)
        for t, s in per_type.items():
            per_type_smoothed[t][item.video_id] = smooth(combine({t: s}, run.stats), sigma)
        frame_rows = {"video": item.video_id, "frame": np.arange(n), "score": final, "label": item.labels}
        frame_rows.update({f"score_{t}": s for t, s in per_type.items()})
        rows.append(pd.DataFrame(frame_rows))
    metrics = auc_metrics(combined, labels)
    metrics["per_type"] = {}
    if len(run.feature_types) > 1:
        for t in run.feature_types:
            m = auc_metrics(per_type_smoothed[t], labels)
            metrics["per_type"][t] = {"micro_auc": m["micro_auc"], "macro_auc": m["macro_auc"]}
    metrics.update({
        "dataset": ds.name, "root": str(ds.root), "features": cfg.get("features"),
        "extractor": run.extractor, "feature_types": list(run.feature_types),
        "detector": cfg.get("detector"), "smoothing_sigma": sigma, "run": str(run.folder),
    })
    out.mkdir(parents=True, exist_ok=True)
    frame_table = pd.concat(rows, ignore_index=True)
    tmp = out / "scores.csv.tmp"
    frame_table.to_csv(tmp, index=False)
    os.replace(tmp, out / "scores.csv")
    _atomic_write(out / "metrics.json", json.dumps(metrics, indent=2))
    write_config(cfg, out)
    if plots:
        plot_evaluation(combined, labels, metrics, out / "scores.png")
    return metrics
