"""``vad watch`` against real streams served over loopback by an FFmpeg binary (imageio-ffmpeg).

The video is the first 100 frames of ../shared/data/videos/car_traffic_640x360.mp4, downscaled
to 320x180 at 25 fps; the model is a small GMM on velocity features of the synthetic scenes,
so the real cars score high and events are guaranteed. Every server binds 127.0.0.1 only and
every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mulde.cli import main

VIDEO = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos" / "car_traffic_640x360.mp4"
N_FRAMES = 100


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ffmpeg() -> str:
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg", reason="imageio-ffmpeg (dev extra) serves the test streams")
    return imageio_ffmpeg.get_ffmpeg_exe()


@pytest.fixture(scope="module")
def clip(ffmpeg, tmp_path_factory) -> Path:
    if not VIDEO.is_file():
        pytest.skip(f"real video not found at {VIDEO} (only present in the project's workspace)")
    out = tmp_path_factory.mktemp("clip") / "cars.mp4"
    subprocess.run([ffmpeg, "-loglevel", "error", "-i", str(VIDEO), "-frames:v", str(N_FRAMES), "-vf",
                    "scale=320:180,fps=25", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-an",
                    str(out)], check=True, timeout=60)
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from mulde.datasets.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("syn")
    generate_synthetic(root, seed=0, n_train=5, n_test=1, n_frames=60)
    out = root / "run"
    assert main(["train", "--dataset", "folder", "--root", str(root), "--cache", str(root / "cache"),
                 "--features", "objects", "--proposals", "motion", "--feature-types", "velocity",
                 "--opt", "motion_min_area=20", "--deep", "off", "--detector", "gmm", "--derived", "track",
                 "--out", str(out), "-q"]) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["calibration"]["held_out"] and info["calibration"]["n_videos"] == 1
    return out


def _serve(ffmpeg: str, clip: Path, port: int, seconds: float | None = None) -> subprocess.Popen:
    """Stream the clip in real time as MPEG-TS over TCP (one client) on 127.0.0.1:port."""
    cmd = [ffmpeg, "-loglevel", "error", "-re", "-i", str(clip)]
    if seconds:
        cmd += ["-t", str(seconds)]
    cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-an", "-f", "mpegts",
            f"tcp://127.0.0.1:{port}?listen=1"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


@pytest.mark.slow
def test_causal_score_equals_watch_no_realtime(clip, run_dir, tmp_path):
    common = ["--model", str(run_dir), "--threshold", "1.0", "-q"]
    assert main(["score", str(clip), "--causal", "--out", str(tmp_path / "score.csv"),
                 "--events", str(tmp_path / "score.jsonl"), *common]) == 0
    assert main(["watch", str(clip), "--no-realtime", "--scores", str(tmp_path / "watch.csv"),
                 "--events", str(tmp_path / "watch.jsonl"), *common]) == 0
    a, b = pd.read_csv(tmp_path / "score.csv"), pd.read_csv(tmp_path / "watch.csv")
    assert len(a) == len(b) == N_FRAMES and a["frame"].tolist() == list(range(N_FRAMES))
    for col in ("score", "score_velocity", "time_s"):
        np.testing.assert_array_equal(a[col].to_numpy(), b[col].to_numpy())
    assert a["score"].max() > 1.0  # the cars move unlike the synthetic walkers
    closed = [r for r in _records(tmp_path / "watch.jsonl") if r["event"] == "close"]
    filed = _records(tmp_path / "score.jsonl")
    assert closed and len(closed) == len(filed)

    def same(r):
        return {k: v for k, v in r.items() if k not in ("snapshot", "start", "end", "peak")} | {
            "frames": (r["start"]["frame"], r["end"]["frame"], r["peak"]["frame"], r["peak"]["score"])}

    assert [same(r) for r in closed] == [same(r) for r in filed]
    assert all(Path(r["snapshot"]).read_bytes()[:2] == b"\xff\xd8" for r in filed)


@pytest.mark.slow
def test_watch_reconnects_after_the_server_dies(ffmpeg, clip, run_dir, tmp_path):
    port = _free_port()
    servers = [_serve(ffmpeg, clip, port)]

    def restart():
        time.sleep(2.0)  # about 50 frames in: kill the server mid-stream, bring it back a second later
        servers[0].kill()
        servers[0].wait(10)
        time.sleep(1.0)
        servers.append(_serve(ffmpeg, clip, port, seconds=2))

    threading.Thread(target=restart, daemon=True).start()
    time.sleep(0.3)
    try:
        code = main(["watch", f"tcp://127.0.0.1:{port}", "--model", str(run_dir), "--threshold", "-100",
                     "--give-up", "3", "--scores", str(tmp_path / "s.csv"), "--events", str(tmp_path / "e.jsonl"),
                     "--status-every", "0", "-q"])
    finally:
        for s in servers:
            s.kill()
            s.wait(10)
    assert code == 0
    records = _records(tmp_path / "e.jsonl")
    gaps = [r for r in records if r["event"] == "gap"]
    assert gaps and not gaps[0].get("gave_up") and gaps[0]["seconds"] >= 0.5  # reconnected
    assert gaps[-1].get("gave_up")  # the second server ended and watch gave up after 3 s
    scores = pd.read_csv(tmp_path / "s.csv")
    before = scores[scores["frame"] <= gaps[0]["after_frame"]]
    after = scores[scores["frame"] > gaps[0]["after_frame"]]
    assert len(before) >= 20 and len(after) >= 20  # it went on scoring after the reconnect
    assert np.isfinite(scores["score"]).all()
    close = [r for r in records if r["event"] == "close"]
    assert len(close) == 1 and close[0]["gaps"] and close[0]["gaps"][0]["after_frame"] == gaps[0]["after_frame"]


class _Garbage(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"this is not a video stream\n" * 2000)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("kind", ["unreachable", "webcam", "not-video"])
def test_bad_sources_end_with_one_error_line(kind, run_dir, capfd):
    server = None
    if kind == "unreachable":
        source = f"tcp://127.0.0.1:{_free_port()}"
    elif kind == "webcam":
        source = "97"
    else:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Garbage)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        source = f"http://127.0.0.1:{server.server_address[1]}/stream.ts"
    try:
        code = main(["watch", source, "--model", str(run_dir), "-q"])
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    expected = {"unreachable": "stream unreachable", "webcam": "webcam 97: cannot open",
                "not-video": "no decodable video"}[kind]
    assert expected in err[0]


@pytest.mark.slow
def test_sigterm_closes_the_open_event_and_flushes(clip, run_dir, tmp_path):
    events, scores, port = tmp_path / "e.jsonl", tmp_path / "s.csv", _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "YOLO_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mulde", "watch", str(clip), "--model", str(run_dir),
                             "--threshold", "-100", "--min-duration", "0", "--events", str(events),
                             "--scores", str(scores), "--metrics-port", str(port), "--status-every", "0", "-q"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not any(r["event"] == "open" for r in _records(events)):
            time.sleep(0.1)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err
    records = _records(events)
    assert [r["event"] for r in records] == ["open", "close"]
    assert records[1]["closed_by"] == "signal" and records[1]["end"]["frame"] >= records[1]["start"]["frame"]
    frame = pd.read_csv(scores)
    assert 0 < len(frame) < N_FRAMES  # stopped in the middle of the 4 s clip, rows complete
    assert "mulde_frames_total" in metrics and 'quantile="0.95"' in metrics and "mulde_events_total" in metrics


def _write_video(path: Path, width: int, height: int, n: int = 12) -> Path:
    import cv2

    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (width, height))
    for i in range(n):
        frame = np.full((height, width, 3), 90, np.uint8)
        cv2.rectangle(frame, (5 + 4 * i, 20), (25 + 4 * i, 60), (250, 250, 250), -1)  # a walker moving right
        out.write(frame)
    out.release()
    return path


def test_watch_warms_each_frame_size_once_and_leaves_streams_untouched(run_dir, tmp_path, monkeypatch):
    from mulde.pipeline.online import OnlineScorer

    videos = [str(_write_video(tmp_path / f"{w}x{h}.mp4", w, h)) for w, h in ((160, 96), (160, 96), (200, 112))]
    sizes: list[tuple[int, int]] = []
    warm = OnlineScorer.warm_up

    def recording(self, height, width, frames=2):
        sizes.append((height, width))
        warm(self, height, width, frames)

    def scores(name: str) -> pd.DataFrame:
        out = tmp_path / f"{name}.csv"
        assert main(["watch", *videos, "--model", str(run_dir), "--no-realtime", "--scores", str(out),
                     "--events", str(tmp_path / f"{name}.jsonl"), "--status-every", "0", "-q"]) == 0
        return pd.read_csv(out).sort_values(["source", "frame"]).reset_index(drop=True)

    monkeypatch.setattr(OnlineScorer, "warm_up", recording)
    warmed = scores("warmed")
    assert sizes == [(96, 160), (112, 200)]  # one warm-up per distinct size, before any frame
    monkeypatch.setattr(OnlineScorer, "warm_up", lambda self, *a, **k: None)
    cold = scores("cold")
    assert len(warmed) == 3 * 12 and warmed["score"].notna().all()
    same = ["source", "frame", "time_s", "score", "score_velocity", "raw", "driver"]  # not the clock columns
    pd.testing.assert_frame_equal(warmed[same], cold[same], check_exact=True)
