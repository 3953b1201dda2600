"""Dense optical flow between consecutive frames: OpenCV Farneback or DIS on the CPU, or
torchvision's RAFT (``raft_small`` / ``raft_large``) when a GPU and its weights are available.

Flow is returned as (H, W, 2) float32 pixel displacements (dx, dy) from ``prev`` to ``next``.
RAFT weights are entries of the weights table (``vad weights download raft_large``) found by
its one lookup: an explicit file, else ``<cache>/weights/<name>.pth``, else the torch hub cache
(``$TORCH_HOME``), else a download unless offline, else a one-line error.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from mulde.device import resolve_device
from mulde.errors import InputError, WeightsError
from mulde.extractors import weights as wt

RAFT_METHODS = ("raft_small", "raft_large")
FLOW_METHODS = ("farneback", "dis", *RAFT_METHODS)


def to_gray(frame: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) or gray (H, W) to gray uint8."""
    if frame.ndim == 2:
        return frame
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


class RaftFlow:
    """torchvision RAFT on one device; frames are padded (multiple of 8, >= 128 px) and cropped back."""

    def __init__(self, name: str = "raft_large", device: str = "auto", weights: str | None = None,
                 cache: str | os.PathLike | None = None, random_init: bool = False,
                 iterations: int = 12) -> None:
        import torch
        from torchvision.models import optical_flow

        if name not in RAFT_METHODS:
            raise InputError(f"unknown RAFT model {name!r}; choose one of {', '.join(RAFT_METHODS)}")
        self.device = resolve_device(device)
        self.iterations = int(iterations)
        self.model = getattr(optical_flow, name)(weights=None)
        self.weights_file = None if random_init else wt.resolve_weights(name, weights, cache)
        if self.weights_file is not None:
            try:
                self.model.load_state_dict(torch.load(self.weights_file, map_location="cpu", weights_only=True))
            except Exception as exc:  # not a checkpoint, or one of another model
                raise WeightsError(f"RAFT weights {self.weights_file} could not be loaded ({type(exc).__name__}); "
                                   f"pass a torchvision {name} state dict or run `vad weights download {name}`") from None
        self.model.eval().to(self.device)

    def __call__(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        return self.pairs(prev[None], nxt[None])[0]

    def pairs(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """Flow for N frame pairs at once ((N,H,W[,3]) each -> (N,H,W,2)); one batch keeps the GPU busy."""
        import torch
        import torch.nn.functional as F

        h, w = prev.shape[1:3]
        # RAFT needs sides that are multiples of 8 and at least 128 px (its correlation pyramid).
        pad = (0, max(128, w + (-w) % 8) - w, 0, max(128, h + (-h) % 8) - h)

        def prep(frames: np.ndarray) -> torch.Tensor:
            x = torch.from_numpy(np.stack([_rgb(f) for f in frames])).permute(0, 3, 1, 2).float()
            return F.pad(x / 127.5 - 1.0, pad, mode="replicate").to(self.device)

        with torch.inference_mode():
            flow = self.model(prep(prev), prep(nxt), num_flow_updates=self.iterations)[-1]
        return flow[:, :, :h, :w].permute(0, 2, 3, 1).float().cpu().numpy()


def _rgb(frame: np.ndarray) -> np.ndarray:
    return np.repeat(frame[..., None], 3, axis=2) if frame.ndim == 2 else frame


class FlowEstimator:
    """Computes flow for pairs of frames with one method and fixed parameters."""

    def __init__(self, method: str = "farneback", device: str = "auto", weights: str | None = None,
                 cache: str | os.PathLike | None = None, random_init: bool = False,
                 raft_batch: int = 8) -> None:
        if method not in FLOW_METHODS:
            raise InputError(f"unknown flow method {method!r}; choose one of {', '.join(FLOW_METHODS)}")
        self.method = method
        self.raft_batch = max(1, int(raft_batch))
        self._dis = None
        self._raft = None
        if method == "dis":
            self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        elif method in RAFT_METHODS:
            self._raft = RaftFlow(method, device=device, weights=weights, cache=cache, random_init=random_init)

    @property
    def batched(self) -> bool:
        """True when :meth:`sequence` is much faster than pair-by-pair calls (RAFT batches pairs)."""
        return self._raft is not None

    def __call__(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        if self._raft is not None:
            return self._raft(prev, nxt)
        a, b = to_gray(prev), to_gray(nxt)
        if self._dis is not None:
            return self._dis.calc(a, b, None).astype(np.float32, copy=False)
        return cv2.calcOpticalFlowFarneback(
            a, b, None, pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5,
            poly_sigma=1.2, flags=0,
        ).astype(np.float32, copy=False)

    def sequence(self, frames: np.ndarray, prev: np.ndarray | None = None) -> np.ndarray:
        """Flow into every frame of ``frames`` (T, H, W, 3): flow[t] maps frame t-1 to t.

        ``prev`` is the frame before the chunk; without it the first flow is zero, so a
        video's first frame has no motion.
        """
        out = np.zeros((len(frames), *frames.shape[1:3], 2), np.float32)
        if self._raft is not None and len(frames):
            seq = frames if prev is None else np.concatenate([prev[None], frames])
            first = 1 if prev is None else 0  # index in ``out`` of the first pair's flow
            for start in range(0, len(seq) - 1, self.raft_batch):
                stop = min(start + self.raft_batch, len(seq) - 1)
                out[first + start:first + stop] = self._raft.pairs(seq[start:stop], seq[start + 1:stop + 1])
            return out
        last = prev
        for t, frame in enumerate(frames):
            if last is not None:
                out[t] = self(last, frame)
            last = frame
        return out
