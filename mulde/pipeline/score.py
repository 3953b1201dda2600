"""Stage 3: per-row detector scores -> per-frame scores -> one smoothed score per frame.

Rules (paper section 4, supplementary 7.2-7.3):
- object-centric: a frame's score is the max over its objects; a frame with no object gets the
  lowest object score seen in training (nothing there is as normal as it gets);
- several feature types are combined by standardising each type's frame scores with the
  training frame-score mean/std, then either clipping negatives (normal) to 0 and summing
  (``combine="sum"``, the default) or taking the largest z-score (``"max"``: a type that is
  flat on some scene cannot add its noise to every frame); a single type is only standardised
  (clipping would tie all normal frames and change nothing else);
- object tables may first get tracklet smoothing (``tracks.py``) and derived track/position
  columns (``derived.py``), the same at training and test time (``prepare_tables``);
- the result is smoothed over time per video with a 1-D Gaussian of ``smoothing_sigma`` frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from mulde.errors import InputError
from mulde.extractors.base import FeatureTable


@dataclass
class TypeStats:
    """Training statistics of one feature type, needed to score and combine at test time."""

    mean: float
    std: float
    fill: float
    n_rows: int

    def to_dict(self) -> dict:
        return asdict(self)


def frame_max(table: FeatureTable, row_scores: np.ndarray, n_frames: int, fill: float) -> np.ndarray:
    """Max of the row scores in each frame; frames without rows get ``fill``."""
    out = np.full(n_frames, -np.inf, dtype=np.float64)
    if len(table):
        np.maximum.at(out, table.frame_idx, np.asarray(row_scores, dtype=np.float64))
    out[~np.isfinite(out)] = fill
    return out


def type_stats(frame_scores: list[np.ndarray], row_scores: np.ndarray) -> TypeStats:
    """Mean/std of training frame scores and the fill value for empty frames."""
    fill = float(np.min(row_scores)) if len(row_scores) else 0.0
    allf = np.concatenate([np.where(np.isfinite(f), f, fill) for f in frame_scores]) if frame_scores else np.zeros(1)
    std = float(np.std(allf))
    return TypeStats(mean=float(np.mean(allf)), std=std if std > 1e-12 else 1.0, fill=fill,
                     n_rows=int(len(row_scores)))


COMBINE_RULES = ("sum", "max")


def combine(per_type: dict[str, np.ndarray], stats: dict[str, TypeStats], rule: str = "sum") -> np.ndarray:
    """Standardise each type with training stats; with several, sum the clipped z or take the max."""
    if rule not in COMBINE_RULES:
        raise InputError(f"unknown combine rule {rule!r}; choose one of {', '.join(COMBINE_RULES)}")
    z = {t: (s - stats[t].mean) / stats[t].std for t, s in per_type.items()}
    if len(z) == 1:
        return next(iter(z.values()))
    if rule == "max":
        return np.max(list(z.values()), axis=0)
    return np.sum([np.clip(v, 0.0, None) for v in z.values()], axis=0)


def smooth(scores: np.ndarray, sigma: float) -> np.ndarray:
    """Temporal Gaussian smoothing of one video's frame scores (sigma in frames; 0 = off)."""
    if sigma and sigma > 0 and len(scores) > 1:
        return gaussian_filter1d(np.asarray(scores, dtype=np.float64), float(sigma), mode="nearest")
    return np.asarray(scores, dtype=np.float64)


def prepare_tables(tables: dict[str, FeatureTable], track_window: int = 0, derived: Sequence[str] = (),
                   derived_window: int = 12) -> dict[str, FeatureTable]:
    """One video's tables as the detectors see them: tracklet smoothing, then derived columns."""
    from mulde.pipeline.derived import apply_derived
    from mulde.pipeline.tracks import apply_tracks

    return apply_derived(apply_tracks(tables, track_window), derived, derived_window)


def score_video(tables: dict[str, FeatureTable], detectors: dict, stats: dict[str, TypeStats],
                n_frames: int, smoothing_sigma: float, track_window: int = 0, derived: Sequence[str] = (),
                derived_window: int = 12, rule: str = "sum",
                ) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Score one video: (smoothed combined frame scores, raw frame scores per type, row scores per type).

    ``track_window``, ``derived``, ``derived_window`` and ``rule`` must be the run's (its
    detectors were trained on rows prepared that way).
    """
    tables = prepare_tables(tables, track_window, derived, derived_window)
    per_type, rows = {}, {}
    for ftype, det in detectors.items():
        table = tables[ftype]
        r = det.score_samples(table.values) if len(table) else np.zeros(0)
        rows[ftype] = np.asarray(r, dtype=np.float64)
        per_type[ftype] = frame_max(table, rows[ftype], n_frames, stats[ftype].fill)
    return smooth(combine(per_type, stats, rule), smoothing_sigma), per_type, rows
