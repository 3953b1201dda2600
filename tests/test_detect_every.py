"""``yolo_every``: the detector runs on every n-th frame; its boxes are carried by the flow between."""

from __future__ import annotations

import numpy as np
import pytest
from test_objects import moving_square_video

from mulde.datasets.video import ArrayVideo
from mulde.errors import InputError
from mulde.extractors.detection import Detections, moved_by_flow
from mulde.extractors.objects import ObjectExtractor
from mulde.extractors.stepwise import make_stepper

SIZE, STEP, TOP = 20, 3, 40  # moving_square_video's square: rows 40-60, x = 10 + 3t


def moving_square(n: int = 24) -> np.ndarray:
    return moving_square_video(n=n, w=160, size=SIZE, step=STEP)


def true_box(t: int) -> np.ndarray:
    return np.array([10 + STEP * t, TOP, 10 + STEP * t + SIZE, TOP + SIZE], np.float32)


class SquareDetector:
    """Stands in for YOLO: finds the bright square exactly and counts the frames it ran on."""

    is_pose, runtime, weights = False, "torch", None

    def __init__(self) -> None:
        self.frames_seen = 0

    def __call__(self, frames: np.ndarray) -> list[Detections]:
        self.frames_seen += len(frames)
        out = []
        for f in frames:
            ys, xs = np.nonzero(f[..., 0] >= 170)
            box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
            out.append(Detections(box, np.ones(1, np.float32), np.zeros(1, np.int32)))
        return out


def extractor(every: int, **options) -> tuple[ObjectExtractor, SquareDetector]:
    ex = ObjectExtractor(proposals="yolo", pose=False, deep=False, device="cpu", yolo_every=every,
                         velocity_extras=("magnitude",), **options)
    ex._detector = det = SquareDetector()
    return ex, det


def test_moved_by_flow_shifts_boxes_and_keypoints():
    flow = np.zeros((50, 80, 2), np.float32)
    flow[..., 0], flow[..., 1] = 2.0, -1.0
    kp = np.zeros((2, 17, 3), np.float32)
    kp[..., 2] = 0.9
    det = Detections(np.array([[10, 10, 20, 30], [70, 5, 80, 15]], np.float32), np.ones(2, np.float32),
                     np.zeros(2, np.int32), kp)
    moved = moved_by_flow(det, flow)
    np.testing.assert_allclose(moved.boxes[0], [12, 9, 22, 29])
    np.testing.assert_allclose(moved.boxes[1], [72, 4, 80, 14])  # clipped at the right border
    np.testing.assert_allclose(moved.keypoints[..., :2], kp[..., :2] + [2.0, -1.0])
    np.testing.assert_allclose(moved.keypoints[..., 2], 0.9)  # confidences are kept
    assert moved_by_flow(det, None) is det


@pytest.mark.parametrize("pipelined", [False, True])
def test_detector_runs_on_every_nth_frame_and_boxes_follow_the_object(pipelined):
    frames = moving_square()
    ex, det = extractor(3, chunk_size=8, detector_batch=5, pipelined=pipelined)
    vel = ex.extract(ArrayVideo(frames), progress=False)["velocity"]
    assert det.frames_seen == len(range(0, len(frames), 3))
    assert sorted(vel.frame_idx.tolist()) == list(range(len(frames)))  # one box on every frame
    for f, box in zip(vel.frame_idx, vel.boxes):
        assert np.abs(box - true_box(int(f))).max() <= 1.0, (f, box)
    every1, det1 = extractor(1, chunk_size=8, detector_batch=5, pipelined=pipelined)
    ref = every1.extract(ArrayVideo(frames), progress=False)["velocity"]
    assert det1.frames_seen == len(frames)
    # the velocity of a carried box is (nearly) that of the detected one: the flow is the same
    mag = ref.values[:, -1]
    np.testing.assert_allclose(vel.values[1:, -1], mag[1:], rtol=0.1)


def test_stepwise_scoring_carries_boxes_like_the_offline_extractor():
    frames = moving_square(n=14)
    ex, _ = extractor(2, chunk_size=1)
    offline = ex.extract(ArrayVideo(frames), progress=False)["velocity"]
    stepper = make_stepper(ex)
    rows = []
    for i, f in enumerate(frames):
        due = stepper.detects_on(i)
        assert due == (i % 2 == 0)
        rows.append(stepper.step(i, f)["velocity"])
    np.testing.assert_array_equal(np.concatenate([r.boxes for r in rows]), offline.boxes)
    np.testing.assert_array_equal(np.concatenate([r.values for r in rows]), offline.values)
    stepper.reset()
    assert stepper.detects_on(5)  # after a reconnect there is nothing to carry: detect


def test_yolo_every_is_in_the_cache_key_and_checked():
    one, _ = extractor(1)
    two, _ = extractor(2)
    one.detector.weights = two.detector.weights = None
    assert "yolo_every" not in _key(one) and _key(two)["yolo_every"] == 2
    for bad in (0, 1.5, "2x", True):
        with pytest.raises(InputError, match="yolo_every must be a whole number"):
            ObjectExtractor(proposals="motion", deep=False, device="cpu", yolo_every=bad)


def _key(ex: ObjectExtractor) -> dict:
    import mulde.extractors.objects as objects

    real = objects.weights_digest
    objects.weights_digest = lambda path: "fake"
    try:
        return ex.config()
    finally:
        objects.weights_digest = real
