"""Events, causal smoothing, thresholds and the frame-by-frame extractors (fast, no models)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from mulde.errors import InputError
from mulde.pipeline.events import EventRules, EventSink, EventTracker, Webhook, events_for_series
from mulde.pipeline.online import CausalSmoother, FrameResult
from mulde.pipeline.threshold import calibrate, split_calibration, threshold_at_rate, threshold_for


def _results(scores, fps=10.0):
    return [FrameResult(index=i, score=float(s), raw=float(s), per_type={"velocity": float(s)},
                        z={"velocity": float(s)}, driver="velocity",
                        boxes=[{"box": [1.0, 2.0, 3.0, 4.0], "score": float(s), "type": "velocity"}],
                        capture_time=1.7e9 + i / fps, stream_time=i / fps) for i, s in enumerate(scores)]


def test_event_opens_after_min_duration_and_closes_after_cool_down(tmp_path):
    # 10 fps: min_duration 0.3 s = 3 frames, cool_down 0.5 s = 5 frames
    scores = [0] * 5 + [2, 2] + [0] * 3 + [2, 3, 5, 2, 0, 0, 2, 0, 0, 0, 0, 0, 0] + [0] * 5
    images = {i: np.full((8, 8, 3), i, np.uint8) for i in range(len(scores))}
    records = events_for_series(_results(scores), EventRules(1.0, 0.3, 0.5), 10.0, "cam",
                                snapshot_dir=tmp_path, image_of=images.__getitem__)
    kinds = [r["event"] for r in records]
    assert kinds == ["open", "close"]  # the 2-frame blip at 5-6 is too short
    close = records[1]
    assert close["start"]["frame"] == 10 and close["end"]["frame"] == 16  # last frame above
    assert close["peak"]["frame"] == 12 and close["peak"]["score"] == 5.0
    assert close["duration_s"] == pytest.approx(0.7) and close["closed_by"] == "cool_down"
    assert close["driver"] == "velocity" and close["boxes"][0]["box"] == [1.0, 2.0, 3.0, 4.0]
    assert close["start"]["stream_time"] == 1.0 and close["start"]["wall_time"].startswith("2023-")
    assert records[0]["start"] == close["start"]  # the open record already names the start
    snap = tmp_path / f"{close['id']}.jpg"
    assert close["snapshot"] == str(snap) and snap.read_bytes()[:2] == b"\xff\xd8"


def test_open_event_is_closed_at_the_end_and_gaps_are_reported():
    records = []
    tracker = EventTracker(EventRules(1.0, 0.0, 10.0), 10.0, "cam", emit=records.append)
    for r in _results([2] * 5):
        tracker.update(r)
    assert tracker.is_open and [r["event"] for r in records] == ["open"]
    tracker.note_gap({"start": 1.7e9, "end": 1.7e9 + 2, "seconds": 2.0, "attempts": 3, "after_frame": 4})
    tracker.close("signal")
    assert [r["event"] for r in records] == ["open", "gap", "close"]
    assert records[-1]["closed_by"] == "signal" and records[-1]["gaps"][0]["attempts"] == 3
    with pytest.raises(InputError, match="min-duration"):
        EventRules(1.0, -1, 1)


def test_causal_smoother_ignores_the_future_and_states_its_delay():
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    y = rng.normal(size=50)
    y[:30] = x[:30]
    for kind in ("gaussian", "exponential"):
        sa, sb = CausalSmoother(3.0, kind), CausalSmoother(3.0, kind)
        a = [sa.step(v) for v in x]
        b = [sb.step(v) for v in y]
        np.testing.assert_array_equal(a[:30], b[:30])  # values after frame 29 never change earlier scores
    g = CausalSmoother(3.0, "gaussian")
    k = np.arange(10)
    w = np.exp(-0.5 * (k / 3.0) ** 2)
    assert g.delay_frames == pytest.approx((k * w).sum() / w.sum())  # ~2.2 frames
    assert CausalSmoother(3.0, "exponential").delay_frames == pytest.approx(3.0)
    assert f"= {g.delay_frames / 25:.2f} s at 25 fps" in g.describe(25.0)
    step = [CausalSmoother(3.0, "gaussian").step(v) for v in [0.0]]
    assert step == [0.0] and CausalSmoother(0, "gaussian").step(7.0) == 7.0
    with pytest.raises(InputError):
        CausalSmoother(1.0, "box")


def test_thresholds_from_alarm_rates_are_ordered_and_match_the_data():
    rng = np.random.default_rng(1)
    videos = [rng.normal(size=5000) for _ in range(4)]
    cal = calibrate(videos, fps=25.0)
    assert cal["n_frames"] == 20000 and cal["mean_run_frames"] >= 1
    rates = [0.1, 1, 10, 100, 1000]
    thr = [threshold_at_rate(cal, r) for r in rates]
    assert all(a > b for a, b in zip(thr, thr[1:]))  # fewer alarms need a higher threshold
    # 1000 alarms/h at 25 fps is within the data: the fraction above equals the implied rate
    p = 1000 * cal["mean_run_frames"] / (3600 * 25)
    above = np.mean(np.concatenate(videos) > thr[-1])
    assert above == pytest.approx(p, rel=0.1)
    value, how = threshold_for({"calibration": cal}, alarm_rate=10)
    assert value == thr[2] and "10 false alarms per hour" in how
    assert threshold_for({}, threshold=2.5)[0] == 2.5
    with pytest.raises(InputError, match="no threshold calibration"):
        threshold_for({}, alarm_rate=1)
    with pytest.raises(InputError, match="not both"):
        threshold_for({"calibration": cal}, alarm_rate=1, threshold=1)
    assert len(split_calibration(10, 0.2)) == 2 and len(split_calibration(1, 0.2)) == 0


class _Collect(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_posts_events_and_survives_a_dead_endpoint(tmp_path, caplog):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sink = EventSink(tmp_path / "ev.jsonl", webhook=f"http://127.0.0.1:{server.server_address[1]}/hook")
        sink({"event": "open", "id": "a"})
        sink({"event": "close", "id": "a"})
        sink.close()
    finally:
        server.shutdown()
        server.server_close()
    assert [r["event"] for r in _Collect.received] == ["open", "close"]
    lines = (tmp_path / "ev.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["a", "a"]
    dead = Webhook(f"http://127.0.0.1:{server.server_address[1]}/gone", timeout=1)
    dead({"event": "open"})
    dead.close()
    assert dead.failed == 1 and dead.sent == 0 and "webhook" in caplog.text
    with pytest.raises(InputError):
        Webhook("ftp://x")


def test_steppers_match_the_offline_extractors(tmp_path):
    """Object rows equal the extractor's with chunk_size=1; flow-grid windows are the centred ones shifted."""
    from mulde.datasets.synthetic import generate_synthetic
    from mulde.datasets.video import open_video
    from mulde.extractors.flowgrid import FlowGridExtractor
    from mulde.extractors.objects import ObjectExtractor
    from mulde.extractors.stepwise import make_stepper

    generate_synthetic(tmp_path, n_train=1, n_test=1, n_frames=60)
    video = sorted((tmp_path / "test").glob("*.avi"))[0]
    ex = ObjectExtractor(proposals="motion", deep=False, chunk_size=1, motion_min_area=20,
                         velocity_extras=("magnitude", "geometry"), context=True)
    with open_video(video) as reader:
        offline = ex.extract(reader, progress=False)
        frames = reader.get(range(reader.n_frames))
    stepper = make_stepper(ex)
    rows = [stepper.step(i, f) for i, f in enumerate(frames)]
    for kind in ("velocity", "context"):
        assert len(offline[kind]) > 50
        np.testing.assert_array_equal(np.concatenate([r[kind].values for r in rows]), offline[kind].values)
        np.testing.assert_array_equal(np.concatenate([r[kind].boxes for r in rows]), offline[kind].boxes)
    grid = FlowGridExtractor()
    with open_video(video) as reader:
        centred = grid.extract(reader, progress=False)["flowgrid"].values
    stepper = make_stepper(grid)
    trailing = np.concatenate([stepper.step(i, f)["flowgrid"].values for i, f in enumerate(frames)])
    # window c-8..c+7 (offline) == window t-15..t (online) for t = c + 7
    np.testing.assert_allclose(trailing[15:], centred[8:-7], atol=1e-6)


