"""Tracklet smoothing: IoU linking across gaps, windowed means, box-centre speed, errors."""

from __future__ import annotations

import numpy as np
import pytest

from mulde.errors import InputError
from mulde.extractors.base import FeatureTable
from mulde.pipeline.tracks import SPEED_COLUMNS, apply_tracks, link_tracks, smooth_along_tracks


def _two_objects(gap_at: int | None = 2) -> FeatureTable:
    """A walker moving +2 px/frame (box height 20; missing at frame ``gap_at``) and a static object."""
    frames, boxes, values = [], [], []
    for f in range(6):
        if f != gap_at:
            frames.append(f)
            boxes.append([10 + 2 * f, 50, 20 + 2 * f, 70])
            values.append([float(f), 1.0])
        frames.append(f)
        boxes.append([200, 40, 220, 80])
        values.append([100.0, -1.0])
    meta = {"n_frames": 6, "feature_type": "velocity", "dim": 2, "columns": ["a", "b"]}
    return FeatureTable(frame_idx=np.array(frames), values=np.array(values), boxes=np.array(boxes, np.float32),
                        object_id=np.zeros(len(frames), np.int32), meta=meta)


def test_link_tracks_bridges_a_missed_frame_and_keeps_objects_apart():
    table = _two_objects(gap_at=2)
    tid = link_tracks(table.frame_idx, table.boxes)
    walker = tid[table.boxes[:, 0] < 100]
    static = tid[table.boxes[:, 0] >= 100]
    assert len(set(walker)) == 1 and len(set(static)) == 1 and walker[0] != static[0]
    # a gap longer than max_gap starts a new track
    far = FeatureTable(frame_idx=np.array([0, 5]), values=np.zeros((2, 1)), boxes=np.array([[0, 0, 10, 10]] * 2))
    assert len(set(link_tracks(far.frame_idx, far.boxes, max_gap=2))) == 2


def test_smoothing_averages_within_the_window_and_measures_centre_speed():
    table = _two_objects(gap_at=None)
    out = smooth_along_tracks(table, window=1)
    assert out.values.shape == (len(table), 2 + len(SPEED_COLUMNS))
    assert out.meta["columns"] == ["a", "b", *SPEED_COLUMNS] and out.meta["dim"] == 5
    walker = np.flatnonzero(table.boxes[:, 0] < 100)
    # frame 0 averages frames 0-1, frame 3 averages 2-4, frame 5 averages 4-5
    np.testing.assert_allclose(out.values[walker, 0], [0.5, 1, 2, 3, 4, 4.5])
    # 2 px per frame in boxes 20 px tall: 0.1 heights per frame, to the right
    np.testing.assert_allclose(out.values[walker, 2:], [[0.1, 0.0, 0.1]] * 6, atol=1e-6)
    static = np.flatnonzero(table.boxes[:, 0] >= 100)
    np.testing.assert_allclose(out.values[static], [[100, -1, 0, 0, 0]] * 6)
    np.testing.assert_array_equal(out.frame_idx, table.frame_idx)
    np.testing.assert_array_equal(out.boxes, table.boxes)


def test_apply_tracks_touches_velocity_only_and_window_zero_is_identity():
    vel = _two_objects()
    pose = FeatureTable(frame_idx=vel.frame_idx, values=np.ones((len(vel), 34)), boxes=vel.boxes,
                        meta={"n_frames": 6, "feature_type": "pose"})
    tables = {"velocity": vel, "pose": pose}
    assert apply_tracks(tables, 0) is tables
    out = apply_tracks(tables, 3)
    assert out["pose"] is pose and out["velocity"].values.shape[1] == 5
    empty = FeatureTable.empty(2, 10)
    empty.boxes = np.zeros((0, 4), np.float32)
    assert apply_tracks({"velocity": empty}, 2)["velocity"].values.shape == (0, 5)


def test_bad_window_and_tables_without_boxes_are_clear_errors():
    with pytest.raises(InputError, match="track_window"):
        smooth_along_tracks(_two_objects(), window=-1)
    frames = FeatureTable(frame_idx=np.arange(3), values=np.zeros((3, 4)), meta={"n_frames": 3})
    with pytest.raises(InputError, match="needs boxes"):
        smooth_along_tracks(frames, window=2)
