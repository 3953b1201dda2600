"""Velocity (V) features: orientation histograms of optical flow inside boxes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mulde.errors import InputError
from mulde.extractors.flow import FlowEstimator
from mulde.extractors.velocity import flow_histograms, velocity_columns


def textured(h: int = 120, w: int = 160, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 255, (h, w)).astype(np.float32)
    img = cv2.GaussianBlur(noise, (0, 0), 2.0)
    img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    return np.repeat(img[..., None], 3, axis=2)


def shifted(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(img, m, img.shape[1::-1], borderMode=cv2.BORDER_REFLECT)


@pytest.mark.parametrize("dx,dy,expected_bin", [(3, 0, 0), (0, 3, 2), (-3, 0, 4), (0, -3, 6), (2, 2, 1)])
def test_translation_gives_dominant_bin_and_magnitude(dx, dy, expected_bin):
    a = textured()
    b = shifted(a, dx, dy)
    flow = FlowEstimator("farneback")(a, b)
    box = np.array([[40, 30, 120, 90]], np.float32)  # away from the borders
    v = flow_histograms(flow, box, bins=8, extras=("magnitude",))
    hist, mean_mag = v[0, :8], v[0, 8]
    assert int(np.argmax(hist)) == expected_bin
    assert hist[expected_bin] > 0.8 * hist.sum()
    assert mean_mag == pytest.approx(np.hypot(dx, dy), rel=0.15)
    assert hist.sum() == pytest.approx(mean_mag, rel=1e-5)  # "area" norm sums to mean magnitude


def test_exact_histogram_on_constant_flow():
    flow = np.zeros((20, 40, 2), np.float32)
    flow[:, :20] = (1.0, 1.0)  # 45 degrees (down-right in image coordinates)
    flow[:, 20:] = (-2.0, 0.0)  # 180 degrees
    boxes = np.array([[0, 0, 20, 20], [0, 0, 40, 20], [20, 0, 40, 20]], np.float32)
    v = flow_histograms(flow, boxes, bins=8)
    np.testing.assert_allclose(v[0], [0, np.sqrt(2), 0, 0, 0, 0, 0, 0], rtol=1e-5)
    np.testing.assert_allclose(v[1], [0, np.sqrt(2) / 2, 0, 0, 1.0, 0, 0, 0], rtol=1e-5)
    np.testing.assert_allclose(v[2], [0, 0, 0, 0, 2.0, 0, 0, 0], rtol=1e-5)
    l1 = flow_histograms(flow, boxes, bins=4, norm="l1")
    np.testing.assert_allclose(l1.sum(axis=1), 1.0, rtol=1e-5)


def test_geometry_extras_and_columns():
    flow = np.zeros((100, 200, 2), np.float32)
    box = np.array([[50, 20, 100, 80]], np.float32)
    v = flow_histograms(flow, box, bins=8, extras=("magnitude", "geometry"))
    assert v.shape == (1, 12) and v.dtype == np.float32
    np.testing.assert_allclose(v[0, 8:], [0.0, 50 / 200, 60 / 100, 80 / 100], rtol=1e-6)
    assert velocity_columns(8, ("magnitude", "geometry"))[8:] == [
        "mean_magnitude", "width_rel", "height_rel", "bottom_y_rel"]


def test_degenerate_boxes_and_bad_options():
    flow = np.ones((10, 10, 2), np.float32)
    v = flow_histograms(flow, np.array([[12, 12, 15, 15], [3, 3, 3, 3]], np.float32), bins=8)
    assert v.shape == (2, 8) and np.isfinite(v).all()  # clipped to at least one pixel
    assert flow_histograms(flow, np.zeros((0, 4)), bins=8).shape == (0, 8)
    with pytest.raises(InputError, match="velocity extra"):
        flow_histograms(flow, np.zeros((0, 4)), extras=("speed",))
    with pytest.raises(InputError, match="bins"):
        flow_histograms(flow, np.zeros((0, 4)), bins=0)


def test_height_norm_removes_perspective():
    """Two objects at the same pace in body heights per frame get the same height-normed V."""
    from mulde.extractors.velocity import flow_histograms, velocity_columns

    flow = np.zeros((200, 200, 2), np.float32)
    flow[0:20, 0:10, 0] = 1.0  # a far walker: 20 px tall, 1 px/frame
    flow[100:180, 0:40, 0] = 4.0  # a near walker: 80 px tall, 4 px/frame
    boxes = np.array([[0, 0, 10, 20], [0, 100, 40, 180]], np.float32)
    area = flow_histograms(flow, boxes, extras=("magnitude", "aspect"), norm="area")
    height = flow_histograms(flow, boxes, extras=("magnitude", "aspect"), norm="height")
    assert area[1, 8] == pytest.approx(4 * area[0, 8])
    np.testing.assert_allclose(height[0], height[1], rtol=1e-6)
    assert height[0, 0] == pytest.approx(1 / 20) and height[0, 9] == pytest.approx(0.5)
    assert velocity_columns(8, ("magnitude", "aspect"))[-2:] == ["mean_magnitude", "aspect"]


def test_raft_flow_shapes_and_offline_error(tmp_path, monkeypatch):
    """RAFT (random weights: no hub in tests) returns (H, W, 2) for any frame size; missing weights are one line."""
    from mulde.errors import WeightsError
    from mulde.extractors.flow import FlowEstimator

    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (37, 50, 3), dtype=np.uint8)
    est = FlowEstimator("raft_small", device="cpu", random_init=True)
    out = est(a, np.roll(a, 2, axis=1))
    assert out.shape == (37, 50, 2) and out.dtype == np.float32 and np.isfinite(out).all()
    # sequence() batches the pairs; each flow must equal the pair computed alone
    frames = np.stack([np.roll(a, k, axis=1) for k in range(5)])
    est.raft_batch = 3
    seq = est.sequence(frames[1:], prev=frames[0])
    alone = np.stack([est(frames[k], frames[k + 1]) for k in range(4)])
    assert np.allclose(seq, alone, atol=1e-4)
    assert not est.sequence(frames)[0].any() and np.allclose(est.sequence(frames)[1:], alone, atol=1e-4)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("MULDE_OFFLINE", "1")
    with pytest.raises(WeightsError, match="raft_small.*vad weights download"):
        FlowEstimator("raft_small", device="cpu", cache=str(tmp_path))
