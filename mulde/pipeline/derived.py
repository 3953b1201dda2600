"""Derived object features from the cached boxes and frame indices: track motion and position.

Per-frame motion features (flow histograms inside a box) cannot see an object that stopped:
its flow is zero, like the background's, and a single frame does not say that it *stays*.
And in a fixed camera, what is normal depends on where an object is: speed, size and direction
vary with the position on the ground plane. Both need no new extraction; they are computed
from the boxes and frame indices that every object feature table already holds, and applied
identically to training and test tables (like tracklet smoothing in ``tracks.py``):

``track``: boxes are linked into tracks (``tracks.link_tracks``); for each row, over its
track within ±``window`` frames:
  - ``track_dx``, ``track_dy``: net displacement of the box centre per frame, in box heights
    (direction along the track, not the flow's noisy per-frame direction);
  - ``straightness``: net displacement / path length (1 on a straight walk, low when an object
    stops and jitters or turns back; 1 when the track is a single box);
  - ``dwell``: how long the object stayed in one place, nearby in time: for each row, the
    fraction of the 2·window + 1 frames in which its track's centre is within a quarter of
    a box height (``DWELL_RADIUS``) of this row's centre; ``dwell`` is the largest such fraction over the rows of the track within
    ±window frames, so the frames just before and after a stop see it too. A walker stays within
    a quarter of its height for a few frames (a slow one, 0.8 px per frame at 18 px tall, for 11:
    with half a height, 23 of 25 frames, as high as a stop), a lone flicker box for one, an object that stopped for
    all of them. (A zero displacement alone does not tell a stopped object from a one-box
    track, and on motion blobs two walkers merged into one box also move slowly: measured on
    the demo, where displacement and straightness alone lowered the loitering AUC.)
``position``: ``pos_x``, ``pos_y`` the box centre and ``box_h`` its height, in pixels. The
density models standardise every column with training statistics, so pixel units are fine;
they let the model learn what speed and size are normal at each place of the image.

``activity``: a frame-level feature type of its own, computed from each ``flowgrid`` row: how
much of the scene moves and how fast (``ACTIVITY_COLUMNS``: the log fraction of pixels moving at
least the first magnitude edge, the log fraction moving at least 1 working pixel per frame, the
log mean speed, and the fraction of grid cells with any motion). The flow grid's own density sees
a frame where nothing moves near the middle of its sparse histograms, so a stalled scene or a
frozen feed scores as very normal (benchmarks/RESULTS.md, session 17); a density over these four
numbers sees directly that the scene never stood still in training.

The track and position columns are appended to the object tables of ``DERIVED_TYPES``
(``velocity``); ``activity`` adds an ``activity`` table beside ``flowgrid``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mulde.errors import InputError
from mulde.extractors.base import FeatureTable
from mulde.pipeline.tracks import link_tracks

DERIVED_KINDS = ("track", "position", "activity")
OBJECT_KINDS = ("track", "position")
ACTIVITY_COLUMNS = ["moving", "fast", "speed", "spread"]
ACTIVITY_SOURCE = "flowgrid"
ACTIVITY_FLOOR = 1e-3
"""Added before the logs: a fraction or speed of zero (a still frame) stays finite."""
TRACK_COLUMNS = ["track_dx", "track_dy", "straightness", "dwell"]
POSITION_COLUMNS = ["pos_x", "pos_y", "box_h"]
DERIVED_TYPES = ("velocity",)
DWELL_RADIUS = 0.25
"""``dwell`` counts frames with the track's centre within this many box heights of a row's centre."""


def check_derived(kinds: Sequence[str] | str | None, window: int) -> tuple[str, ...]:
    """Normalise the ``derived`` option to a tuple of known kinds (InputError otherwise)."""
    if not kinds:
        return ()
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    unknown = [k for k in kinds if k not in DERIVED_KINDS]
    if unknown:
        raise InputError(f"unknown derived feature(s) {', '.join(map(str, unknown))}; "
                         f"choose from {', '.join(DERIVED_KINDS)}")
    if "track" in kinds and int(window) < 1:
        raise InputError(f"derived_window must be >= 1 frame for track features, got {window}")
    return tuple(k for k in DERIVED_KINDS if k in kinds)


def object_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    """The kinds that add columns to object rows (``track``, ``position``)."""
    return tuple(k for k in kinds if k in OBJECT_KINDS)


def derived_frame_types(kinds: Sequence[str] | None, available: Sequence[str] | set[str]) -> tuple[str, ...]:
    """The frame-level types that ``kinds`` add beside tables of the ``available`` types."""
    return ("activity",) if "activity" in (kinds or ()) and ACTIVITY_SOURCE in available else ()


def track_columns(frame_idx: np.ndarray, boxes: np.ndarray, window: int) -> np.ndarray:
    """(n, 4) TRACK_COLUMNS of every row (see the module docstring)."""
    n = len(frame_idx)
    out = np.zeros((n, len(TRACK_COLUMNS)), np.float32)
    if n == 0:
        return out
    frame_idx = np.asarray(frame_idx, np.int64)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    tid = link_tracks(frame_idx, boxes)
    order = np.lexsort((frame_idx, tid))  # rows grouped by track, in frame order
    frames, track = frame_idx[order], tid[order]
    c = ((boxes[order, :2] + boxes[order, 2:]) / 2).astype(np.float64)
    height = np.maximum(boxes[order, 3] - boxes[order, 1], 1.0).astype(np.float64)
    # one sorted key over all tracks, with gaps wider than the window between tracks, so each
    # row's window [lo, hi] (positions in `order`, inclusive) never leaves its own track
    key = track * (int(frames.max()) + 2 * window + 2) + frames
    lo = np.searchsorted(key, key - window, side="left")
    hi = np.searchsorted(key, key + window, side="right") - 1
    new_track = np.r_[True, track[1:] != track[:-1]]
    step = np.r_[0.0, np.hypot(*np.diff(c, axis=0).T)]
    path = np.cumsum(np.where(new_track, 0.0, step))
    hsum = np.r_[0.0, np.cumsum(height)]
    mean_h = (hsum[hi + 1] - hsum[lo]) / (hi - lo + 1)
    span = (frames[hi] - frames[lo]).astype(np.float64)
    moved = c[hi] - c[lo]
    v = np.where(span[:, None] > 0, moved / np.maximum(span, 1.0)[:, None] / mean_h[:, None], 0.0)
    travelled = path[hi] - path[lo]
    straight = np.where(travelled > 1e-6, np.hypot(*moved.T) / np.maximum(travelled, 1e-6), 1.0)
    # near: rows of the window within DWELL_RADIUS heights of this row's centre; dwell: the
    # largest near over the window
    near = np.ones(n, np.float64)  # the row itself
    for ok, j in _window_partners(lo, hi):
        near += ok & (np.hypot(*(c[j] - c).T) <= DWELL_RADIUS * height)
    near /= 2 * window + 1
    dwell = near.copy()
    for ok, j in _window_partners(lo, hi):
        dwell = np.where(ok, np.maximum(dwell, near[j]), dwell)
    out[order] = np.c_[v, straight, dwell]
    return out


def _window_partners(lo: np.ndarray, hi: np.ndarray):
    """For each offset k = ±1, ±2, ... within the widest window: (row i's window holds row i + k,
    i + k clipped to the rows), so per-row window loops run over offsets, not rows."""
    n = len(lo)
    pos = np.arange(n)
    reach = int(max((hi - pos).max(), (pos - lo).max()))
    for k in range(1, reach + 1):
        for j in (pos + k, pos - k):
            yield (j >= lo) & (j <= hi), np.clip(j, 0, n - 1)


def position_columns(boxes: np.ndarray) -> np.ndarray:
    """(n, 3) POSITION_COLUMNS: box centre x, y and height in pixels."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return np.c_[(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2,
                 boxes[:, 3] - boxes[:, 1]].astype(np.float32)


