"""Motion region proposals: boxes around moving pixels that a COCO detector may miss.

A foreground mask per frame (OpenCV MOG2 background subtraction, frame differencing, or the
union of both) is cleaned with morphology (opening removes speckle, closing joins the parts of
one object) and split into connected components; each component larger than ``min_area``
pixels becomes a box. As in AI-VAD, these boxes are merged with the detector's: a motion box
mostly covered by a detector box is dropped (:func:`merge_proposals`).

MOG2 learns an object that stops into its background within about ``0.1 * history`` frames
(its mode must lose 10% of the weight), so a stopped object loses its box. The ``+static``
methods add a second, long-term MOG2 (dual background, as in Porikli et al.'s abandoned-object
detection): a pixel that is foreground for the long-term model but background for the
short-term one is a stationary object; a pixel that is foreground only for the short-term model
is background it has just uncovered (where a stopped object left) and is dropped. The mask is
moving | stationary, so a stopped object keeps one box (no duplicate) at its place, and its
flow, hence its velocity feature, is about zero.

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

MOTION_METHODS = ("mog2", "diff", "mog2+diff", "mog2+static", "mog2+diff+static")
MOTION_INPUT = "colour"
"""What MOG2 sees (part of the feature cache key: boxes from grey frames, before, differ)."""


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
    static_history: history of the long-term MOG2 of the ``+static`` methods; an object that
    stops stays foreground for about ``0.1 * static_history`` frames (the default 2000: ~8 s at
    25 fps, against ~0.8 s for the short-term model), after which it is scenery (a parked car).
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
    static_history: int = 2000

    def __post_init__(self) -> None:
        if self.method not in MOTION_METHODS:
            raise InputError(f"unknown motion method {self.method!r}; choose one of {', '.join(MOTION_METHODS)}")
        if self.static and self.static_history <= self.history:
            raise InputError(f"bad motion settings: static_history={self.static_history} must exceed "
                             f"history={self.history} (the long-term model learns slower)")
        if self.history < 1 or self.min_area < 0 or not 0 < self.max_area_frac <= 1 or self.max_side < 32:
            raise InputError(
                f"bad motion settings: history={self.history} (>=1), min_area={self.min_area} (>=0), "
                f"max_area_frac={self.max_area_frac} (in (0,1]), max_side={self.max_side} (>=32)"
            )

    @property
    def static(self) -> bool:
        """Whether stationary objects are kept (a long-term background model runs too)."""
        return self.method.endswith("+static")


class MotionProposer:
    """Streams frames of one video and returns the moving-object boxes of each frame.

    The background model is primed with the per-pixel median of the first chunk it sees, so
    the first frames of a video do not come out as all-foreground.

    With ``+static``, the long-term model is primed like the short-term one and learns at the
    short-term rate up to frame ``2 * (history // 10)`` (twice the short model's absorption
    time); only then does it slow down and stationary pixels count. A first frame (the causal
    stepwise path) holds its objects, and the median of a first chunk holds whatever covered a
    pixel about half the time (a busy spot, a loiterer); a long-term model fixed from either would
    keep them as ghosts, "stationary objects" where the ground shows, for ``0.1 *
    static_history`` frames. By that frame both models have learned the ground such objects
    covered once they moved on. Objects that stand still from the first frames on are scenery
    for both models.
    """

    def __init__(self, config: MotionConfig | None = None) -> None:
        self.config = config or MotionConfig()
        self._mog: cv2.BackgroundSubtractorMOG2 | None = None
        self._long: cv2.BackgroundSubtractorMOG2 | None = None
        self._long_from = max(1, 2 * (self.config.history // 10))  # frame the long model slows
        self._seen = 0
        self._prev: np.ndarray | None = None
        self._colour: bool | None = None  # decided on a video's first frame

    def reset(self) -> None:
        """Forget the background models (start of a new video)."""
        self._mog, self._long, self._seen, self._prev, self._colour = None, None, 0, None, None

    def __call__(self, frames: np.ndarray) -> list[np.ndarray]:
        """Boxes (n, 4) float32 x1, y1, x2, y2 in source pixels for every frame of ``frames``."""
        if len(frames) == 0:
            return []
        cfg = self.config
        height, width = frames.shape[1:3]
        scale = min(1.0, cfg.max_side / max(height, width))
        if self._colour is None:
            self._colour = has_colour(frames[0])
        small = [self._prepare(f, scale) for f in frames]
        parts = cfg.method.split("+")
        use_mog, use_diff = "mog2" in parts, "diff" in parts
        if use_mog and self._mog is None:
            self._mog = self._new_mog(cfg.history)
            # Prime with the chunk's per-pixel median: the background wherever objects cover a
            # pixel less than half the time (feeding the frames themselves would teach MOG2 the
            # slow movers as background).
            background = np.median(np.stack(small), axis=0).astype(np.uint8)
            self._mog.apply(background, learningRate=1.0)
            if cfg.static:
                self._long = self._new_mog(cfg.static_history)
                self._long.apply(background, learningRate=1.0)
        # a fixed rate: OpenCV's default (1 / frames seen) learns a slow object into the
        # background within a few frames of the start
        rate = 1.0 / cfg.history
        out = []
        for g in small:
            mask = np.zeros(g.shape[:2], np.uint8)
            if use_mog:
                short = self._mog.apply(g, learningRate=rate)
                mask |= (short == 255).astype(np.uint8)  # 127 marks shadows
                if self._long is not None:
                    mask = self._dual(g, short, mask)
            if use_diff:
                grey = to_gray(g)
                if self._prev is not None:
                    mask |= (cv2.absdiff(grey, self._prev) > cfg.diff_threshold).astype(np.uint8)
                self._prev = grey
            self._seen += 1
            out.append(mask_to_boxes(mask, cfg, scale, (height, width)))
        return out

    def _new_mog(self, history: int) -> cv2.BackgroundSubtractorMOG2:
        return cv2.createBackgroundSubtractorMOG2(
            history=history, varThreshold=self.config.var_threshold, detectShadows=True)

    def _dual(self, frame: np.ndarray, short: np.ndarray, moving: np.ndarray) -> np.ndarray:
        """Moving | stationary pixels from the short- and long-term masks (255 foreground,
        127 shadow, 0 background): short-term foreground the long-term model also sees (not
        uncovered background) plus long-term foreground the short-term model has learned."""
        if self._seen < self._long_from:  # warm-up: the same model as the short-term one
            self._long.apply(frame, learningRate=1.0 / self.config.history)
            return moving
        long = self._long.apply(frame, learningRate=1.0 / self.config.static_history)
        return ((moving & (long != 0)) | (long == 255)).astype(np.uint8)

    def _prepare(self, frame: np.ndarray, scale: float) -> np.ndarray:
        # Colour, not grey: on one channel MOG2's shadow test is a brightness ratio alone (0.5-1
        # of the background), so any object less than twice as dark as the ground (a dark
        # walker on grass) is a "shadow" and loses its box; with colour it must keep the hue too.
        # Grey footage has no hue to test, and three equal channels would only make MOG2's
        # distance test sqrt(3) times as sensitive, so it stays one channel.
        if not self._colour:
            frame = to_gray(frame)
        if scale < 1.0:
            frame = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        return cv2.GaussianBlur(frame, (3, 3), 0)


def has_colour(frame: np.ndarray, tolerance: int = 2) -> bool:
    """Whether an (H, W, 3) frame has colour: some pixel's channels differ by more than
    ``tolerance`` grey levels (grey footage decodes to three equal channels)."""
    if frame.ndim != 3 or frame.shape[2] < 3:
        return False
    f = frame[::4, ::4].astype(np.int16)
    return bool(np.abs(f[..., 0] - f[..., 1]).max() > tolerance or np.abs(f[..., 1] - f[..., 2]).max() > tolerance)


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
