"""Deep (D) features: CLIP ViT-B/16 image embeddings (512-d) of object crops, through timm.

timm's ``vit_base_patch16_clip_224.openai`` is OpenAI CLIP's image tower whose classifier
``head`` is CLIP's 768 -> 512 projection, so the model's output is the CLIP image embedding.
We build the ``quickgelu`` variant of the same architecture: OpenAI trained with QuickGELU
and timm notes the plain variant does not reproduce the original embeddings; both variants
load the same hub weights (``timm/vit_base_patch16_clip_224.openai``).

Each crop is resized to 224x224 (bicubic, no centre crop, so tall person boxes keep their
head and feet) and normalised with CLIP's mean/std. Embeddings are L2-normalised by default,
as CLIP compares images by cosine similarity.

Weights: entry ``clip_vit_b16`` of :mod:`mulde.extractors.weights` and its lookup: explicit
file > ``<cache>/weights/clip_vit_b16.safetensors`` > Hugging Face hub via timm (its cache
honours ``HF_HOME``; offline only from that cache), saved into the local path > one-line
:class:`~mulde.errors.WeightsError`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mulde.device import resolve_device
from mulde.errors import InputError, WeightsError
from mulde.extractors import weights as wt
from mulde.extractors.velocity import box_slices

CLIP_WEIGHTS = "clip_vit_b16"
TIMM_MODEL = wt.get_spec(CLIP_WEIGHTS).model
HF_REPO = wt.get_spec(CLIP_WEIGHTS).source
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_SIZE = 224
CLIP_DIM = 512


def weights_available(weights: str | os.PathLike | None = None,
                      cache: str | os.PathLike | None = None) -> bool:
    """True when CLIP weights can be loaded without downloading anything."""
    return wt.weights_available(CLIP_WEIGHTS, weights, cache)


def _build() -> Any:
    import timm

    return timm.create_model(TIMM_MODEL, pretrained=False)


def _load_state(model: Any, path: Path) -> Any:
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
        model.load_state_dict(state, strict=True)
    except Exception as exc:
        raise WeightsError(
            f"CLIP weights {path} could not be loaded ({type(exc).__name__}); pass --clip-weights "
            f"PATH to a {TIMM_MODEL} state_dict (.safetensors or .pt) or run `vad weights download "
            f"{CLIP_WEIGHTS}`"
        ) from exc
    return model


def load_clip(weights: str | os.PathLike | None = None, cache: str | os.PathLike | None = None,
              random_init: bool = False) -> Any:
    """The CLIP image encoder (eval mode, on the CPU) following the weights loading order."""
    model = _build()
    if weights is None and random_init:
        return model.eval()
    return _load_state(model, weights_file(weights, cache)).eval()


def weights_file(weights: str | os.PathLike | None = None, cache: str | os.PathLike | None = None) -> Path:
    """The CLIP weights file that :func:`load_clip` reads (fetched into the cache if need be)."""
    return wt.resolve_weights(CLIP_WEIGHTS, weights, cache)


def crop_boxes(frame: np.ndarray, boxes: np.ndarray, size: int = CLIP_SIZE) -> np.ndarray:
    """(n, size, size, 3) uint8 crops of the boxes, each resized to ``size`` x ``size``."""
    height, width = frame.shape[:2]
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    out = np.empty((len(boxes), size, size, 3), np.uint8)
    for i, box in enumerate(boxes):
        rows, cols = box_slices(box, height, width)
        out[i] = cv2.resize(frame[rows, cols], (size, size), interpolation=cv2.INTER_CUBIC)
    return out


class ClipEncoder:
    """Embeds object crops with CLIP in batches; fp16 autocast on CUDA when ``amp``."""

    dim = CLIP_DIM

    def __init__(self, weights: str | os.PathLike | None = None, cache: str | os.PathLike | None = None,
                 random_init: bool = False, device: str = "auto", amp: bool = True,
                 batch_size: int = 64, normalize: bool = True) -> None:
        import torch

        if batch_size < 1:
            raise InputError(f"CLIP batch_size must be >= 1, got {batch_size}")
        self.device = resolve_device(device)
        self.model = load_clip(weights, cache, random_init).to(self.device)
        self.amp = bool(amp) and self.device.type == "cuda"
        self.batch_size = int(batch_size)
        self.normalize = bool(normalize)
        self._mean = torch.tensor(CLIP_MEAN, device=self.device).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(CLIP_STD, device=self.device).view(1, 3, 1, 1) * 255.0

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """(n, 224, 224, 3) uint8 RGB crops -> (n, 512) float32 embeddings."""
        import torch

        crops = np.asarray(crops)
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        if crops.ndim != 4 or crops.shape[1:] != (CLIP_SIZE, CLIP_SIZE, 3):
            raise InputError(f"CLIP crops must have shape (n, {CLIP_SIZE}, {CLIP_SIZE}, 3), got {crops.shape}")
        out = []
        with torch.inference_mode():
            for start in range(0, len(crops), self.batch_size):
                x = torch.from_numpy(crops[start:start + self.batch_size]).to(self.device)
                x = (x.permute(0, 3, 1, 2).float() - self._mean) / self._std
                with torch.autocast("cuda", dtype=torch.float16, enabled=self.amp):
                    emb = self.model(x).float()
                if self.normalize:
                    emb = torch.nn.functional.normalize(emb, dim=1)
                out.append(emb.cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def __call__(self, frame: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Embeddings (n, 512) of the boxes (n, 4) of one RGB frame."""
        return self.embed_crops(crop_boxes(frame, boxes))
