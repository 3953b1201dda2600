"""Context features: a box's translation speed and the motion beside its lower body."""

from __future__ import annotations

import numpy as np
import pytest

from mulde.datasets.video import ArrayVideo
from mulde.extractors.context import CONTEXT_COLUMNS, context_features
from mulde.extractors.objects import ObjectExtractor


def rider_flow(wheel: bool, neighbour_box: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A 40 px tall box moving right at 2 px/frame; optionally a wheel beside its lower body
    moving with it, or the same wheel covered by another object's box."""
    flow = np.zeros((100, 100, 2), np.float32)
    flow[20:60, 40:50, 0] = 2.0
    boxes = [[40, 20, 50, 60]]
    if wheel:
        flow[45:62, 30:40, 0] = 2.0
    if neighbour_box:
        boxes.append([28, 40, 40, 64])
    return flow, np.array(boxes, np.float32)


def test_a_vehicle_beside_the_lower_body_shows_in_the_side_columns():
    walker = context_features(*rider_flow(wheel=False))[0]
    rider = context_features(*rider_flow(wheel=True))[0]
    assert walker.shape == (len(CONTEXT_COLUMNS),)
    # speed is the translation in body heights per frame, the same with or without the wheel
    np.testing.assert_allclose([walker[0], rider[0]], [2.0 / 40, 2.0 / 40], rtol=1e-5)
    assert walker[1] == 0 and walker[2] == 0
    # bands: 2 x 20 px wide, rows 36..64 -> 1120 pixels, of which the wheel's 170 move at 2 px
    np.testing.assert_allclose(rider[1], 170 * 2.0 / 1120 / 40, rtol=1e-4)
    np.testing.assert_allclose(rider[2], 170 / 1120, rtol=1e-4)


def test_motion_inside_another_objects_box_is_not_context():
    """A neighbour walking beside the box is its own object, not a vehicle."""
    flow, boxes = rider_flow(wheel=True, neighbour_box=True)
    first = context_features(flow, boxes)[0]
    assert first[1] == 0 and first[2] == 0


def test_a_still_box_has_no_coherent_context_and_no_boxes_give_no_rows():
    flow = np.zeros((50, 50, 2), np.float32)
    flow[30:40, 0:10] = 3.0  # motion beside a still box
    still = context_features(flow, np.array([[10, 10, 20, 40]], np.float32))[0]
    assert still[0] == 0 and still[1] > 0 and still[2] == 0
    assert context_features(flow, np.zeros((0, 4))).shape == (0, 3)


def test_the_extractor_adds_context_rows_aligned_with_velocity():
    rng = np.random.default_rng(0)
    bg = rng.integers(60, 120, (96, 128), dtype=np.uint8)
    frames = []
    for t in range(10):
        img = bg.copy()
        img[40:60, 10 + 3 * t:30 + 3 * t] = 220
        frames.append(np.repeat(img[..., None], 3, axis=2))
    ex = ObjectExtractor(proposals="motion", deep=False, context=True, device="cpu", motion_min_area=50)
    assert ex.feature_types == ("velocity", "context") and ex.config()["context"] is True
    assert "context" not in ObjectExtractor(proposals="motion", deep=False, device="cpu").config()  # old keys hold
    tables = ex.extract(ArrayVideo(np.stack(frames)), progress=False)
    vel, ctx = tables["velocity"], tables["context"]
    assert ctx.values.shape == (len(vel), 3) and ctx.meta["columns"] == list(CONTEXT_COLUMNS)
    np.testing.assert_array_equal(ctx.frame_idx, vel.frame_idx)
    np.testing.assert_array_equal(ctx.boxes, vel.boxes)
    moving = ctx.values[ctx.frame_idx >= 2, 0] * (ctx.boxes[ctx.frame_idx >= 2, 3] - ctx.boxes[ctx.frame_idx >= 2, 1])
    assert np.median(moving) == pytest.approx(3.0, abs=1.0)  # the square moves 3 px per frame
    only = ObjectExtractor(proposals="motion", deep=False, velocity=False, context=True, device="cpu",
                           motion_min_area=50).extract(ArrayVideo(np.stack(frames)), progress=False)
    np.testing.assert_allclose(only["context"].values, ctx.values)
