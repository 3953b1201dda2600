"""Causal, frame-by-frame versions of the extractors, for live scoring (``vad watch``).

A stepper holds the bounded state of one stream and turns each new frame into the feature rows
of that frame, using only frames up to it:

- :class:`ObjectStepper` (extractor ``objects``): the same per-frame pieces as
  :meth:`ObjectExtractor.extract` (detector, motion proposals merged with detector boxes,
  velocity histograms of the flow from the previous frame, pose, CLIP or detector embeddings).
  The motion model is updated online and is primed with the first frame only, so it equals the
  offline extractor run with ``chunk_size=1`` (tested).
- :class:`FlowGridStepper` (``flowgrid``) and :class:`HieraStepper` (``hiera``): the clip
  window trails the frame (frames t - stride*(clip_len-1) .. t, the first frame repeated before
  the start) instead of being centred on it.

State is a previous frame, a background model and a ring buffer of at most one clip span.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import cv2
import numpy as np

from mulde.extractors.base import FeatureTable
from mulde.extractors.context import CONTEXT_COLUMNS, context_features
from mulde.extractors.detection import PERSON, Detections, box_area
from mulde.extractors.flow import FlowEstimator, to_gray
from mulde.extractors.motion import MotionConfig, MotionProposer, merge_proposals
from mulde.extractors.pose import POSE_DIM, normalize_keypoints
from mulde.extractors.velocity import flow_histograms


def _rows(index: int, boxes: np.ndarray | None, values: np.ndarray, ids: np.ndarray | None = None,
          kind: str = "") -> FeatureTable:
    values = np.asarray(values, np.float32)
    values = values.reshape(len(values), -1) if values.ndim != 2 else values
    n = len(values)
    return FeatureTable(frame_idx=np.full(n, index, np.int64), values=values,
                        boxes=None if boxes is None else np.asarray(boxes, np.float32).reshape(n, 4),
                        object_id=None if boxes is None else (ids if ids is not None else np.arange(n)),
                        meta={"feature_type": kind})


class ObjectStepper:
    """Object rows of one stream, one frame at a time (see the module doc).

    ``flow`` may be shared between streams (Farneback/DIS/RAFT hold no per-stream state).
    """

    def __init__(self, extractor: Any, flow: FlowEstimator | None = None) -> None:
        self.ex = extractor
        c = extractor.cfg
        self.flow = flow or FlowEstimator(c.flow, device=c.device, cache=c.cache)
        self.motion = MotionProposer(MotionConfig(method=c.motion_method, min_area=c.motion_min_area))
        self.prev: np.ndarray | None = None
        self.last: Detections | None = None  # carried forward on frames the detector skips

    def reset(self) -> None:
        """Forget the previous frame (after a reconnect the next frame has no flow and is detected)."""
        self.prev = None
        self.last = None

    def detects_on(self, index: int) -> bool:
        """Whether frame ``index`` needs the detector (``yolo_every``; always after a reset)."""
        return self.ex.use_detector and (self.last is None or self.ex.detects_on(index))

    @staticmethod
    def detect(extractor: Any, frames: list[np.ndarray]) -> list[Detections]:
        """Detector output for frames of any streams, in one batched call."""
        if not extractor.use_detector or not frames:
            return [Detections.empty(False)] * len(frames)
        return extractor.detector(np.stack(frames) if len({f.shape for f in frames}) == 1 else frames)

    def step(self, index: int, frame: np.ndarray, det: Detections | None = None,
             prev: np.ndarray | None = None) -> dict[str, FeatureTable]:
        """Rows of every feature type for ``frame``; ``prev`` overrides the stored previous frame
        (the frame just before this one when frames in between were skipped)."""
        ex, c = self.ex, self.ex.cfg
        ref = prev if prev is not None else self.prev
        fl = None
        if det is None and self.detects_on(index):
            det = self.detect(ex, [frame])[0]
        elif det is None and ex.use_detector:
            fl = self._flow(ref, frame)
            det = ex.carried(self.last, fl if "velocity" in ex.feature_types or "context" in ex.feature_types else None)
        elif det is None:
            det = Detections.empty(False)
        self.last = det if ex.use_detector else None
        mboxes = self.motion(frame[None])[0] if ex.use_motion else np.zeros((0, 4), np.float32)
        keep = merge_proposals(det.boxes, mboxes, c.max_overlap)
        mb = mboxes[keep]
        mb = mb[box_area(mb) >= c.min_box_area]
        boxes = np.concatenate([det.boxes, mb]).astype(np.float32)
        ids = np.arange(len(boxes), dtype=np.int32)
        out: dict[str, FeatureTable] = {}
        types = ex.feature_types
        if "velocity" in types:
            dim = len(flow_histograms(np.zeros((1, 1, 2), np.float32), np.zeros((1, 4)), c.velocity_bins,
                                      c.velocity_extras, c.velocity_norm)[0])
            if len(boxes):
                fl = self._flow(ref, frame) if fl is None else fl
                vel = flow_histograms(fl, boxes, c.velocity_bins, c.velocity_extras, c.velocity_norm)
            else:
                vel = np.zeros((0, dim), np.float32)
            out["velocity"] = _rows(index, boxes, vel, ids, "velocity")
        if "context" in types:
            if len(boxes):
                fl = self._flow(ref, frame) if fl is None else fl
                ctx = context_features(fl, boxes)
            else:
                ctx = np.zeros((0, len(CONTEXT_COLUMNS)), np.float32)
            out["context"] = _rows(index, boxes, ctx, ids, "context")
        if "pose" in types:
            person = np.flatnonzero(det.classes == PERSON) if det.keypoints is not None else np.zeros(0, int)
            kp = (normalize_keypoints(det.keypoints[person], det.boxes[person]) if len(person)
                  else np.zeros((0, POSE_DIM), np.float32))
            out["pose"] = _rows(index, det.boxes[person], kp, ids[person], "pose")
        if "appearance" in types:
            emb = (det.embeddings if det.embeddings is not None and len(det)
                   else np.zeros((0, ex.detector.embed_dim), np.float32))
            out["appearance"] = _rows(index, det.boxes, emb, ids[:len(det)], "appearance")
        if "deep" in types:
            from mulde.extractors import clip as clip_mod

            emb = (ex.clip.embed_crops(clip_mod.crop_boxes(frame, boxes)) if len(boxes)
                   else np.zeros((0, clip_mod.CLIP_DIM), np.float32))
            out["deep"] = _rows(index, boxes, emb, ids, "deep")
        self.prev = frame
        return out

    def _flow(self, ref: np.ndarray | None, frame: np.ndarray) -> np.ndarray:
        return self.flow(ref, frame) if ref is not None else np.zeros((*frame.shape[:2], 2), np.float32)


class _TrailingWindow:
    """Mean of the last ``clip_len`` values at ``stride`` (first value repeated before the start)."""

    def __init__(self, clip_len: int, stride: int) -> None:
        self.clip_len, self.stride = int(clip_len), int(stride)
        self.buf: deque[np.ndarray] = deque(maxlen=(self.clip_len - 1) * self.stride + 1)
        self.first: np.ndarray | None = None

    def reset(self) -> None:
        self.buf.clear()
        self.first = None

    def push(self, value: np.ndarray) -> None:
        if self.first is None:
            self.first = value
        self.buf.append(value)

    def positions(self) -> list[np.ndarray]:
        """The window's items, oldest first (padded with the first item)."""
        n = len(self.buf)
        return [self.buf[n - 1 - k * self.stride] if k * self.stride < n else self.first
                for k in range(self.clip_len - 1, -1, -1)]


