"""Derived track/position columns, the combination rules and the synthetic scene's knobs."""

from __future__ import annotations

import numpy as np
import pytest

from mulde.errors import InputError
from mulde.extractors.base import FeatureTable
from mulde.pipeline.derived import (
    POSITION_COLUMNS,
    TRACK_COLUMNS,
    add_derived,
    apply_derived,
    track_columns,
)
from mulde.pipeline.score import TypeStats, combine, prepare_tables


def _two_objects(n: int = 40) -> FeatureTable:
    """A walker moving 2 px/frame to the right (20 px tall) and a stopped object that jitters."""
    rng = np.random.default_rng(0)
    frames, boxes = [], []
    for t in range(n):
        x = 10 + 2.0 * t
        frames.append(t)
        boxes.append([x - 4, 50, x + 4, 70])
        j = rng.normal(0, 0.3, 2)
        frames.append(t)
        boxes.append([100 + j[0], 20 + j[1], 110 + j[0], 40 + j[1]])
    values = np.ones((2 * n, 3), np.float32)
    return FeatureTable(frame_idx=np.array(frames), values=values, boxes=np.array(boxes, np.float32),
                        object_id=np.tile([0, 1], n), meta={"n_frames": n, "columns": ["a", "b", "c"], "dim": 3})


def test_track_columns_tell_a_walker_from_a_stopped_object():
    tab = _two_objects()
    cols = track_columns(tab.frame_idx, tab.boxes, window=12)
    mid = (tab.frame_idx >= 12) & (tab.frame_idx < 28)
    walker, stopped = cols[mid & (tab.object_id == 0)], cols[mid & (tab.object_id == 1)]
    np.testing.assert_allclose(walker[:, 0], 2.0 / 20, rtol=1e-5)  # dx in heights per frame
    np.testing.assert_allclose(walker[:, 1], 0.0, atol=1e-6)
    np.testing.assert_allclose(walker[:, 2], 1.0, rtol=1e-5)  # straight
    # the walker is within a quarter of its height (5 px) of a position for 5 of the 25 frames
    np.testing.assert_allclose(walker[:, 3], 5 / 25)
    assert np.all(np.abs(stopped[:, :2]) < 0.01) and np.all(stopped[:, 2] < 0.6)
    np.testing.assert_allclose(stopped[:, 3], 1.0)
    # the first frames see the stop a few frames later (max over the window)
    first = cols[tab.frame_idx == 0]
    np.testing.assert_allclose(first[:, 3], [5 / 25, 1.0])


def test_track_columns_match_their_definition_row_by_row():
    """Many crossing, stopping and gapped tracks in shuffled row order: the vectorised columns
    equal the module docstring's definitions computed for each row on its own."""
    from mulde.pipeline.tracks import link_tracks

    rng = np.random.default_rng(3)
    frames, boxes = [], []
    for _ in range(30):
        start, length = rng.integers(0, 150), rng.integers(1, 60)
        x, y, h = rng.uniform(0, 400), rng.uniform(0, 300), rng.uniform(15, 60)
        vx, vy = rng.normal(0, 2, 2) * (rng.random() > 0.3)
        for t in range(start, start + length):
            if rng.random() < 0.1:
                continue  # detector misses
            frames.append(t)
            boxes.append([x + vx * t, y + vy * t, x + vx * t + h / 2, y + vy * t + h])
    perm = rng.permutation(len(frames))
    fi, bx = np.array(frames)[perm], np.array(boxes, np.float32)[perm]
    window = 5
    cols = track_columns(fi, bx, window)
    tid = link_tracks(fi, bx)
    centre, height = (bx[:, :2] + bx[:, 2:]) / 2, np.maximum(bx[:, 3] - bx[:, 1], 1.0)

    def span_rows(r):  # the row's track within +-window frames, in frame order
        same = np.flatnonzero((tid == tid[r]) & (np.abs(fi - fi[r]) <= window))
        return same[np.argsort(fi[same])]

    def near(r):
        rows = span_rows(r)
        return np.sum(np.hypot(*(centre[rows] - centre[r]).T) <= 0.25 * height[r]) / (2 * window + 1)

    for r in range(len(fi)):
        rows = span_rows(r)
        a, b = rows[0], rows[-1]
        moved = centre[b] - centre[a]
        dt = fi[b] - fi[a]
        v = moved / dt / height[rows].mean() if dt else np.zeros(2)
        path = np.sum(np.hypot(*np.diff(centre[rows], axis=0).T))
        straight = np.hypot(*moved) / path if path > 1e-6 else 1.0
        dwell = max(near(q) for q in rows)
        np.testing.assert_allclose(cols[r], [*v, straight, dwell], rtol=1e-4, atol=1e-5)


