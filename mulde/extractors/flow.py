"""Dense optical flow between consecutive frames (OpenCV Farneback or DIS on the CPU).

Flow is returned as (H, W, 2) float32 pixel displacements (dx, dy) from ``prev`` to ``next``.
"""

from __future__ import annotations

import cv2
import numpy as np

from mulde.errors import InputError

FLOW_METHODS = ("farneback", "dis")


def to_gray(frame: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) or gray (H, W) to gray uint8."""
    if frame.ndim == 2:
        return frame
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


class FlowEstimator:
    """Computes flow for pairs of frames with one method and fixed parameters."""

    def __init__(self, method: str = "farneback") -> None:
        if method not in FLOW_METHODS:
            raise InputError(f"unknown flow method {method!r}; choose one of {', '.join(FLOW_METHODS)}")
        self.method = method
        self._dis = None
        if method == "dis":
            self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    def __call__(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
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
        last = prev
        for t, frame in enumerate(frames):
            if last is not None:
                out[t] = self(last, frame)
            last = frame
        return out