def activity_columns(values: np.ndarray, meta: dict) -> np.ndarray:
    """(n, 4) ACTIVITY_COLUMNS of flow-grid rows laid out as ``meta`` says (grid, bins, log1p)."""
    rows, cols = meta["grid"]
    n_bins, edges = int(meta["n_bins"]), list(meta["mag_edges"])
    v = np.asarray(values, np.float64).reshape(len(values), int(rows) * int(cols), n_bins + len(edges))
    ori = np.expm1(v[..., :n_bins]) if meta.get("log1p", True) else v[..., :n_bins]
    mag = v[..., n_bins:]
    moving = mag.sum(-1)
    fast = mag[..., [j for j, e in enumerate(edges) if e >= 1.0]].sum(-1)
    return np.c_[np.log(ACTIVITY_FLOOR + moving.mean(1)), np.log(ACTIVITY_FLOOR + fast.mean(1)),
                 np.log(ACTIVITY_FLOOR + ori.sum(-1).mean(1)),
                 (moving > 10 * ACTIVITY_FLOOR).mean(1)].astype(np.float32)


def activity_table(flowgrid: FeatureTable) -> FeatureTable:
    """The ``activity`` table of one video: one row per flow-grid row."""
    meta = flowgrid.meta
    missing = [k for k in ("grid", "n_bins", "mag_edges") if k not in meta]
    if missing:
        raise InputError(f"derived activity needs the flow grid's layout ({', '.join(missing)} missing from its "
                         "cached table); re-extract the flowgrid features")
    values = (activity_columns(flowgrid.values, meta) if len(flowgrid)
              else np.zeros((0, len(ACTIVITY_COLUMNS)), np.float32))
    return FeatureTable(frame_idx=flowgrid.frame_idx, values=values,
                        meta={"n_frames": flowgrid.n_frames, "feature_type": "activity",
                              "columns": list(ACTIVITY_COLUMNS), "dim": len(ACTIVITY_COLUMNS),
                              "source": ACTIVITY_SOURCE})


