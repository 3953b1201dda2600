"""Motion proposals: an object darker than the ground but of another colour is an object, not a shadow."""

from __future__ import annotations

import numpy as np
import pytest

from mulde.extractors.flow import to_gray
from mulde.extractors.motion import MotionConfig, MotionProposer

H, W = 120, 160
GRASS = (95, 150, 110)  # RGB
WALKER = (70, 62, 95)  # purple-grey: ~0.55 of the grass's brightness, so a "shadow" by brightness alone


def _walk(n: int = 90, colour: bool = True) -> np.ndarray:
    """A 7x17 walker crossing textured grass upwards at 1.5 px/frame, RGB (n, H, W, 3)."""
    rng = np.random.default_rng(0)
    ground = np.asarray(GRASS, np.float32) + rng.normal(0, 6, (H, W, 1)).astype(np.float32)
    frames = []
    for t in range(n):
        img = ground.copy()
        y = int(round(H + 10 - 1.5 * t))
        img[max(y - 17, 0):max(y, 0), 70:77] = WALKER
        img += rng.normal(0, 1.5, img.shape)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    frames = np.stack(frames)
    return frames if colour else np.repeat(to_gray_all(frames)[..., None], 3, axis=3)


def to_gray_all(frames: np.ndarray) -> np.ndarray:
    return np.stack([to_gray(f) for f in frames])


def _found(frames: np.ndarray, method: str) -> float:
    """Share of frames (walker fully in view) with a box on the walker."""
    prop = MotionProposer(MotionConfig(method=method, min_area=20))
    boxes = []
    for i in range(0, len(frames), 32):
        boxes += prop(frames[i:i + 32])
    hits = 0
    frames_in_view = range(30, 80)  # y from 75 down to 0: the walker is whole and moving
    for t in frames_in_view:
        b = boxes[t]
        hits += bool(len(b)) and bool(np.any((b[:, 0] <= 72) & (b[:, 2] >= 75) & (b[:, 3] - b[:, 1] >= 10)))
    return hits / len(frames_in_view)


@pytest.mark.parametrize("method", ["mog2", "mog2+static"])
def test_a_dark_walker_on_grass_keeps_its_box(method):
    # Grey MOG2 takes it for a shadow (brightness ratio in [0.5, 1]); colour MOG2 sees the hue.
    assert _found(_walk(), method) >= 0.9


def test_grey_footage_still_finds_objects_darker_than_half_the_ground():
    frames = _walk(colour=False)
    frames = (frames.astype(np.int16) - 40).clip(0, 255).astype(np.uint8)  # walker ~0.4 of the ground
    assert _found(frames, "mog2") >= 0.9


def test_colour_input_is_in_the_cache_key_of_motion_features_only():
    # features cached from grey motion boxes must not be read back as colour ones; detector-only
    # features (the Ped2 preset) keep their key
    from mulde.extractors.objects import ObjectExtractor

    assert ObjectExtractor(proposals="motion", deep=False).config()["motion_input"] == "colour"
    assert ObjectExtractor(proposals="yolo+motion", deep=False).config()["motion_input"] == "colour"
    assert "motion_input" not in ObjectExtractor(proposals="yolo", deep=False).config()


def test_grey_footage_runs_on_one_channel_and_colour_is_detected():
    from mulde.extractors.motion import has_colour

    grey3 = _walk(colour=False)
    grey1 = grey3[..., 0]
    boxes3 = MotionProposer(MotionConfig(min_area=20))(grey3)
    boxes1 = MotionProposer(MotionConfig(min_area=20))(grey1)
    assert all(np.array_equal(a, b) for a, b in zip(boxes3, boxes1))  # equal channels = grey
    assert not has_colour(grey3[0]) and has_colour(_walk()[0])
