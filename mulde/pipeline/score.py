"""Stage 3: per-row detector scores -> per-frame scores -> one smoothed score per frame.

Rules (paper section 4, supplementary 7.2-7.3):
- object-centric: a frame's score is the max over its objects; a frame with no object gets the
  lowest object score seen in training (nothing there is as normal as it gets);
- several feature types are combined by standardising each type's frame scores with the
  training frame-score mean/std, then either clipping negatives (normal) to 0 and summing
  (``combine="sum"``, the paper's rule) or taking the largest z-score (``"max"``: a type that is
  flat on some scene cannot add its noise to every frame); a single type is only standardised
  (clipping would tie all normal frames and change nothing else);
- ``holdout_sum`` / ``holdout_max`` first re-standardise each type's z-scores on normal
  frames its model never saw (the calibration hold-out of ``vad train``): minus their median,
  divided by their 99th percentile minus the median. Training frames look more normal to a
  model than new normal frames do, by an amount that differs per type (a 208-d frame feature
  with one row per frame is fitted far more tightly than object rows), so training z-scores
  are not comparable across types; after this, 0 is a type's typical unseen normal frame and 1
  its normal 99th percentile in every type, so a type that is flat on a scene adds at most
  about its normal spread, never an offset that drowns the other types;
- ``holdout_tail`` turns each type's score into its surprise on those held-out normal frames,
  -log10 of the fraction of them scoring higher (an exponential tail fitted to their top 10%
  beyond the last one), and sums it over types (Fisher's rule for independent tests). A type's
  normal extremes then weigh what their rarity says, whatever their size: a heavy-tailed type
  whose normal frames reach 1e6 training std adds as little as one whose normal frames reach 3;
- ``conformal`` turns each type's frame score into -log10 of its conformal p-value against the
  run's own training frames, (1 + #frames scoring higher) / (n + 1), growing only as log10 of the
  distance beyond the highest training frame, and sums it over types (Fisher's rule). Each type's
  evidence is then bounded by how rare the frame is among n training frames, so a type with a
  heavy tail (MULDE's scores grow roughly as the fourth power of the distance from the data)
  cannot outvote the others with one huge value; and the temporal smoothing that follows
  averages rarities, not raw spikes. It needs no hold-out videos, and it is the default
  (``scoring.combine``; measured in benchmarks/RESULTS.md);
- in a run with object types and frame-level types (``extractor.frame_features``), the rule merges
  each level apart and the frame takes the larger level (``scoring.combine_levels: max``, the
  default; ``sum`` merges every type at once, as runs trained before the option did). The two
  levels see different things: the flow grid is blind to a scene that stops (its stillest frames
  are its most normal), the objects to motion no box covers; in a sum the blind level adds its
  normal noise to every frame, in the max it adds nothing, at the price of the summed evidence
  where both levels see an anomaly (benchmarks/RESULTS.md, session 30);
- object tables may first get tracklet smoothing (``tracks.py``) and derived track/position
  columns (``derived.py``), the same at training and test time (``prepare_tables``);
- the result is smoothed over time per video with a 1-D Gaussian of ``smoothing_sigma`` frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter1d

from mulde.config import COMBINE_LEVELS, COMBINE_RULES
from mulde.errors import InputError
from mulde.extractors.base import OBJECT_FEATURE_TYPES, FeatureTable


@dataclass
class TypeStats:
    """Training statistics of one feature type, needed to score and combine at test time."""

    mean: float
    std: float
    fill: float
    n_rows: int
    # median and (99th percentile - median) of the type's z-scores on held-out normal frames
    # (None: a run trained before they existed); used by the holdout_* combine rules
    held_center: float | None = None
    held_scale: float | None = None
    # z-score quantiles of those frames at HELD_LEVELS, and the mean excess of their top 10%
    # over the 90th percentile (the exponential tail of the holdout_tail rule)
    held_quantiles: list[float] | None = None
    held_tail: float | None = None
    # the conformal rule's curve on the training frames: z-scores (ascending), their surprise
    # -log10 p, and the spread (max - 99th percentile) that scales the log tail beyond the max
    train_z: list[float] | None = None
    train_surprise: list[float] | None = None
    train_spread: float | None = None

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
    std = std if std > 1e-12 else 1.0
    mean = float(np.mean(allf))
    return TypeStats(mean=mean, std=std, fill=fill, n_rows=int(len(row_scores)),
                     **conformal_curve((allf - mean) / std))


CONFORMAL_POINTS = 100
"""Points of the stored conformal curve, log-spaced in rank (dense where the p-values are small)."""


def conformal_curve(z: np.ndarray) -> dict[str, Any]:
    """The ``train_*`` fields of :class:`TypeStats`: the conformal surprise curve of training z-scores.

    At a training value v the surprise is -log10((1 + #frames above v) / (n + 1)); values are kept
    at ranks on a log grid from 1 to n (every one of the top ranks, where p-values are small).
    """
    srt = np.sort(np.asarray(z, np.float64)[np.isfinite(z)])
    n = len(srt)
    if not n:
        return {"train_z": [0.0], "train_surprise": [0.0], "train_spread": 1.0}
    ranks = np.round(np.geomspace(1, n, min(n, CONFORMAL_POINTS))).astype(int)
    values = np.unique(srt[n - ranks])
    above = n - np.searchsorted(srt, values, side="right")
    spread = float(srt[-1] - np.quantile(srt, 0.99))
    return {"train_z": [float(v) for v in values], "train_surprise": [float(v) for v in -np.log10((1.0 + above) / (n + 1.0))],
            "train_spread": spread if spread > 1e-9 else max(float(np.std(srt)), 1.0)}


def conformal_surprise(z: np.ndarray, st: TypeStats) -> np.ndarray:
    """-log10 of the conformal p-value of each z-score against the training frames in ``st``, and
    beyond the highest of them log10(1 + excess / spread) more, so order is kept without letting
    one extreme value dominate a sum."""
    z = np.asarray(z, np.float64)
    xs, ys = np.asarray(st.train_z, np.float64), np.asarray(st.train_surprise, np.float64)
    out = np.interp(z, xs, ys, left=0.0)
    beyond = z > xs[-1]
    out[beyond] = ys[-1] + np.log10(1.0 + (z[beyond] - xs[-1]) / float(st.train_spread))
    return out


HELD_QUANTILE = 0.99
HELD_LEVELS = np.round(np.arange(0, 91) / 100, 2)  # body of the held-out distribution; above: the tail fit


def held_out_spread(frame_scores: list[np.ndarray], stats: TypeStats) -> dict[str, float]:
    """``held_center`` / ``held_scale`` of one type from its frame scores on held-out normal videos.

    Median and (99th percentile - median) of their training z-scores: robust to the few
    frames of a held-out video that happen to look odd, and scaled by the normal tail, which
    is what a threshold or another type's evidence is compared with.
    """
    z = np.concatenate([(np.asarray(f, np.float64) - stats.mean) / stats.std for f in frame_scores]) \
        if frame_scores else np.zeros(0)
    z = z[np.isfinite(z)]
    if not len(z):
        return {"held_center": 0.0, "held_scale": 1.0, "held_quantiles": [0.0] * len(HELD_LEVELS), "held_tail": 1.0}
    center = float(np.median(z))
    scale = float(np.quantile(z, HELD_QUANTILE)) - center
    if not scale > 1e-9:  # a flat type (e.g. nothing moves): fall back to its spread, then to 1
        scale = float(np.std(z)) if np.std(z) > 1e-9 else 1.0
    q = np.quantile(z, HELD_LEVELS)
    top = z[z > q[-1]]
    tail = float(np.mean(top - q[-1])) if len(top) else 0.0
    return {"held_center": center, "held_scale": scale, "held_quantiles": [float(v) for v in q],
            "held_tail": tail if tail > 1e-9 else scale}


def surprise(z: np.ndarray, quantiles: Sequence[float], tail: float) -> np.ndarray:
    """-log10 of the estimated fraction of held-out normal frames with a z-score above ``z``.

    Empirical up to the 90th percentile (``quantiles`` at :data:`HELD_LEVELS`), then an
    exponential tail with mean excess ``tail``: 1 at the 90th percentile, +1 per
    ``tail * ln 10`` beyond it, so it keeps rising past the largest held-out frame.
    """
    z = np.asarray(z, np.float64)
    q = np.asarray(quantiles, np.float64)
    q = q + np.arange(len(q)) * 1e-9 * max(1.0, float(np.abs(q).max()))  # strictly increasing for interp
    level = np.interp(z, q, HELD_LEVELS, left=0.0)
    out = -np.log10(1.0 - np.minimum(level, HELD_LEVELS[-1]))
    beyond = z > q[-1]
    out[beyond] = -np.log10(1.0 - HELD_LEVELS[-1]) + (z[beyond] - q[-1]) / (tail * np.log(10.0))
    return out


def standardise(scores: np.ndarray, st: TypeStats, rule: str) -> np.ndarray:
    """One type's frame scores in the units a combine rule adds or compares."""
    z = (np.asarray(scores, np.float64) - st.mean) / st.std
    if rule == "conformal":
        if st.train_z is None:
            raise InputError("combine rule 'conformal' needs each type's training-frame curve, and this run has "
                             "none (trained by an older mulde); retrain, or pass --combine sum")
        return conformal_surprise(z, st)
    if rule.startswith("holdout"):
        if st.held_center is None or st.held_scale is None or (rule == "holdout_tail" and st.held_quantiles is None):
            raise InputError(f"combine rule {rule!r} needs per-type statistics of held-out normal frames, and "
                             "this run has none (trained by an older mulde); retrain, or pass --combine sum")
        if rule == "holdout_tail":
            return surprise(z, st.held_quantiles, float(st.held_tail or st.held_scale))
        z = (z - st.held_center) / st.held_scale
    return z


def combine(per_type: dict[str, np.ndarray], stats: dict[str, TypeStats], rule: str,
            levels: str = "sum") -> np.ndarray:
    """Standardise each type (training stats, or held-out normal frames for ``holdout_*``); with
    several, sum the z clipped at 0 (``sum``, ``holdout_sum``), take the max (``max``,
    ``holdout_max``) or sum the surprises (``holdout_tail``, ``conformal``). ``rule`` and
    ``levels`` have no defaults that matter: every caller passes the run's ``scoring.combine``
    and ``scoring.combine_levels``.

    ``levels="max"``: where object types and frame-level types are both present, each level is
    merged as above and the frame takes the larger of the two (``"sum"``: one merge over all)."""
    if rule not in COMBINE_RULES:
        raise InputError(f"unknown combine rule {rule!r} (scoring.combine); choose one of {', '.join(COMBINE_RULES)}")
    if levels not in COMBINE_LEVELS:
        raise InputError(f"unknown scoring.combine_levels {levels!r}; choose one of {', '.join(COMBINE_LEVELS)}")
    if len(per_type) == 1 and rule == "holdout_tail":  # one type: its linear units, no ties below the median
        rule = "holdout_sum"
    z = {t: standardise(s, stats[t], rule) for t, s in per_type.items()}
    objects = [t for t in z if t in OBJECT_FEATURE_TYPES]
    if levels == "max" and 0 < len(objects) < len(z):
        return np.maximum(_merge([z[t] for t in objects], rule), _merge([z[t] for t in z if t not in objects], rule))
    return _merge(list(z.values()), rule)


def _merge(z: list[np.ndarray], rule: str) -> np.ndarray:
    """One level's types, standardised by ``rule``: one type as it is, several summed (clipped at
    0) or, for the ``*max`` rules, their maximum."""
    if len(z) == 1:
        return z[0]
    if rule.endswith("max"):
        return np.max(z, axis=0)
    return np.sum([np.clip(v, 0.0, None) for v in z], axis=0)


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
                derived_window: int = 12, rule: str = "sum", levels: str = "sum",
                ) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Score one video: (smoothed combined frame scores, raw frame scores per type, row scores per type).

    ``track_window``, ``derived``, ``derived_window``, ``rule`` and ``levels`` must be the run's
    (its detectors were trained on rows prepared that way, its thresholds on scores merged so).
    """
    tables = prepare_tables(tables, track_window, derived, derived_window)
    per_type, rows = {}, {}
    for ftype, det in detectors.items():
        table = tables[ftype]
        r = det.score_samples(table.values) if len(table) else np.zeros(0)
        rows[ftype] = np.asarray(r, dtype=np.float64)
        per_type[ftype] = frame_max(table, rows[ftype], n_frames, stats[ftype].fill)
    return smooth(combine(per_type, stats, rule, levels), smoothing_sigma), per_type, rows
