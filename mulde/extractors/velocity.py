"""Velocity (V) features: per box, a magnitude-weighted histogram of optical-flow orientations.

Orientation is ``atan2(dy, dx)`` in image coordinates (x right, y down), so with 8 bins,
bin 0 is motion to the right, bin 2 downwards, bin 4 to the left and bin 6 upwards; bins are
centred on these directions (bin k covers k*360/B +- 180/B degrees).

Normalisation (AccI-VAD style, keeps the speed): ``hist[k] = sum(|flow| of the box's pixels
whose orientation falls in bin k) / (number of pixels in the box)``. The histogram therefore
sums to the mean flow magnitude in the box, in pixels per frame: a fast cyclist and a slow
walker going the same way get histograms of different heights, which is the anomaly signal
on Ped2. ``norm="l1"`` instead divides by the total, keeping only the direction profile.
``norm="height"`` divides the area-normalised histogram (and the ``magnitude`` extra) by the
box height in pixels: speed in body heights per frame, which removes perspective (a far
pedestrian moves fewer pixels than a near one at the same pace).

Optional extras appended after the histogram (documented in the table's ``meta["columns"]``):
``magnitude`` - mean flow magnitude in the box (pixels/frame); ``geometry`` - box width and
height relative to the frame, and bottom y relative to the frame height (where on the ground
plane the object is, which calibrates perspective); ``aspect`` - box width / height (a
cyclist or a cart is wider than a walker). A calibration on Ped2 found "magnitude +
geometry" with a GMM gave 0.89 micro AUC vs 0.82-0.84 for the 8-bin histogram alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mulde.errors import InputError

VELOCITY_EXTRAS = ("magnitude", "geometry", "aspect")
VELOCITY_NORMS = ("area", "l1", "height")


def check_velocity_options(bins: int, extras: Sequence[str], norm: str) -> None:
    if int(bins) < 1:
        raise InputError(f"velocity bins must be >= 1, got {bins}")
    bad = [e for e in extras if e not in VELOCITY_EXTRAS]
    if bad:
        raise InputError(f"unknown velocity extra {bad[0]!r}; choose from {', '.join(VELOCITY_EXTRAS)}")
    if norm not in VELOCITY_NORMS:
        raise InputError(f"unknown velocity norm {norm!r}; choose one of {', '.join(VELOCITY_NORMS)}")


def velocity_columns(bins: int = 8, extras: Sequence[str] = ()) -> list[str]:
    """Names of the V feature's columns, in order."""
    cols = [f"hist_{k * 360 / bins:g}deg" for k in range(bins)]
    if "magnitude" in extras:
        cols.append("mean_magnitude")
    if "geometry" in extras:
        cols += ["width_rel", "height_rel", "bottom_y_rel"]
    if "aspect" in extras:
        cols.append("aspect")
    return cols


def box_slices(box: np.ndarray, height: int, width: int) -> tuple[slice, slice]:
    """Pixel rows/cols of a float box, clipped to the frame, at least one pixel."""
    x1 = int(np.clip(np.floor(box[0]), 0, width - 1))
    y1 = int(np.clip(np.floor(box[1]), 0, height - 1))
    x2 = int(np.clip(np.ceil(box[2]), x1 + 1, width))
    y2 = int(np.clip(np.ceil(box[3]), y1 + 1, height))
    return slice(y1, y2), slice(x1, x2)


def flow_histograms(flow: np.ndarray, boxes: np.ndarray, bins: int = 8,
                    extras: Sequence[str] = (), norm: str = "area") -> np.ndarray:
    """V features (n, bins + extras) of the boxes (n, 4) in one flow field (H, W, 2)."""
    check_velocity_options(bins, extras, norm)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    height, width = flow.shape[:2]
    n_extra = len(velocity_columns(bins, extras)) - bins
    out = np.zeros((len(boxes), bins + n_extra), np.float32)
    if len(boxes) == 0:
        return out
    magnitude = np.hypot(flow[..., 0], flow[..., 1])
    angle = np.arctan2(flow[..., 1], flow[..., 0])  # (-pi, pi], y down
    bin_of = (np.rint(angle / (2 * np.pi / bins)).astype(np.int64)) % bins
    for i, box in enumerate(boxes):
        rows, cols = box_slices(box, height, width)
        mag = magnitude[rows, cols].ravel()
        hist = np.bincount(bin_of[rows, cols].ravel(), weights=mag, minlength=bins)
        total = hist.sum()
        scale = max(float(box[3] - box[1]), 1.0) if norm == "height" else 1.0
        if norm in ("area", "height"):
            hist = hist / max(mag.size, 1) / scale
        elif total > 0:
            hist = hist / total
        values = [hist]
        if "magnitude" in extras:
            values.append([(mag.mean() if mag.size else 0.0) / scale])
        if "geometry" in extras:
            values.append([(box[2] - box[0]) / width, (box[3] - box[1]) / height, box[3] / height])
        if "aspect" in extras:
            values.append([(box[2] - box[0]) / max(float(box[3] - box[1]), 1.0)])
        out[i] = np.concatenate([np.asarray(v, np.float64).ravel() for v in values])
    return out
