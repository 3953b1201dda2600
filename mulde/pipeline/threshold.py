"""Alert thresholds users can reason about: false alarms per hour of normal video.

At training time :func:`calibrate` summarises the causally smoothed scores of held-out normal
training frames (``run.json["calibration"]``). :func:`threshold_for` turns ``--alarm-rate R``
into a score threshold, or passes ``--threshold T`` through.

How a rate becomes a threshold: an alarm starts when the score rises above the threshold, and a
rise lasts ``mean_run_frames`` frames on average (measured on the held-out scores), so R alarms
per hour at ``fps`` mean that a fraction p = R * mean_run_frames / (3600 * fps) of normal frames
lies above the threshold. Where the held-out frames are enough to see that fraction (p >= 10 /
n_frames) the threshold is their (1 - p) quantile; rarer rates extrapolate the tail above the 90 %
quantile as exponential (threshold = u + scale * ln(0.1 / p), scale = mean excess over u). The
events' ``--min-duration`` removes the shortest rises, so the real rate is at most R.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mulde.errors import InputError

log = logging.getLogger(__name__)

STANDARD_RATES = (0.1, 1.0, 10.0, 60.0)
DEFAULT_ALARM_RATE = 1.0
TAIL_P = 0.1
CALIBRATION_VERSION = 1


def _runs(above: np.ndarray) -> np.ndarray:
    """Lengths of the runs of True in a boolean series."""
    edges = np.diff(np.r_[0, above.astype(np.int8), 0])
    return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


def calibrate(frame_scores: Sequence[np.ndarray] | np.ndarray, fps: float) -> dict[str, Any]:
    """Summary of held-out normal frame scores (one array per video, or one array) for run.json."""
    videos = [np.asarray(frame_scores, np.float64)] if isinstance(frame_scores, np.ndarray) and \
        np.asarray(frame_scores).ndim == 1 else [np.asarray(v, np.float64).reshape(-1) for v in frame_scores]
    videos = [v for v in videos if len(v)]
    if not videos:
        raise InputError("no held-out frame scores to calibrate thresholds on")
    if not fps or fps <= 0:
        raise InputError(f"calibration needs the frame rate of the videos, got fps={fps}")
    allf = np.concatenate(videos)
    if not np.isfinite(allf).all():
        raise InputError("held-out frame scores contain NaN or inf; cannot calibrate thresholds")
    levels = np.unique(np.r_[np.linspace(0.0, 1.0, 101), 1.0 - np.logspace(-6, -2, 41)])
    quantiles = np.quantile(allf, levels)
    u = float(np.quantile(allf, 1 - TAIL_P))
    excess = allf[allf > u] - u
    scale = float(excess.mean()) if len(excess) else 0.0
    q95 = float(np.quantile(allf, 0.95))
    runs = np.concatenate([_runs(v > q95) for v in videos])
    return {
        "version": CALIBRATION_VERSION,
        "n_frames": int(len(allf)), "n_videos": len(videos), "fps": float(fps),
        "hours": float(len(allf) / fps / 3600.0),
        "quantile_levels": [round(float(x), 6) for x in levels],
        "quantiles": [float(q) for q in quantiles],
        "tail": {"p": TAIL_P, "u": u, "scale": max(scale, 1e-9)},
        "mean_run_frames": float(runs.mean()) if len(runs) else 1.0,
        "mean": float(allf.mean()), "std": float(allf.std()), "max": float(allf.max()),
    }


def threshold_at_rate(cal: dict[str, Any], rate: float, fps: float | None = None) -> float:
    """Score threshold giving about ``rate`` false alarms per hour of normal video at ``fps``."""
    if not rate > 0:
        raise InputError(f"--alarm-rate must be > 0 false alarms per hour, got {rate}")
    fps = float(fps or cal["fps"])
    p = rate * cal["mean_run_frames"] / (3600.0 * fps)
    q, levels = np.asarray(cal["quantiles"]), np.asarray(cal["quantile_levels"])
    if p >= 1.0:
        return float(q[0])
    tail = cal["tail"]
    if p >= min(10.0 / cal["n_frames"], tail["p"]):  # enough held-out frames above it to measure
        return float(np.interp(1.0 - p, levels, q))
    return float(tail["u"] + tail["scale"] * math.log(tail["p"] / p))


def rate_table(cal: dict[str, Any], rates: Sequence[float] = STANDARD_RATES,
               fps: float | None = None) -> list[tuple[float, float]]:
    """(alarms per hour, threshold) for each of ``rates``."""
    return [(float(r), threshold_at_rate(cal, r, fps)) for r in rates]


def format_rate_table(cal: dict[str, Any], rates: Sequence[float] = STANDARD_RATES) -> str:
    """Lines for ``vad train``: the threshold each standard false-alarm rate implies."""
    lines = [f"alert thresholds from {cal['n_frames']} held-out normal frames "
             f"({cal['n_videos']} videos, {60 * cal['hours']:.1f} min at {cal['fps']:g} fps):"]
    for rate, thr in rate_table(cal, rates):
        lines.append(f"  --alarm-rate {rate:g}/h  ->  --threshold {thr:.3f}")
    return "\n".join(lines)


def threshold_for(run: Any, alarm_rate: float | None = None, threshold: float | None = None,
                  fps: float | None = None) -> tuple[float, str]:
    """(threshold, how it was chosen) from ``--threshold`` or ``--alarm-rate`` (default 1 per hour).

    ``run`` is a :class:`mulde.pipeline.run.Run` or its run.json dict.
    """
    if threshold is not None and alarm_rate is not None:
        raise InputError("give either --threshold or --alarm-rate, not both")
    if threshold is not None:
        if not math.isfinite(float(threshold)):
            raise InputError(f"--threshold must be a finite number, got {threshold}")
        return float(threshold), f"threshold {float(threshold):g} (given)"
    info = getattr(run, "info", run) or {}
    cal = info.get("calibration")
    if not cal:
        folder = getattr(run, "folder", "the run")
        raise InputError(f"{folder}: this run has no threshold calibration (trained by an older mulde); "
                         "pass --threshold T, or retrain with `vad train` to use --alarm-rate")
    rate = DEFAULT_ALARM_RATE if alarm_rate is None else float(alarm_rate)
    thr = threshold_at_rate(cal, rate, fps)
    return thr, f"threshold {thr:.3f} = {rate:g} false alarms per hour of normal video (calibrated)"


def split_calibration(n_videos: int, fraction: float, seed: int = 0) -> np.ndarray:
    """Indices of the training videos held out for calibration (none when < 2 videos or fraction 0)."""
    if not 0.0 <= fraction < 1.0:
        raise InputError(f"calibration_holdout must be a fraction in [0, 1), got {fraction}")
    k = int(round(fraction * n_videos))
    if fraction > 0 and n_videos >= 2:
        k = min(max(k, 1), n_videos - 1)
    else:
        k = 0
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(n_videos)[:k])


def held_out_scores(tables: list[dict[str, Any]], detectors: dict[str, Any], stats: dict[str, Any],
                    sigma: float, smoothing: str = "gaussian", rule: str = "sum",
                    levels: str = "sum") -> list[np.ndarray]:
    """Causally smoothed combined frame scores of held-out videos (their cached feature tables)."""
    from mulde.pipeline.online import CausalSmoother
    from mulde.pipeline.score import combine, frame_max

    out = []
    for tabs in tables:
        per_type = {}
        for t, det in detectors.items():
            tab = tabs[t]
            rows = det.score_samples(tab.values) if len(tab) else np.zeros(0)
            per_type[t] = frame_max(tab, rows, tab.n_frames, stats[t].fill)
        raw = combine(per_type, stats, rule, levels)
        smoother = CausalSmoother(sigma, smoothing)
        out.append(np.array([smoother.step(x) for x in raw]))
    return out
