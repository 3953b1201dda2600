"""Memory stays flat in the video's length: a 10x longer video peaks within ~10% of the short
one's traced allocations, for every extractor (objects, flowgrid, hiera), the overlay writer and
the whole ``vad score`` path (extraction, scoring, CSV and overlay).

The videos are streamed (frames made per chunk, never held), so every byte the peak gains with
length is something an extractor keeps per frame: a frame, a flow field, a crop, or a view that
pins one. Python's tracemalloc sees numpy's and Python's allocations (not the native ones of
OpenCV or torch), which makes the figure exact and the test fast. What decoders do natively
(decord's read-ahead) is checked on the process's RSS instead.
"""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from mulde.datasets.video import VideoReader, open_video
from mulde.errors import InputError
from mulde.extractors.flowgrid import FlowGridExtractor
from mulde.extractors.hiera import HieraExtractor
from mulde.extractors.objects import ObjectExtractor
from mulde.pipeline.report import write_overlay

SHORT, LONG = 192, 1920  # 6 and 60 decoding chunks of 32 frames
MAX_GROWTH = 0.10


class StreamedVideo(VideoReader):
    """A reader whose frames are drawn when read, chunk by chunk: a textured background and two
    moving squares (so motion boxes and flow exist in every frame)."""

    fps = 25.0
    path = "<streamed>"

    def __init__(self, n_frames: int, height: int = 96, width: int = 128) -> None:
        self.n_frames, self.height, self.width = n_frames, height, width
        rng = np.random.default_rng(0)
        self._background = rng.integers(40, 200, (height, width, 3), dtype=np.uint8)

    def _read(self, indices: list[int]) -> np.ndarray:
        frames = np.repeat(self._background[None], len(indices), axis=0)
        for k, t in enumerate(indices):
            x = (2 * t) % (self.width - 24)
            frames[k, 30:54, x:x + 16] = 255
            frames[k, 60:80, self.width - 20 - x:self.width - 4 - x] = 0
        return frames