def test_single_box_track_is_straight_with_small_cover():
    cols = track_columns(np.array([3]), np.array([[0, 0, 10, 20]], np.float32), window=4)
    np.testing.assert_allclose(cols[0], [0, 0, 1, 1 / 9])


def test_add_derived_appends_named_columns_and_keeps_rows():
    tab = _two_objects(12)
    out = add_derived(tab, ["position", "track"], 3)  # order follows DERIVED_KINDS
    assert out.values.shape == (len(tab), 3 + len(TRACK_COLUMNS) + len(POSITION_COLUMNS))
    assert out.meta["columns"] == ["a", "b", "c", *TRACK_COLUMNS, *POSITION_COLUMNS]
    assert out.meta["dim"] == out.values.shape[1] and out.meta["derived"] == ["track", "position"]
    np.testing.assert_array_equal(out.values[:, :3], tab.values)
    np.testing.assert_allclose(out.values[0, -3:], [10, 60, 20])  # centre x, y and height of the walker
    assert tab.values.shape[1] == 3  # the input is left alone


def test_apply_derived_touches_velocity_only_and_checks_options():
    tab = _two_objects(8)
    pose = FeatureTable(frame_idx=tab.frame_idx, values=np.zeros((len(tab), 4)), boxes=tab.boxes)
    tables = {"velocity": tab, "pose": pose}
    assert apply_derived(tables, (), 12) is tables
    out = apply_derived(tables, ["track"], 2)
    assert out["velocity"].values.shape[1] == 3 + len(TRACK_COLUMNS) and out["pose"] is pose
    empty = FeatureTable.empty(3, 10)
    assert apply_derived({"velocity": empty}, ["track", "position"], 2)["velocity"].values.shape == (0, 10)
    with pytest.raises(InputError, match="unknown derived feature"):
        apply_derived(tables, ["speed"], 2)
    with pytest.raises(InputError, match="derived_window"):
        apply_derived(tables, ["track"], 0)
    with pytest.raises(InputError, match="need boxes"):
        add_derived(FeatureTable(frame_idx=[0, 1], values=np.zeros((2, 2))), ["position"], 2)
    both = prepare_tables(tables, track_window=2, derived=["position"], derived_window=2)
    assert both["velocity"].values.shape[1] == 3 + 3 + len(POSITION_COLUMNS)  # tracklet speed, then position


def test_combine_rules():
    stats = {"a": TypeStats(0.0, 1.0, 0.0, 1), "b": TypeStats(10.0, 2.0, 0.0, 1)}
    per = {"a": np.array([-1.0, 2.0, 0.5]), "b": np.array([14.0, 6.0, 11.0])}
    np.testing.assert_allclose(combine(per, stats, "sum"), [2.0, 2.0, 1.0])
    np.testing.assert_allclose(combine(per, stats, "max"), [2.0, 2.0, 0.5])
    with pytest.raises(InputError, match="combine rule"):
        combine(per, stats, "mean")


def test_synthetic_perspective_and_object_scale(tmp_path):
    import json

    from mulde.datasets.synthetic import Depth, generate_synthetic

    d = Depth(120, perspective=2.5, object_scale=0.6)
    assert d.size(0.92 * 120) / d.size(0.25 * 120) == pytest.approx(np.exp(2.5 * 0.67), rel=1e-6)
    assert Depth(120).motion(10.0) == 1.0 and Depth(120, 0, 0.5).size(100) == 0.5
    out = generate_synthetic(tmp_path / "s", n_train=1, n_test=1, n_frames=60, perspective=2.0, object_scale=0.5)
    manifest = json.loads((out / "synthetic.json").read_text())
    assert manifest["perspective"] == 2.0 and manifest["object_scale"] == 0.5
    assert manifest["walkway_rows"] == [30, 110]  # the walkway spans the depth
    with pytest.raises(InputError, match="object_scale"):
        generate_synthetic(tmp_path / "t", object_scale=0)


def test_score_video_prepares_rows_like_training():
    """score_video hands the detector the same derived columns training saw."""
    from mulde.pipeline.score import score_video

    seen = []

    class Probe:
        def score_samples(self, X):
            seen.append(X.shape[1])
            return X[:, -1]  # the box height: position columns are last

    tab = _two_objects(10)
    stats = {"velocity": TypeStats(0.0, 1.0, 0.0, 1)}
    final, per_type, rows = score_video({"velocity": tab}, {"velocity": Probe()}, stats, 10, 0.0,
                                        derived=["track", "position"], derived_window=3, rule="max")
    assert seen == [3 + len(TRACK_COLUMNS) + len(POSITION_COLUMNS)]
    np.testing.assert_allclose(per_type["velocity"], 20.0)  # both boxes are 20 px tall
    np.testing.assert_allclose(final, 20.0)
