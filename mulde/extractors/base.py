"""The feature table every extractor produces and every detector consumes.

One :class:`FeatureTable` holds the rows of one feature type for one video. Frame-centric
features have one row per frame; object-centric features have one row per detected object
(several per frame, none for empty frames), each with its box so a score can be traced back
to pixels.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mulde.atomic import atomic_path
from mulde.errors import InputError

OBJECT_FEATURE_TYPES = ("velocity", "pose", "deep", "appearance", "context")
"""The types of the object-centric extractor: one row per object. Every other type (flow grid,
Hiera, derived activity) has one row per frame."""


@dataclass
class FeatureTable:
    """Rows of one feature type for one video.

    frame_idx: (N,) int64, 0-based frame of each row.
    values:    (N, D) float32 feature rows.
    boxes:     (N, 4) float32 x1, y1, x2, y2 in pixels of the source frame, or None.
    object_id: (N,) int32 index of the object within its frame, or None.
    meta:      JSON-serialisable record: at least ``n_frames`` (frames in the video) and
               ``feature_type``; extractors add their own keys.
    """

    frame_idx: np.ndarray
    values: np.ndarray
    boxes: np.ndarray | None = None
    object_id: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.frame_idx = np.asarray(self.frame_idx, dtype=np.int64).reshape(-1)
        values = np.asarray(self.values, dtype=np.float32)
        if values.ndim == 1:
            values = values.reshape(len(self.frame_idx), -1) if len(self.frame_idx) else values.reshape(0, 0)
        self.values = values
        n = len(self.frame_idx)
        if self.values.shape[0] != n:
            raise InputError(
                f"feature table has {n} frame indices but {self.values.shape[0]} value rows"
            )
        if self.boxes is not None:
            self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(n, 4)
        if self.object_id is not None:
            self.object_id = np.asarray(self.object_id, dtype=np.int32).reshape(n)

    @property
    def dim(self) -> int:
        return int(self.values.shape[1]) if self.values.ndim == 2 else 0

    @property
    def n_frames(self) -> int:
        return int(self.meta.get("n_frames", int(self.frame_idx.max()) + 1 if len(self.frame_idx) else 0))

    def __len__(self) -> int:
        return int(len(self.frame_idx))

    @classmethod
    def empty(cls, dim: int, n_frames: int, with_boxes: bool = True, **meta: Any) -> FeatureTable:
        """A table with no rows (e.g. a video in which nothing was detected)."""
        return cls(
            frame_idx=np.zeros(0, np.int64),
            values=np.zeros((0, dim), np.float32),
            boxes=np.zeros((0, 4), np.float32) if with_boxes else None,
            object_id=np.zeros(0, np.int32) if with_boxes else None,
            meta={"n_frames": int(n_frames), **meta},
        )

    @classmethod
    def concat(cls, tables: list[FeatureTable], meta: dict[str, Any] | None = None) -> FeatureTable:
        """Stack tables of the same feature type (e.g. chunks of one video)."""
        if not tables:
            raise InputError("cannot concatenate an empty list of feature tables")
        has_boxes = tables[0].boxes is not None
        return cls(
            frame_idx=np.concatenate([t.frame_idx for t in tables]),
            values=np.concatenate([t.values for t in tables], axis=0),
            boxes=np.concatenate([t.boxes for t in tables], axis=0) if has_boxes else None,
            object_id=np.concatenate([t.object_id for t in tables]) if has_boxes else None,
            meta=dict(meta if meta is not None else tables[0].meta),
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write as ``.npz`` atomically (temp file in the same folder, then rename)."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {
            "frame_idx": self.frame_idx,
            "values": self.values,
            "meta": np.frombuffer(json.dumps(self.meta, sort_keys=True).encode(), dtype=np.uint8),
        }
        if self.boxes is not None:
            arrays["boxes"] = self.boxes
            arrays["object_id"] = self.object_id if self.object_id is not None else np.zeros(len(self), np.int32)
        with atomic_path(path) as tmp, tmp.open("wb") as fh:
            np.savez(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureTable:
        """Read a table written by :meth:`save`; a corrupt file raises a clear error."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode()) if "meta" in z else {}
                return cls(
                    frame_idx=z["frame_idx"],
                    values=z["values"],
                    boxes=z["boxes"] if "boxes" in z else None,
                    object_id=z["object_id"] if "object_id" in z else None,
                    meta=meta,
                )
        except FileNotFoundError:
            raise
        except Exception as exc:  # zipfile/npz/json errors all mean the same thing to a user
            raise InputError(
                f"{path}: cached feature file is corrupt ({type(exc).__name__}); delete it or rerun with --overwrite"
            ) from exc


class Extractor(Protocol):
    """What every feature extractor provides (see ``mulde.extractors.registry``).

    ``name`` is a short id (``objects``, ``flowgrid``, ``hiera``); ``feature_types`` are the
    keys of the dict returned by :meth:`extract`; :meth:`config` returns the JSON-serialisable
    settings that change the features (it goes into the cache key).
    """

    name: str
    feature_types: tuple[str, ...]

    def config(self) -> dict[str, Any]: ...

    def extract(self, reader: Any, progress: bool = True) -> dict[str, FeatureTable]: ...


def check_options(extractor: str, options: dict[str, Any], config_class: type) -> None:
    """One clear error for an option the extractor's config dataclass does not have."""
    valid = {f.name for f in fields(config_class)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise InputError(f"unknown {extractor} option {unknown[0]!r}; valid options: {', '.join(sorted(valid))}")


def put_unless_stopped(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put ``item`` on a bounded queue, waiting while it is full (back-pressure), unless ``stop``
    is set first; returns whether the item was queued. Used by the read-ahead threads."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
