"""Motion proposer speed and box sizes: MOG2 on colour frames (now) against grey frames (before).

    python benchmarks/bench_motion.py [--frames 192]

Both variants run in this process, one after the other, on the same decoded frames: Ped2 test 01
(grey footage, 360x240), the three real videos of ``../shared/data/videos`` and the demo's
wrong-direction test video (rendered here). The grey variant is the proposer with its frames
converted to one grey channel, as it ran before 2026-11-24. Per row: frames/s of the proposer
alone (priming included), boxes per frame and the median box height.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import date, datetime, timezone
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

from mulde.datasets.video import open_video  # noqa: E402
from mulde.extractors.flow import to_gray  # noqa: E402
from mulde.extractors.motion import MotionConfig, MotionProposer  # noqa: E402

SHARED = HERE.parent.parent / "shared" / "data"


class GreyProposer(MotionProposer):
    """The proposer as it was: MOG2 on one grey channel."""

    def _prepare(self, frame: np.ndarray, scale: float) -> np.ndarray:
        return super()._prepare(to_gray(frame), scale)


def _frames(source: str | Path, n: int) -> np.ndarray:
    with open_video(source) as reader:
        return reader.get(range(min(reader.n_frames, n)))


def _demo_video(folder: Path) -> Path:
    from mulde.datasets.synthetic import generate_synthetic
    from mulde.pipeline.demo import DEMO_DATA

    generate_synthetic(folder, seed=0, **DEMO_DATA)
    return next((folder / "test").glob("test_01.*"))  # the wrong-direction walker (seed 0)


def _run(cls: type, frames: np.ndarray, method: str, min_area: float) -> tuple[float, float, float]:
    best, boxes = float("inf"), []
    for _ in range(2):
        prop = cls(MotionConfig(method=method, min_area=min_area))
        t0 = time.perf_counter()
        out = []
        for i in range(0, len(frames), 64):
            out += prop(frames[i:i + 64])
        best = min(best, time.perf_counter() - t0)
        boxes = out
    heights = np.concatenate([b[:, 3] - b[:, 1] for b in boxes if len(b)]) if any(len(b) for b in boxes) else np.zeros(1)
    return len(frames) / best, float(np.mean([len(b) for b in boxes])), float(np.median(heights))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=192)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    sources: list[tuple[str, Path, float]] = []
    ped2 = SHARED / "ucsd_ped2" / "testing" / "frames" / "01"
    if ped2.is_dir():
        sources.append(("Ped2 test 01 (grey, 360x240)", ped2, 100.0))
    for video in sorted((SHARED / "videos").glob("*")):
        sources.append((video.name, video, 100.0))
    tmp = tempfile.TemporaryDirectory()
    sources.append(("demo wrong-direction video (160x120)", _demo_video(Path(tmp.name)), 20.0))
    print(f"Machine: {os.cpu_count()} cores; date {date.today()} "
          f"({datetime.now(timezone.utc):%H:%M} UTC); command: `python benchmarks/bench_motion.py "
          f"{' '.join(sys.argv[1:])}`; OpenCV {cv2.__version__}, 1 OpenCV thread; best of 2 runs.\n")
    print("| footage | method | input | frames/s | boxes/frame | median box height (px) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, source, min_area in sources:
        frames = _frames(source, args.frames)
        for method in ("mog2", "mog2+static"):
            for label, cls in (("grey (before)", GreyProposer), ("colour (now)", MotionProposer)):
                fps, per_frame, height = _run(cls, frames, method, min_area)
                print(f"| {name} | {method} | {label} | {fps:.0f} | {per_frame:.2f} | {height:.0f} |", flush=True)
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
