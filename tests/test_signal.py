"""Leaving out feature types whose training data shows no signal (unstable or rare keypoints)."""

from __future__ import annotations

import logging

import numpy as np

from mulde.extractors.base import FeatureTable
from mulde.pipeline.signal import drop_weak_types, pose_stability, weak_types


def _people(noise: float, n_frames: int = 40, n_people: int = 4, seed: int = 0) -> FeatureTable:
    """Walkers 30 px apart, each with its own steady pose plus per-frame keypoint noise."""
    rng = np.random.default_rng(seed)
    poses = rng.uniform(0, 1, (n_people, 34))
    frames, boxes, values = [], [], []
    for t in range(n_frames):
        for k in range(n_people):
            x = 30 * k + 0.5 * t
            frames.append(t)
            boxes.append([x, 10, x + 10, 40])
            values.append(poses[k] + noise * rng.standard_normal(34))
    return FeatureTable(frame_idx=np.array(frames), values=np.array(values, np.float32),
                        boxes=np.array(boxes, np.float32), meta={"n_frames": n_frames})


def _objects(n_rows: int) -> FeatureTable:
    return FeatureTable(frame_idx=np.arange(n_rows) * 40 // n_rows, values=np.zeros((n_rows, 3)))


def test_stability_is_high_for_steady_poses_and_near_zero_for_noise():
    steady, pairs = pose_stability([_people(0.01)])
    noise, _ = pose_stability([_people(10.0)])
    assert pairs == 4 * 39
    assert steady > 0.95 and abs(noise) < 0.1


def test_weak_pose_is_dropped_with_a_log_line(caplog):
    vel = FeatureTable(frame_idx=np.arange(160) // 4, values=np.zeros((160, 3)), boxes=np.zeros((160, 4)))
    good = [{"velocity": vel, "pose": _people(0.01)}]
    bad = [{"velocity": vel, "pose": _people(10.0)}]
    assert weak_types(good, ("velocity", "pose")) == {}
    assert "unstable" in weak_types(bad, ("velocity", "pose"))["pose"]
    assert weak_types(bad, ("pose",)) == {}  # never leaves nothing to model
    rare = [{"velocity": _objects(4000), "pose": _people(0.01)}]
    assert "keypoints on 160 of 4000 objects" in weak_types(rare, ("velocity", "pose"))["pose"]
    with caplog.at_level(logging.WARNING):
        assert drop_weak_types(bad, ("velocity", "pose")) == ("velocity",)
    assert "leaving out the pose features" in caplog.text


def test_steady_pose_on_a_minority_of_the_objects_is_dropped():
    """Keypoints on under half the objects (real footage with cars and blobs: 22-38%) leave pose out,
    however steady they are; on most of the objects (Ped2: all of them) they stay."""
    minority = [{"velocity": _objects(400), "pose": _people(0.01)}]  # 160 of 400
    assert weak_types(minority, ("velocity", "pose"))["pose"] == "keypoints on 160 of 400 objects (40% < 50%)"
    assert weak_types([{"velocity": _objects(300), "pose": _people(0.01)}], ("velocity", "pose")) == {}
    assert weak_types([{"velocity": _objects(160), "pose": _people(0.01)}], ("velocity", "pose")) == {}
