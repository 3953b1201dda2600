"""Leave out a feature type whose training data shows it carries no signal (with a log line).

A feature type is only worth modelling if it describes the object: summed into the frame score,
a type made of noise adds noise to every frame. Normal training data alone can show that, with
no anomalies needed, for keypoints (``pose``):

* coverage: pose rows exist only where the pose model found a person. If that is under half
  of the object rows (``MIN_POSE_COVER``), most objects are cars, bicycles, motion blobs or people
  too small for keypoints, and the type's frame score says more about whether someone with
  keypoints is in view than about how they move; summed with the other types, it adds that to
  every frame (real footage with keypoints on 22-38% of the objects: benchmarks/RESULTS.md,
  session 21);
* stability: the same person's keypoints change little from one frame to the next, while two
  different people differ. With every column standardised on the training rows,
  ``1 - E‖p_t - p_{t+1}‖² / (2 · d)`` is 1 for a perfectly steady pose and 0 when consecutive
  poses of one track differ as much as two independent draws (keypoints that are noise, e.g. on
  people a few pixels tall). Below ``MIN_POSE_STABILITY`` the type is left out.

The thresholds are the midpoints of those scales, not values fitted to a dataset.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from mulde.extractors.base import FeatureTable
from mulde.pipeline.tracks import link_tracks

log = logging.getLogger(__name__)

MIN_POSE_COVER = 0.5
MIN_POSE_STABILITY = 0.5
MIN_PAIRS = 50


def pose_stability(tables: Sequence[FeatureTable]) -> tuple[float, int]:
    """(stability, number of consecutive same-track pairs) over a list of pose tables."""
    rows = [t for t in tables if len(t) and t.boxes is not None]
    if not rows:
        return float("nan"), 0
    allv = np.concatenate([t.values for t in rows]).astype(np.float64)
    mean, std = allv.mean(0), np.maximum(allv.std(0), 1e-6)
    sq, pairs = 0.0, 0
    for t in rows:
        tid = link_tracks(t.frame_idx, t.boxes)
        order = np.lexsort((t.frame_idx, tid))
        v = (t.values[order] - mean) / std
        same = (np.diff(tid[order]) == 0) & (np.diff(t.frame_idx[order]) == 1)
        if same.any():
            d = v[1:][same] - v[:-1][same]
            sq += float((d * d).sum())
            pairs += int(same.sum())
    if pairs == 0:
        return float("nan"), 0
    return 1.0 - sq / pairs / (2.0 * allv.shape[1]), pairs


def weak_types(train: Sequence[dict[str, FeatureTable]], types: Sequence[str]) -> dict[str, str]:
    """{type: reason} for the types the training tables show to carry no signal (never all types)."""
    out: dict[str, str] = {}
    if "pose" in types and len(types) > 1:
        pose = [tabs["pose"] for tabs in train if "pose" in tabs]
        n_pose = sum(len(t) for t in pose)
        others = [t for t in types if t != "pose"]
        n_obj = max(sum(len(tabs[o]) for tabs in train if o in tabs) for o in others)
        if n_obj and n_pose < MIN_POSE_COVER * n_obj:
            out["pose"] = (f"keypoints on {n_pose} of {n_obj} objects ({n_pose / n_obj:.0%} < "
                           f"{MIN_POSE_COVER:.0%})")
        else:
            stab, pairs = pose_stability(pose)
            if pairs >= MIN_PAIRS and stab < MIN_POSE_STABILITY:
                out["pose"] = (f"keypoints unstable: a tracked person's pose changes from frame to frame almost "
                               f"as much as between people (stability {stab:.2f} < {MIN_POSE_STABILITY} over "
                               f"{pairs} frame pairs)")
    return out


def drop_weak_types(train: Sequence[dict[str, FeatureTable]], types: Sequence[str]) -> tuple[str, ...]:
    """``types`` without the weak ones, logging each one left out and why."""
    weak = weak_types(train, types)
    for t, why in weak.items():
        log.warning("leaving out the %s features: %s (set detector.drop_weak_types false or pass "
                    "--feature-types to keep them)", t, why)
    return tuple(t for t in types if t not in weak)
