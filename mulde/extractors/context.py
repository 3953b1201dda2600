"""Context (C) features: how fast an object's box moves, and what moves beside its lower body.

Two failure modes measured on UCSD Ped2 motivate them (benchmarks/RESULTS.md, session 7):

- A person detector boxes the rider, not the bicycle. A slowly ridden bike's rider box has a
  walker's size, pose and flow histogram, and scores as a normal walker; the wheels lie beside
  the box's lower half, where a walker's surroundings are still ground. ``side_speed`` and
  ``side_coherent`` look there.
- The velocity histogram (:mod:`mulde.extractors.velocity`) sums the flow of every pixel, so a
  walker's swinging legs and a glider's still ones blur together with the body's translation.
  ``speed`` is the translation alone: the length of the box's mean flow vector.

Columns, per box of height ``h`` (every speed in body heights per frame, so perspective drops out):

- ``speed``: ``|mean flow in the box| / h``;
- ``side_speed``: mean flow magnitude in two bands beside the box's lower body (each ``h / 2``
  wide, from ``0.4 h`` below the top to ``0.1 h`` below the bottom), pixels inside any box of the
  frame left out (they belong to other objects), divided by ``h``; 0 where the bands are empty;
- ``side_coherent``: the share of those band pixels that move with the box (flow projected on the
  box's mean flow between half and 1.5 times its length); 0 while the box moves under
  ``MIN_SPEED`` pixels per frame.
"""

from __future__ import annotations

import numpy as np

from mulde.extractors.velocity import box_slices

CONTEXT_COLUMNS = ("speed", "side_speed", "side_coherent")
BAND_WIDTH = 0.5  # of the box height, each side
BAND_TOP, BAND_BOTTOM = 0.4, 0.1  # below the box top / below its bottom, in box heights
MIN_SPEED = 0.2  # pixels per frame: slower boxes have no direction to be coherent with


def context_features(flow: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Context features (n, 3) of the boxes (n, 4) in one flow field (H, W, 2)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    out = np.zeros((len(boxes), len(CONTEXT_COLUMNS)), np.float32)
    if len(boxes) == 0:
        return out
    height, width = flow.shape[:2]
    free = np.ones((height, width), bool)
    for box in boxes:
        free[box_slices(box, height, width)] = False
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        h = max(float(y2 - y1), 1.0)
        inside = flow[box_slices(boxes[i], height, width)].reshape(-1, 2)
        v = inside.mean(axis=0)
        speed = float(np.hypot(*v))
        ya, yb = int(max(0.0, y1 + BAND_TOP * h)), int(min(height, np.ceil(y2 + BAND_BOTTOM * h)))
        bands = []
        for xa, xb in ((x1 - BAND_WIDTH * h, x1), (x2, x2 + BAND_WIDTH * h)):
            xa, xb = int(max(0.0, xa)), int(min(width, np.ceil(xb)))
            if xb > xa and yb > ya:
                bands.append(flow[ya:yb, xa:xb][free[ya:yb, xa:xb]])
        band = np.concatenate(bands) if bands else np.zeros((0, 2), np.float32)
        mag = np.hypot(band[:, 0], band[:, 1])
        side_speed = float(mag.mean()) / h if mag.size else 0.0
        coherent = 0.0
        if mag.size and speed >= MIN_SPEED:
            along = band @ v / float(v @ v)
            coherent = float(np.mean((along > 0.5) & (along < 1.5)))
        out[i] = (speed / h, side_speed, coherent)
    return out
