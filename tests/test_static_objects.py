"""Stationary objects kept by the motion proposer's dual background (``mog2+static``)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mulde.errors import InputError
from mulde.extractors.motion import MotionConfig, MotionProposer

H, W = 120, 160


def _scene(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    texture = cv2.GaussianBlur(rng.normal(0, 1, (H, W)).astype(np.float32), (0, 0), 2)
    return 150 + 40 * texture / texture.std()


def _clip(path, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frames (n, H, W, 3) of a dark 11x31 box whose left edge is at ``path[t]`` (NaN: absent)
    on a textured scene with sensor noise, and its true boxes."""
    rng = np.random.default_rng(seed + 1)
    bg = _scene(seed)
    frames, boxes = [], []
    for t in range(n):
        img = bg.copy()
        box = np.full(4, np.nan, np.float32)
        if not np.isnan(path[t]):
            x = int(round(path[t]))
            img[50:81, max(x, 0):max(x + 11, 0)] = 40
            box[:] = (max(x, 0), 50, min(x + 11, W), 81)
        img += rng.normal(0, 2, img.shape)
        frames.append(np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, axis=2))
        boxes.append(box)
    return np.stack(frames), np.stack(boxes)


def _walk_in_and_stop(n: int = 160, stop: float = 70.0, speed: float = 2.0) -> np.ndarray:
    """Left edge per frame: enters from the left at ``speed`` px/frame, stops at ``stop``
    (reached at frame 45, after the middle of the first 64-frame chunk, so the median that
    primes the models holds the ground there)."""
    return np.minimum(-20.0 + speed * np.arange(n), stop)


def _run(method: str, frames: np.ndarray, chunk: int) -> list[np.ndarray]:
    prop = MotionProposer(MotionConfig(method=method, min_area=20))
    out: list[np.ndarray] = []
    for i in range(0, len(frames), chunk):
        out += prop(frames[i:i + chunk])
    return out


def _nearest(boxes: np.ndarray, truth: np.ndarray) -> float:
    """Largest corner error (px) of the box closest to ``truth``; inf when there is none."""
    if len(boxes) == 0:
        return float("inf")
    return float(np.abs(boxes - truth).max(axis=1).min())


@pytest.mark.parametrize("chunk", [64, 1])
def test_stopped_object_keeps_its_box(chunk):
    frames, truth = _clip(_walk_in_and_stop(), 160)
    stopped = 45
    mog = _run("mog2", frames, chunk)
    dual = _run("mog2+static", frames, chunk)
    # MOG2 alone learns the stopped box into its background within ~0.1 * history frames
    lost = next(t for t in range(stopped, 160) if _nearest(mog[t], truth[t]) > 3)
    assert lost - stopped < 40
    assert all(len(b) == 0 for b in mog[lost + 5:])
    # the dual background keeps one box on it, within a few px, to the end (115 frames)
    for t in range(stopped, 160):
        assert _nearest(dual[t], truth[t]) <= 3, f"frame {t}: {dual[t]}"
        assert len(dual[t]) == 1, f"frame {t}: duplicate boxes {dual[t]}"
    # while it walks the two methods agree (the long-term model adds nothing to moving objects)
    for t in range(15, stopped):
        assert _nearest(dual[t], truth[t]) <= 3 and _nearest(mog[t], truth[t]) <= 3


def test_no_ghost_where_a_first_frame_object_left():
    """Primed with a first frame that holds an object (the causal path): once the object has
    left, the long-term model must not report the ground it uncovered as a stationary object."""
    path = 30.0 + 4.0 * np.arange(100)
    path[path > W + 5] = np.nan
    frames, _ = _clip(path, 100)
    dual = _run("mog2+static", frames, 1)
    assert len(dual[5]) >= 1
    assert all(len(b) == 0 for b in dual[60:]), [t for t in range(60, 100) if len(dual[t])]


def test_static_option_is_validated():
    with pytest.raises(InputError, match="unknown motion method 'mog2\\+statik'"):
        MotionConfig(method="mog2+statik")
    with pytest.raises(InputError, match="static_history=100 must exceed history=200"):
        MotionConfig(method="mog2+static", static_history=100)
    assert MotionConfig(method="mog2+diff+static").static and not MotionConfig().static


def test_bad_motion_method_is_one_input_error_line():
    from mulde.config import resolve_config
    from mulde.pipeline.extract import build_extractor

    cfg = resolve_config({"features": "objects", "proposals": "motion", "deep": False,
                          "motion_method": "mog2+stationary"})
    with pytest.raises(InputError) as err:
        build_extractor(cfg)
    message = str(err.value)
    assert "\n" not in message and "mog2+stationary" in message and "mog2+static" in message


def test_static_option_changes_the_cache_key():
    from mulde.extractors.objects import ObjectExtractor
    from mulde.pipeline.cache import extractor_key

    plain = ObjectExtractor(proposals="motion", deep=False)
    static = ObjectExtractor(proposals="motion", deep=False, motion_method="mog2+static")
    assert static.config()["motion_method"] == "mog2+static"
    assert extractor_key("objects", plain.config()) != extractor_key("objects", static.config())


def test_stepwise_equals_offline_chunk_one_with_static(tmp_path):
    """The causal stepper (one frame at a time) gives the offline extractor's rows bit for bit."""
    from mulde.datasets.video import open_video
    from mulde.extractors.objects import ObjectExtractor
    from mulde.extractors.stepwise import make_stepper

    frames, _ = _clip(_walk_in_and_stop(n=80), 80)
    video = tmp_path / "stop.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (W, H))
    for f in frames:
        writer.write(f)
    writer.release()
    ex = ObjectExtractor(proposals="motion", deep=False, chunk_size=1, motion_min_area=20,
                         motion_method="mog2+static", velocity_extras=("magnitude",))
    with open_video(video) as reader:
        offline = ex.extract(reader, progress=False)["velocity"]
        decoded = reader.get(range(reader.n_frames))
    stepper = make_stepper(ex)
    rows = [stepper.step(i, f)["velocity"] for i, f in enumerate(decoded)]
    assert len(offline) >= 60
    np.testing.assert_array_equal(np.concatenate([r.boxes for r in rows]), offline.boxes)
    np.testing.assert_array_equal(np.concatenate([r.values for r in rows]), offline.values)
    # the stopped object (frames 45-79) is still there at the end, with ~zero speed
    last = offline.frame_idx == 79
    assert last.sum() == 1 and offline.values[last, -1][0] < 0.3
