"""``yolo_imgsz: auto``: the detector input size chosen from the size of the moving objects in
a dataset's training videos.

A COCO-trained YOLO finds people reliably only above a certain height in its input. On UCSD Ped2
(360x240 frames, moving objects 23 px tall at the median) YOLO11n-pose finds ~0.06 persons per
frame at imgsz 640, ~1.5 at 960 and nearly all (~16) at 1280 (benchmarks/RESULTS.md): objects
need to be about :data:`TARGET_HEIGHT` px tall in the input. So the size is the one that scales
the median moving-object height (MOG2 blobs on the first frames of a few training videos) to that
height, rounded up to YOLO's stride and kept within :data:`IMGSZ_RANGE`. The measurement is
deterministic, so ``vad extract`` and ``vad train`` choose the same size, and the run records it.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from mulde.config import RunConfig
from mulde.errors import InputError, VideoError

log = logging.getLogger("mulde")

TARGET_HEIGHT = 80.0  # px of a median moving object in the detector's input
IMGSZ_RANGE = (640, 1920)  # YOLO's default size .. the cost limit (4.5x the pixels of 1280 x 2/3)
STRIDE = 32
PROBE_VIDEOS, PROBE_FRAMES = 8, 128


def moving_object_heights(ds: Any, split: str = "train", max_videos: int = PROBE_VIDEOS,
                          max_frames: int = PROBE_FRAMES) -> tuple[np.ndarray, tuple[int, int]]:
    """Heights (px) of the motion blobs in the first ``max_frames`` frames of the first
    ``max_videos`` videos of ``split``, and the frame size (h, w) of the last video read."""
    from mulde.datasets.video import open_video
    from mulde.extractors.motion import MotionConfig, MotionProposer

    heights: list[np.ndarray] = []
    shape = (0, 0)
    for item in ds.videos(split)[:max_videos]:
        proposer = MotionProposer(MotionConfig(method="mog2"))
        try:
            with open_video(item.source) as reader:
                for _, chunk in reader.iter_chunks(64, 0, min(reader.n_frames, max_frames)):
                    chunk = np.asarray(chunk)
                    shape = chunk.shape[1:3]
                    heights += [b[:, 3] - b[:, 1] for b in proposer(chunk) if len(b)]
        except VideoError as exc:  # one unreadable video does not decide the size
            log.warning("yolo_imgsz auto: skipping %s (%s)", item.video_id, exc)
    return (np.concatenate(heights) if heights else np.zeros(0, np.float32)), shape


def choose_imgsz(heights: np.ndarray, frame_hw: tuple[int, int]) -> int:
    """The input size that makes the median object :data:`TARGET_HEIGHT` px tall (640 when
    nothing moved), rounded up to the stride and clipped to :data:`IMGSZ_RANGE`."""
    lo, hi = IMGSZ_RANGE
    if not len(heights) or not max(frame_hw):
        return lo
    size = max(frame_hw) * TARGET_HEIGHT / float(np.median(heights))
    return int(min(hi, max(lo, math.ceil(size / STRIDE) * STRIDE)))


def resolve_auto_imgsz(cfg: RunConfig, ds: Any | None) -> RunConfig:
    """``cfg`` with ``yolo_imgsz: auto`` replaced by the size measured on ``ds``'s training
    videos (unchanged when the size is a number or no detector runs)."""
    opts = cfg.extractor_options
    if opts.get("yolo_imgsz") != "auto" or cfg.extractor.features != "objects" or opts.get("proposals") == "motion":
        return cfg
    if ds is None:
        raise InputError("yolo_imgsz auto is measured on a dataset's training videos (vad extract / vad train); "
                         "give a number, e.g. --yolo-imgsz 1280")
    heights, shape = moving_object_heights(ds)
    size = choose_imgsz(heights, shape)
    median = f"{np.median(heights):.0f}" if len(heights) else "none"
    log.info("yolo_imgsz auto: %d (median moving object %s px tall in %dx%d frames over %d blobs; target %.0f px)",
             size, median, shape[1], shape[0], len(heights), TARGET_HEIGHT)
    import dataclasses

    return dataclasses.replace(cfg, extractor_options={**opts, "yolo_imgsz": size})