class FlowGridStepper:
    """Flow-grid rows of one stream with a trailing clip window (see the module doc)."""

    def __init__(self, extractor: Any) -> None:
        from mulde.extractors.flowgrid import _GridHistogram, working_shape

        self.ex = extractor
        self._grid_cls, self._shape_fn = _GridHistogram, working_shape
        c = extractor.cfg
        self.flow = FlowEstimator(c.method)
        self.window = _TrailingWindow(c.clip_len, c.frame_stride)
        self.prev: np.ndarray | None = None
        self.shape: tuple[int, int] | None = None
        self.grid = None
        self.count = 0
        self.last: np.ndarray | None = None

    def reset(self) -> None:
        self.prev = None

    def _small(self, frame: np.ndarray) -> np.ndarray:
        if self.shape is None:
            self.shape = self._shape_fn(frame.shape[0], frame.shape[1], self.ex.cfg.work_size)
            self.grid = self._grid_cls(self.ex.cfg, *self.shape)
        g = to_gray(frame)
        return cv2.resize(g, (self.shape[1], self.shape[0]), interpolation=cv2.INTER_AREA) \
            if g.shape[:2] != self.shape else g

    def step(self, index: int, frame: np.ndarray, det: Any = None,
             prev: np.ndarray | None = None) -> dict[str, FeatureTable]:
        c = self.ex.cfg
        small = self._small(frame)
        ref = self._small(prev) if prev is not None else self.prev
        flow = self.flow(ref, small)[None] if ref is not None else np.zeros((1, *small.shape, 2), np.float32)
        self.window.push(self.grid(flow)[0].reshape(-1))
        if self.last is None or self.count % c.clip_step == 0:
            pooled = np.mean(self.window.positions(), axis=0).reshape(-1, c.n_bins + len(c.mag_edges))
            if c.log1p:
                pooled[:, : c.n_bins] = np.log1p(pooled[:, : c.n_bins])
            self.last = pooled.reshape(1, -1).astype(np.float32)
        self.count += 1
        self.prev = small
        rows = _rows(index, None, self.last, kind="flowgrid")
        rows.meta.update(self.ex.config())  # the layout, as the offline table's meta has it
        return {"flowgrid": rows}


class HieraStepper:
    """Hiera rows of one stream: the embedding of the trailing clip (every ``clip_step`` frames)."""

    def __init__(self, extractor: Any) -> None:
        self.ex = extractor
        extractor.load(progress=False)
        self.window = _TrailingWindow(extractor.cfg.clip_len, extractor.cfg.frame_stride)
        self.count = 0
        self.last: np.ndarray | None = None

    def reset(self) -> None:
        """Hiera needs no previous frame; the clip buffer carries across a reconnect."""

    def step(self, index: int, frame: np.ndarray, det: Any = None,
             prev: np.ndarray | None = None) -> dict[str, FeatureTable]:
        from mulde.extractors.hiera import preprocess_frames

        c = self.ex.cfg
        self.window.push(preprocess_frames(frame[None], self.ex.size, c.spatial)[0])
        if self.last is None or self.count % c.clip_step == 0:
            self.last = self.ex.embed_clips(np.stack(self.window.positions())[None])
        self.count += 1
        return {"hiera": _rows(index, None, self.last, kind="hiera")}


def make_stepper(extractor: Any, **shared: Any):
    """The stepper for an extractor instance (``objects``, ``flowgrid`` or ``hiera``)."""
    from mulde.errors import InputError

    if extractor.name == "objects":
        return ObjectStepper(extractor, **shared)
    if extractor.name == "flowgrid":
        return FlowGridStepper(extractor)
    if extractor.name == "hiera":
        return HieraStepper(extractor)
    raise InputError(f"extractor {extractor.name!r} has no frame-by-frame (causal) version")
