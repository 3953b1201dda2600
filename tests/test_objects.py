"""ObjectExtractor: consistent per-object velocity, pose and deep tables for a video."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from mulde.datasets.video import ArrayVideo, open_video
from mulde.errors import InputError, VideoError, WeightsError
from mulde.extractors import weights
from mulde.extractors.objects import ObjectExtractor
from mulde.extractors.registry import create_extractor

PED2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "ucsd_ped2"


@pytest.fixture(autouse=True)
def _no_clip_hub(monkeypatch):
    monkeypatch.setattr(weights, "hf_cached_file", lambda repo: None)


def moving_square_video(n: int = 12, h: int = 96, w: int = 128, size: int = 20, step: int = 3):
    rng = np.random.default_rng(0)
    bg = rng.integers(60, 120, (h, w), dtype=np.uint8)
    square = rng.integers(170, 255, (size, size), dtype=np.uint8)
    frames = []
    for t in range(n):
        img = bg.copy()
        x = 10 + step * t
        img[40:40 + size, x:x + size] = square
        frames.append(np.repeat(img[..., None], 3, axis=2))
    return np.stack(frames)


def rows(table):
    return {(int(f), int(o)): tuple(b) for f, o, b in zip(table.frame_idx, table.object_id, table.boxes)}


def test_motion_objects_velocity_and_deep_are_consistent():
    frames = moving_square_video(n=4)
    ex = ObjectExtractor(proposals="motion", deep=True, clip_random_init=True, device="cpu",
                         chunk_size=2, motion_min_area=50)
    assert ex.feature_types == ("velocity", "deep")
    tables = ex.extract(ArrayVideo(frames), progress=False)
    vel, deep = tables["velocity"], tables["deep"]
    assert vel.values.shape[1] == 8 and deep.values.shape[1] == 512 and np.isfinite(deep.values).all()
    assert len(vel) >= len(frames) - 1 and rows(vel) == rows(deep)
    for t in (vel, deep):
        assert t.meta["n_frames"] == len(frames) and t.meta["dim"] == t.values.shape[1]
        assert t.frame_idx.min() >= 0 and t.frame_idx.max() < len(frames)
        assert (t.boxes[:, :2] >= 0).all() and (t.boxes[:, 2] <= 128).all() and (t.boxes[:, 3] <= 96).all()
        assert t.meta["n_motion_boxes"] == len(vel) and t.meta["n_detector_boxes"] == 0


def test_velocity_of_a_moving_square_across_chunks():
    frames = moving_square_video()
    ex = ObjectExtractor(proposals="motion", deep=False, device="cpu", chunk_size=4,
                         motion_min_area=50, velocity_extras=("magnitude", "geometry"))
    vel = ex.extract(ArrayVideo(frames), progress=False)["velocity"]
    assert vel.values.shape[1] == 8 + 1 + 3 and vel.meta["columns"][8] == "mean_magnitude"
    assert ex.last_timings["frames"] == len(frames) and ex.last_timings["flow"] > 0
    # the square moves right by 3 px/frame: dominant bin 0, mean magnitude about 3 (on frames
    # after the first, including frame 4 and 8, the first frames of later chunks)
    moving = vel.frame_idx > 0
    assert (np.argmax(vel.values[moving, :8], axis=1) == 0).all()
    assert np.median(vel.values[moving, 8]) > 2.0
    assert set(vel.frame_idx[moving]) >= {4, 8}
    at_chunk_start = np.isin(vel.frame_idx, [4, 8])
    assert (vel.values[at_chunk_start, 8] > 0.5).all()  # flow continues across chunk borders


def test_default_extractor_skips_deep_without_weights(caplog):
    with caplog.at_level(logging.WARNING, logger="mulde"):
        ex = create_extractor("objects", device="cpu", imgsz=160)
    assert ex.feature_types == ("velocity", "pose")
    assert sum("CLIP weights not found" in r.message for r in caplog.records) == 1
    cfg = ex.config()
    json.dumps(cfg)
    assert cfg["detector_weights"] == f"sha256:{weights.sha256_file(ex.detector.weights)}"  # by content
    assert cfg["feature_types"] == ["velocity", "pose"]
    assert ObjectExtractor(device="cpu", imgsz=160, detector_batch=2).config() == cfg
    assert ObjectExtractor(device="cpu", imgsz=320).config() != cfg
    tables = ex.extract(ArrayVideo(moving_square_video(n=6)), progress=False)
    assert set(tables) == {"velocity", "pose"}
    assert tables["pose"].values.shape[1] == 34 and tables["pose"].meta["n_frames"] == 6


def test_ped2_pose_rows_match_velocity_rows():
    folder = PED2 / "testing" / "frames" / "01"
    if not folder.is_dir():
        pytest.skip(f"UCSD Ped2 frames not found at {folder} (only in the project's workspace)")
    with open_video(folder) as reader:
        frames = reader.get(list(range(8)))
    ex = ObjectExtractor(device="cpu", imgsz=960, deep=False, chunk_size=4, yolo_runtime="torch")
    tables = ex.extract(ArrayVideo(frames), progress=False)
    vel, pose = tables["velocity"], tables["pose"]
    assert len(pose) >= 3 and pose.values.shape[1] == 34
    v = rows(vel)
    for key, box in rows(pose).items():
        assert v[key] == box  # same (frame, object id) -> same box
    # detector boxes come first in every frame: persons have the lowest object ids
    assert pose.meta["n_persons"] == len(pose) and vel.meta["n_objects"] == len(vel)
    kp = pose.values.reshape(-1, 17, 2)
    assert (np.median(kp, axis=(0, 1)) > 0.2).all() and (np.median(kp, axis=(0, 1)) < 0.8).all()


def test_option_errors(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="unknown objects option 'imgsize'"):
        ObjectExtractor(imgsize=640)
    with pytest.raises(InputError, match="proposals"):
        ObjectExtractor(proposals="sliding")
    with pytest.raises(InputError, match="pose features need a detector"):
        ObjectExtractor(proposals="motion", pose=True, deep=False)
    with pytest.raises(InputError, match="deep must be"):
        ObjectExtractor(deep="maybe")
    monkeypatch.setenv("MULDE_OFFLINE", "1")
    with pytest.raises(WeightsError, match="clip_vit_b16"):
        ObjectExtractor(proposals="motion", deep="on", cache=str(tmp_path))
    with pytest.raises(WeightsError, match="missing.pt"):
        ObjectExtractor(detector_weights=str(tmp_path / "missing.pt"))


def test_empty_video_is_an_error():
    class Empty:
        n_frames, path = 0, "empty.mp4"

        def iter_chunks(self, chunk_size=64):
            return iter(())

    with pytest.raises(VideoError, match="empty.mp4"):
        ObjectExtractor(proposals="motion", deep=False).extract(Empty(), progress=False)


def test_appearance_rows_are_the_detector_boxes_with_their_embeddings():
    """appearance=True adds one detector embedding per detector box, aligned with the pose rows."""
    import cv2
    import ultralytics

    bus = cv2.imread(str(Path(ultralytics.__file__).parent / "assets" / "bus.jpg"))[..., ::-1]
    frames = np.stack([bus, bus, np.roll(bus, 48, axis=1)])
    ex = ObjectExtractor(proposals="yolo", imgsz=320, appearance=True, device="cpu")
    assert ex.feature_types == ("velocity", "pose", "appearance") and ex.config()["appearance"] is True
    assert "appearance" not in ObjectExtractor(proposals="yolo", device="cpu").config()  # old cache keys hold
    tables = ex.extract(ArrayVideo(frames), progress=False)
    app, pose = tables["appearance"], tables["pose"]
    assert app.values.shape == (len(pose), 448) and app.meta["dim"] == 448 and len(app) >= 9
    assert rows(app) == rows(pose)
    assert np.isfinite(app.values).all() and np.abs(app.values).sum(axis=1).min() > 0
    # identical frames give identical embeddings; a shifted person keeps most of its embedding
    first, second, shifted = (app.values[app.frame_idx == f] for f in range(3))
    np.testing.assert_allclose(first, second, atol=1e-4)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    cos = unit(first) @ unit(shifted).T
    assert (cos.max(axis=1) > 0.9).all()
    with pytest.raises(InputError, match="appearance features come from the detector"):
        ObjectExtractor(proposals="motion", appearance=True, device="cpu")


@pytest.mark.parametrize(("chunk_size", "batch"), [(20, 16), (4, 16), (16, 3)])
def test_pipelined_features_are_bit_for_bit_the_serial_ones(chunk_size, batch):
    """Decode, motion and flow run in a worker thread ahead of detection; pieces of a detector
    batch cut the decoding chunks. Neither changes a single bit, and each velocity row is the
    histogram of the flow from the frame before (across chunk and piece borders)."""
    from mulde.extractors.flow import FlowEstimator
    from mulde.extractors.velocity import flow_histograms

    frames = moving_square_video(n=45, step=2)
    out = {}
    ex = ObjectExtractor(proposals="motion", deep=False, device="cpu", chunk_size=chunk_size,
                         detector_batch=batch, motion_min_area=50, velocity_extras=("magnitude",))
    for pipelined in (False, True):
        ex.cfg.pipelined = pipelined
        out[pipelined] = ex.extract(ArrayVideo(frames), progress=False)
    a, b = out[False]["velocity"], out[True]["velocity"]
    assert len(a) > 30
    for col in ("frame_idx", "object_id", "boxes", "values"):
        assert np.array_equal(getattr(a, col), getattr(b, col)), col
    vel, flow = out[True]["velocity"], FlowEstimator(ex.cfg.flow)
    for i in np.flatnonzero(vel.frame_idx > 0)[::7]:
        t = int(vel.frame_idx[i])
        expected = flow_histograms(flow(frames[t - 1], frames[t]), vel.boxes[i:i + 1], 8, ("magnitude",))
        assert np.array_equal(vel.values[i:i + 1], expected)


def test_pipeline_worker_errors_reach_the_caller():
    class Broken(ArrayVideo):
        def iter_chunks(self, chunk_size=64, start=0, stop=None):
            yield 0, self.frames[:4]
            raise VideoError(f"{self.path}: cannot decode frame 4")

    ex = ObjectExtractor(proposals="motion", deep=False, device="cpu", pipelined=True)
    with pytest.raises(VideoError, match="cannot decode frame 4"):
        ex.extract(Broken(moving_square_video(n=8)), progress=False)


@pytest.mark.slow
def test_pipelined_detector_features_match_serial_on_ped2():
    """With YOLO (the default runtime) in the loop, the worker thread competes with the
    detector for the cores; the features stay bit for bit those of the serial loop."""
    folder = PED2 / "testing" / "frames" / "04"
    if not folder.is_dir():
        pytest.skip(f"UCSD Ped2 frames not found at {folder} (only in the project's workspace)")
    with open_video(folder) as reader:
        frames = reader.get(list(range(20)))
    ex = ObjectExtractor(device="cpu", imgsz=960, deep=False, chunk_size=8, detector_batch=4,
                         velocity_norm="height", velocity_extras=("magnitude", "aspect"))
    out = {}
    for pipelined in (False, True):
        ex.cfg.pipelined = pipelined
        out[pipelined] = ex.extract(ArrayVideo(frames), progress=False)
    assert len(out[True]["pose"]) >= 10
    for kind in ("velocity", "pose"):
        for col in ("frame_idx", "object_id", "boxes", "values"):
            assert np.array_equal(getattr(out[False][kind], col), getattr(out[True][kind], col)), (kind, col)


def test_flow_auto_runs_raft_on_a_gpu_only_when_its_weights_are_on_disk(tmp_path, caplog):
    from mulde.extractors.objects import auto_flow

    assert auto_flow("cpu", str(tmp_path))[0] == "dis"
    method, why = auto_flow("cuda:0", str(tmp_path))
    assert method == "dis" and "vad weights download raft_small" in why
    (tmp_path / "weights").mkdir(exist_ok=True)
    (tmp_path / "weights" / "raft_small.pth").write_bytes(b"x")
    assert auto_flow("cuda:0", str(tmp_path))[0] == "raft_small"
    ex = ObjectExtractor(proposals="motion", deep=False, device="cpu")
    assert ex.cfg.flow == "dis" and ex.config()["flow"] == "dis"  # the key names the method run
    with caplog.at_level(logging.INFO, logger="mulde"):
        ex.extract(ArrayVideo(moving_square_video(n=3)), progress=False)
        ex.extract(ArrayVideo(moving_square_video(n=3)), progress=False)
    assert caplog.text.count("optical flow: dis on cpu (auto: the CPU method") == 1  # once, not per video