def add_derived(table: FeatureTable, kinds: Sequence[str], window: int) -> FeatureTable:
    """A copy of one object table with the derived columns of ``kinds`` appended."""
    kinds = object_kinds(check_derived(kinds, window))
    if not kinds:
        return table
    if table.boxes is None:
        raise InputError("derived track/position features need boxes; this feature table has none "
                         "(frame-level features?): drop --derived or use --features objects")
    base = table.values if table.values.ndim == 2 else table.values.reshape(len(table), 0)
    parts, names = [base], []
    if "track" in kinds:
        parts.append(track_columns(table.frame_idx, table.boxes, int(window)))
        names += TRACK_COLUMNS
    if "position" in kinds:
        parts.append(position_columns(table.boxes))
        names += POSITION_COLUMNS
    values = np.concatenate(parts, axis=1).astype(np.float32)
    meta = dict(table.meta, derived=list(kinds), derived_window=int(window))
    if meta.get("columns"):
        meta["columns"] = list(meta["columns"]) + names
    if "dim" in meta:
        meta["dim"] = values.shape[1]
    return FeatureTable(frame_idx=table.frame_idx, values=values, boxes=table.boxes,
                        object_id=table.object_id, meta=meta)


def apply_derived(tables: dict[str, FeatureTable], kinds: Sequence[str] | str | None,
                  window: int) -> dict[str, FeatureTable]:
    """Append the derived columns to one video's object tables of ``DERIVED_TYPES``, and add the
    ``activity`` table when asked for and a flow grid is there."""
    kinds = check_derived(kinds, window)
    if not kinds:
        return tables
    obj = object_kinds(kinds)
    out = {t: add_derived(tab, obj, window) if obj and t in DERIVED_TYPES and tab.boxes is not None else tab
           for t, tab in tables.items()}
    if derived_frame_types(kinds, tables):
        out["activity"] = activity_table(tables[ACTIVITY_SOURCE])
    return out