def test_online_tracks_are_the_offline_tracks_looking_back():
    """On one object moving steadily, the trailing track window at frame f equals the centred one at f - w."""
    from mulde.extractors.base import FeatureTable
    from mulde.pipeline.online import OnlineTracks
    from mulde.pipeline.tracks import smooth_along_tracks

    n, w = 30, 2
    frames = np.arange(n)
    boxes = np.stack([10 + 2.0 * frames, np.full(n, 20.0), 30 + 2.0 * frames, np.full(n, 60.0)], axis=1)
    values = np.random.default_rng(0).normal(size=(n, 4)).astype(np.float32)
    table = FeatureTable(frame_idx=frames, values=values, boxes=boxes, object_id=np.zeros(n))
    offline = smooth_along_tracks(table, w).values
    tracks = OnlineTracks(w)
    online = np.concatenate([tracks.step(FeatureTable(frame_idx=[f], values=values[f:f + 1], boxes=boxes[f:f + 1],
                                                      object_id=[0]), int(f)).values for f in frames])
    np.testing.assert_allclose(online[2 * w:], offline[w:n - w], rtol=1e-5, atol=1e-6)
    assert online.shape == offline.shape and np.allclose(online[5:, -1], 2.0 / 40.0)  # speed in heights/frame



def test_online_derived_columns_are_the_offline_ones_of_the_past_frames():
    """Each frame's track/position columns equal the offline ones computed on the frames so far,
    with a bounded buffer, and a stopped object's dwell climbs to 1."""
    from mulde.extractors.base import FeatureTable
    from mulde.pipeline.derived import add_derived
    from mulde.pipeline.online import OnlineDerived

    n, w = 60, 4
    walk = np.minimum(np.arange(n), 30) * 3.0  # walks 3 px/frame, stops at frame 30
    rows = []
    for f in range(n):
        rows.append((f, [10 + walk[f], 20, 30 + walk[f], 60]))
        if 10 <= f < 25:  # a second walker passes, far from the first
            rows.append((f, [300 - 4.0 * f, 100, 320 - 4.0 * f, 140]))
    frame_idx = np.array([r[0] for r in rows])
    boxes = np.array([r[1] for r in rows], np.float32)
    values = np.random.default_rng(0).normal(size=(len(rows), 3)).astype(np.float32)
    derived = OnlineDerived(("track", "position"), w)
    for f in range(n):
        at = frame_idx == f
        out = derived.step(FeatureTable(frame_idx=frame_idx[at], values=values[at], boxes=boxes[at],
                                        object_id=np.arange(at.sum())), f).values
        upto = frame_idx <= f
        offline = add_derived(FeatureTable(frame_idx=frame_idx[upto], values=values[upto], boxes=boxes[upto]),
                              ("track", "position"), w).values[at[upto]]
        np.testing.assert_allclose(out, offline, rtol=1e-5, atol=1e-6)
        assert out.shape == (at.sum(), 3 + 7)
        assert sum(len(t) for t in derived.rows) <= 2 * (2 * w + 1)
    assert out[0, 3] == 0 and out[0, 6] == 1.0  # standing still: no displacement, full dwell
    derived.reset()
    assert not derived.rows
