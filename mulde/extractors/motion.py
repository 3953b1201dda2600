"""Motion region proposals: boxes around moving pixels that a COCO detector may miss.

A foreground mask per frame (OpenCV MOG2 background subtraction, frame differencing, or the
union of both) is cleaned with morphology (opening removes speckle, closing joins the parts of
one object) and split into connected components; each component larger than ``min_area``
pixels becomes a box. As in AI-VAD, these boxes are merged with the detector's: a motion box
mostly covered by a detector box is dropped (:func:`merge_proposals`).

The proposer is stateful (background model, previous frame): use one instance per video and
feed its frames in order, chunk after chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mulde.errors import InputError
from mulde.extractors.detection import box_area
from mulde.extractors.flow import to_gray

MOTION_METHODS = ("mog2", "diff", "mog2+diff")


@dataclass
class MotionConfig:
    """Settings of the motion proposer (pixel values refer to the source frame).

    method: ``mog2`` (background subtraction), ``diff`` (|frame_t - frame_t-1|) or ``mog2+diff``
    (union of both masks). history / var_threshold: MOG2's parameters (OpenCV defaults 500/16;
    200 adapts faster to lighting). diff_threshold: grey-level change counted as motion.
    open_size / close_size: morphology kernel sizes. min_area: smallest component kept, in
    pixels. max_area_frac: components larger than this fraction of the frame are dropped
    (global illumination change, camera shake). max_side: frames are downscaled so their
    longer side is at most this before masking (speed), boxes are mapped back.
    """

    method: str = "mog2"
    history: int = 200
    var_threshold: float = 16.0
    diff_threshold: int = 25
    open_size: int = 3
    close_size: int = 9
    min_area: float = 100.0
    max_area_frac: float = 0.5
    max_side: int = 640

    def __post_init__(self) -> None:
        if self.method not in MOTION_METHODS:
            raise InputError(f"unknown motion method {self.method!r}; choose one of {', '.join(MOTION_METHODS)}")
        if self.history < 1 or self.min_area < 0 or not 0 < self.max_area_frac <= 1 or self.max_side < 32:
            raise InputError(
                f"bad motion settings: history={self.history} (>=1), min_area={self.min_area} (>=0), "
                f"max_area_frac={self.max_area_frac} (in (0,1]), max_side={self.max_side} (>=32)"
            )


class MotionProposer:
    """Streams frames of one video and returns the moving-object boxes of each frame.

    The background model is primed with the per-pixel median of the first chunk it sees, so
    the first frames of a video do not come out as all-foreground.
    """

    def __init__(self, config: MotionConfig | None = None) -> None:
        self.config = config or MotionConfig()
        self._mog: cv2.BackgroundSubtractorMOG2 | None = None
        self._prev: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the background model (start of a new video)."""
        self._mog, self._prev = None, None

    def __call__(self, frames: np.ndarray) -> list[np.ndarray]:
        """Boxes (n, 4) float32 x1, y1, x2, y2 in source pixels for every frame of ``frames``."""
        if len(frames) == 0:
            return []
        cfg = self.config
        height, width = frames.shape[1:3]
        scale = min(1.0, cfg.max_side / max(height, width))
        small = [self._prepare(f, scale) for f in frames]
        use_mog = cfg.method in ("mog2", "mog2+diff")
        if use_mog and self._mog is None:
            self._mog = cv2.createBackgroundSubtractorMOG2(
                history=cfg.history, varThreshold=cfg.var_threshold, detectShadows=True)
            # Prime with the chunk's per-pixel median: the background wherever objects cover a
            # pixel less than half the time (feeding the frames themselves would teach MOG2 the
            # slow movers as background).
            background = np.median(np.stack(small), axis=0).astype(np.uint8)
            self._mog.apply(background, learningRate=1.0)
        # a fixed rate: OpenCV's default (1 / frames seen) learns a slow object into the
        # background within a few frames of the start
        rate = 1.0 / cfg.history
        out = []
        for g in small:
            mask = np.zeros(g.shape, np.uint8)
            if use_mog:
                mask |= (self._mog.apply(g, learningRate=rate) == 255).astype(np.uint8)  # 127 marks shadows
            if cfg.method in ("diff", "mog2+diff") and self._prev is not None:
                mask |= (cv2.absdiff(g, self._prev) > cfg.diff_threshold).astype(np.uint8)
            self._prev = g
            out.append(mask_to_boxes(mask, cfg, scale, (height, width)))
        return out

    @staticmethod
    def _prepare(frame: np.ndarray, scale: float) -> np.ndarray:
        gray = to_gray(frame)
        if scale < 1.0:
            gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        return cv2.GaussianBlur(gray, (3, 3), 0)


def mask_to_boxes(mask: np.ndarray, cfg: MotionConfig, scale: float = 1.0,
                  shape: tuple[int, int] | None = None) -> np.ndarray:
    """Morphology + connected components of a binary mask -> boxes in source pixels."""
    if cfg.open_size > 1:
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((cfg.open_size,) * 2, np.uint8))
    if cfg.close_size > 1:
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((cfg.close_size,) * 2, np.uint8))
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    stats = stats[1:]  # component 0 is the background
    height, width = shape if shape is not None else mask.shape
    areas = stats[:, cv2.CC_STAT_AREA] / (scale * scale)
    keep = (areas >= cfg.min_area) & (areas <= cfg.max_area_frac * height * width)
    s = stats[keep].astype(np.float32)
    boxes = np.stack([s[:, 0], s[:, 1], s[:, 0] + s[:, 2], s[:, 1] + s[:, 3]], axis=1) / scale
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    return boxes.astype(np.float32).reshape(-1, 4)


def coverage(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """(n, m) fraction of each box's area covered by each of ``others`` (intersection / area)."""
    a = np.asarray(boxes, np.float32).reshape(-1, 4)
    b = np.asarray(others, np.float32).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    return inter / np.maximum(box_area(a), 1e-6)[:, None]


def merge_proposals(detector_boxes: np.ndarray, motion_boxes: np.ndarray,
                    max_overlap: float = 0.5) -> np.ndarray:
    """Indices of the motion boxes to keep: those covered by no detector box more than
    ``max_overlap`` (fraction of the motion box's own area)."""
    motion_boxes = np.asarray(motion_boxes, np.float32).reshape(-1, 4)
    if len(motion_boxes) == 0 or len(detector_boxes) == 0:
        return np.arange(len(motion_boxes))
    covered = coverage(motion_boxes, detector_boxes).max(axis=1)
    return np.flatnonzero(covered <= max_overlap)
