"""Memory stays flat in the video's length: a 10x longer video peaks within ~10% of the short
one's traced allocations, for the object-centric and the flow-grid extractors.

The videos are streamed (frames made per chunk, never held), so every byte the peak gains with
length is something an extractor keeps per frame: a frame, a flow field, a crop, or a view that
pins one. Python's tracemalloc sees numpy's and Python's allocations (not the native ones of
OpenCV or torch), which makes the figure exact and the test fast.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from typing import Any

import numpy as np

from mulde.extractors.flowgrid import FlowGridExtractor
from mulde.extractors.objects import ObjectExtractor

SHORT, LONG = 192, 1920  # 6 and 60 decoding chunks of 32 frames
MAX_GROWTH = 0.10


class StreamedVideo:
    """A reader whose frames are drawn chunk by chunk: a textured background and two moving
    squares (so motion boxes and flow exist in every frame)."""

    fps = 25.0
    path = "<streamed>"

    def __init__(self, n_frames: int, height: int = 96, width: int = 128) -> None:
        self.n_frames, self.height, self.width = n_frames, height, width
        rng = np.random.default_rng(0)
        self._background = rng.integers(40, 200, (height, width, 3), dtype=np.uint8)

    def iter_chunks(self, chunk_size: int = 64, start: int = 0, stop: int | None = None
                    ) -> Iterator[tuple[int, np.ndarray]]:
        stop = self.n_frames if stop is None else stop
        for s in range(start, stop, chunk_size):
            e = min(s + chunk_size, stop)
            frames = np.repeat(self._background[None], e - s, axis=0)
            for k, t in enumerate(range(s, e)):
                x = (2 * t) % (self.width - 24)
                frames[k, 30:54, x:x + 16] = 255
                frames[k, 60:80, self.width - 20 - x:self.width - 4 - x] = 0
            yield s, frames


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