def traced_peak(extractor: Any, n_frames: int) -> tuple[int, dict]:
    tracemalloc.start()
    try:
        tables = extractor.extract(StreamedVideo(n_frames), progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, tables


def output_bytes(tables: dict) -> int:
    """Bytes of the returned tables: what the caller asked for, proportional to the length."""
    return sum(a.nbytes for t in tables.values() for a in (t.values, t.frame_idx, t.boxes, t.object_id)
               if a is not None)


def assert_flat(short: int, t_short: dict, long: int, t_long: dict) -> None:
    """The working memory (traced peak less the returned tables) of the long run is within
    ``MAX_GROWTH`` of the short run's. A flow-grid row is 208 floats per frame, so its output
    is not small beside a few frames; the object tables are a few hundred bytes per frame."""
    work_short, work_long = short - output_bytes(t_short), long - output_bytes(t_long)
    assert work_long <= (1 + MAX_GROWTH) * work_short, (
        f"working memory {work_short / 1e6:.1f} MB -> {work_long / 1e6:.1f} MB for 10x the frames")


def test_objects_memory_is_flat_in_video_length():
    """The serial loop, whose peak is deterministic. The pipelined one runs the same code with
    at most ``depth + 2`` pieces in flight (a bound, not a per-frame cost), but how close the
    worker gets to it depends on scheduling, which would make a 10% check flaky under load."""
    make = lambda: ObjectExtractor(proposals="motion", flow="dis", device="cpu", deep=False,  # noqa: E731
                                   pipelined=False, motion_min_area=50, chunk_size=32)
    traced_peak(make(), 16)  # first-use allocations (OpenCV, imports) out of the measurement
    short, t_short = traced_peak(make(), SHORT)
    long, t_long = traced_peak(make(), LONG)
    assert len(t_long["velocity"]) > 5 * len(t_short["velocity"]) > 0  # objects were found throughout
    assert_flat(short, t_short, long, t_long)


def test_flowgrid_memory_is_flat_in_video_length():
    make = lambda: FlowGridExtractor(method="dis", chunk_size=32)  # noqa: E731
    traced_peak(make(), 16)
    short, t_short = traced_peak(make(), SHORT)
    long, t_long = traced_peak(make(), LONG)
    assert len(t_long["flowgrid"]) == LONG
    assert_flat(short, t_short, long, t_long)


def test_hiera_memory_is_flat_in_video_length():
    """A tiny random Hiera (no weights): the rolling clip buffer and the decode-ahead queue hold
    a fixed number of frames whatever the length. A batch of clips spans ``batch_size *
    clip_step + clip_len`` frames (48 here), well inside the short video, so both runs reach the
    steady state. One torch thread: two spin-waiting on a busy 2-core machine made it 50x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        make = lambda: HieraExtractor(model="hiera_tiny_test", random_init=True, device="cpu",  # noqa: E731
                                      num_workers=0, chunk_size=32, batch_size=8, clip_step=4)
        make().extract(StreamedVideo(16), progress=False)  # imports and first-use allocations, untraced
        short, t_short = traced_peak(make(), SHORT)
        long, t_long = traced_peak(make(), LONG)
    finally:
        torch.set_num_threads(threads)
    assert len(t_long["hiera"]) == LONG and np.isfinite(t_long["hiera"].values).all()
    assert_flat(short, t_short, long, t_long)


# ----------------------------------------------------------------------------- the overlay video

class NumberedVideo(StreamedVideo):
    """Frame ``t`` is one flat grey level that differs from its neighbours' by 37 (mod 200), so a
    frame written one place early or late shows in the overlay's pixels."""

    def _read(self, indices: list[int]) -> np.ndarray:
        return np.stack([np.full((self.height, self.width, 3), level(t), np.uint8) for t in indices])


def level(t: int) -> int:
    return 20 + (37 * t) % 200


def overlay_peak(reader: VideoReader, path: Path) -> int:
    scores = np.linspace(-1, 4, len(reader))
    boxes = {t: [(10, 10, 40, 40, 1.0)] for t in range(0, len(reader), 3)}  # the caller's input
    tracemalloc.start()
    try:
        write_overlay(reader, scores, path, boxes, progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


def test_overlay_has_one_frame_per_score_in_order_and_flat_memory(tmp_path):
    overlay_peak(StreamedVideo(16), tmp_path / "warm.mp4")
    short = overlay_peak(StreamedVideo(SHORT), tmp_path / "short.mp4")
    long = overlay_peak(StreamedVideo(LONG), tmp_path / "long.mp4")
    assert long <= (1 + MAX_GROWTH) * short, f"overlay peak {short / 1e6:.2f} MB -> {long / 1e6:.2f} MB"
    with open_video(tmp_path / "long.mp4", backend="opencv", use_cache=False) as out:
        assert out.n_frames == LONG and (out.width, out.height) == (128, 96 + 28)  # frame + score bar

    reader = NumberedVideo(50, height=64, width=96)
    write_overlay(reader, np.zeros(50), tmp_path / "numbered.mp4", progress=False)
    with open_video(tmp_path / "numbered.mp4", backend="opencv", use_cache=False) as out:
        assert out.n_frames == 50
        grey = out.get(range(50))[:, 24:60, 40:90].mean(axis=(1, 2, 3))  # below the score text
    np.testing.assert_allclose(grey, [level(t) for t in range(50)], atol=4)


def test_overlay_refuses_scores_of_another_length(tmp_path):
    with pytest.raises(InputError, match="49 frame scores for a video of 50 frames"):
        write_overlay(NumberedVideo(50), np.zeros(49), tmp_path / "bad.mp4", progress=False)
    assert not list(tmp_path.iterdir())  # no half-written file


# ----------------------------------------------------------------------------- decord's read-ahead

def test_decord_reader_does_not_decode_ahead_while_the_caller_works(tmp_path):
    """decord's decoding thread goes on decoding past the frames asked for and holds them until
    the next read (dmlc/decord#157); a slow consumer (an extractor, the overlay writer) then held
    up to ~1.6 GB on a 7,950-frame 480x360 video. The reader stops it after every read: while the
    caller sits on the first chunk, RSS must not grow (it grew 84 MB here without the fix), and
    the chunks are still the right frames (the same as OpenCV's sequential decode)."""
    pytest.importorskip("decord", reason="decord is an optional backend")
    psutil = pytest.importorskip("psutil")
    path = tmp_path / "roll.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (320, 240))
    base = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    for t in range(400):
        writer.write(np.roll(base, 3 * t, axis=1))
    writer.release()
    reader = open_video(path, use_cache=False)
    if getattr(reader, "backend", "") != "decord":
        pytest.skip("decord does not open this MP4 here; the OpenCV backend has no read-ahead")
    process = psutil.Process()
    chunks = reader.iter_chunks(16)
    first = next(chunks)[1]
    before = process.memory_info().rss
    time.sleep(0.5)
    grown = process.memory_info().rss - before
    assert grown < 20e6, f"RSS grew {grown / 1e6:.0f} MB while the caller held one chunk"

    sequential = np.concatenate([first] + [c for _, c in chunks])
    with open_video(path, backend="opencv", use_cache=False) as cv:
        assert len(sequential) == cv.n_frames == reader.n_frames == 400
        for t in (0, 15, 16, 17, 200, 399):
            assert np.abs(sequential[t].astype(int) - cv[t]).mean() < 1.0, f"frame {t} differs"
            assert np.array_equal(sequential[t], reader[t])  # random access agrees with streaming
    reader.close()


# ----------------------------------------------------------------------------- vad score, end to end

@pytest.fixture(scope="module")
def motion_run(tmp_path_factory) -> Path:
    """A run trained in seconds: motion proposals, velocity features, a GMM."""
    from mulde.cli import main
    from mulde.datasets.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("memory_run")
    generate_synthetic(root, seed=0, n_train=3, n_test=1, n_frames=60)
    assert main(["train", "--dataset", "folder", "--root", str(root), "--cache", str(root / "cache"),
                 "--features", "objects", "--proposals", "motion", "--feature-types", "velocity",
                 "--opt", "motion_min_area=20", "--deep", "off", "--detector", "gmm",
                 "--out", str(root / "run"), "-q"]) == 0
    return root / "run"


@pytest.mark.slow
def test_score_with_overlay_memory_is_flat_in_video_length(motion_run, tmp_path):
    """``vad score VIDEO --out CSV --overlay MP4`` as a whole: extraction, scoring, the CSV and
    the overlay. The per-frame results (the score table) are what the caller asked for; the rest
    must not grow with the length. The overlay holds one frame per score."""
    from mulde.pipeline.predict import score_file
    from mulde.pipeline.run import load_run

    run = load_run(motion_run)

    def peak(n: int) -> tuple[int, int]:
        tracemalloc.start()
        try:
            frame = score_file(StreamedVideo(n, height=120, width=160), motion_run, out=tmp_path / f"{n}.csv",
                               overlay=tmp_path / f"{n}.mp4", overrides={"pipelined": False}, progress=False,
                               run=run)
            _, top = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert len(frame) == n and np.isfinite(frame["score"]).all()
        with open_video(tmp_path / f"{n}.mp4", backend="opencv", use_cache=False) as overlay:
            assert overlay.n_frames == n
        return top, int(frame.memory_usage(deep=True).sum())

    peak(16)  # first-use allocations out of the measurement
    (short, out_short), (long, out_long) = peak(SHORT), peak(LONG)
    work_short, work_long = short - out_short, long - out_long
    assert work_long <= (1 + MAX_GROWTH) * work_short, (
        f"vad score working memory {work_short / 1e6:.1f} MB -> {work_long / 1e6:.1f} MB for 10x the frames")
