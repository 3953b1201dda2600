"""Causal scoring: frames in one at a time, a score out for each, bounded state only.

:class:`OnlineScorer` is what ``vad watch`` and ``vad score --causal`` run. Per stream it keeps a
frame-by-frame extractor (:mod:`mulde.extractors.stepwise`: previous frame, online motion model,
trailing clip window) plus one per ``extractor.frame_features`` entry, an online tracker for
runs trained with ``--track-window``, the recent object rows for runs trained with ``--derived``
and a :class:`CausalSmoother`. The trained
detectors and extractor models are shared by all streams, and frames of several streams are
detected and scored in one batch.

Scores follow :mod:`mulde.pipeline.score`: per type the max over the frame's objects (the
training fill value when there is none), standardised with the training statistics, combined
by clipped sum, then smoothed causally. What differs from the offline path: the smoothing is
one-sided, clip windows trail the frame, tracklet windows look back ``2 * track_window`` frames
instead of ``track_window`` both ways, derived track columns are computed over the last
``2 * derived_window`` frames (:class:`OnlineDerived`), and the background model is primed by
the first frame.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mulde.errors import InputError
from mulde.extractors.base import FeatureTable
from mulde.pipeline.derived import (
    DERIVED_TYPES,
    add_derived,
    apply_derived,
    check_derived,
    object_kinds,
)
from mulde.pipeline.run import Run
from mulde.pipeline.score import combine
from mulde.pipeline.tracks import TRACKED_TYPES, box_iou

SMOOTHERS = ("gaussian", "exponential")


class CausalSmoother:
    """One-sided smoothing of a score series, one value at a time.

    ``gaussian``: weights exp(-k^2 / 2 sigma^2) on the current and the ceil(3 sigma) previous
    values (renormalised over the values seen so far at the start); ``exponential``:
    y_t = a x_t + (1 - a) y_{t-1} with a = 1 / (1 + sigma). ``delay_frames`` is the mean lag of
    the filter (the centre of mass of its weights): a step in the input shows half its height
    about that many frames later. sigma 0 turns smoothing off.
    """

    def __init__(self, sigma: float, kind: str = "gaussian") -> None:
        if kind not in SMOOTHERS:
            raise InputError(f"unknown causal smoothing {kind!r}; choose one of {', '.join(SMOOTHERS)}")
        if not sigma >= 0:
            raise InputError(f"smoothing sigma must be >= 0 frames, got {sigma}")
        self.sigma, self.kind = float(sigma), kind
        if kind == "gaussian" and self.sigma > 0:
            k = np.arange(int(math.ceil(3 * self.sigma)) + 1, dtype=np.float64)
            self.weights = np.exp(-0.5 * (k / self.sigma) ** 2)
        else:
            self.weights = np.ones(1)
        self.alpha = 1.0 / (1.0 + self.sigma)
        self.reset()

    def reset(self) -> None:
        self.history: deque[float] = deque(maxlen=len(self.weights))
        self.state: float | None = None

    @property
    def delay_frames(self) -> float:
        """Mean lag in frames (0 when off)."""
        if self.sigma == 0:
            return 0.0
        if self.kind == "exponential":
            return (1.0 - self.alpha) / self.alpha
        return float(np.sum(np.arange(len(self.weights)) * self.weights) / np.sum(self.weights))

    def step(self, value: float) -> float:
        value = float(value)
        if self.sigma == 0:
            return value
        if self.kind == "exponential":
            self.state = value if self.state is None else self.alpha * value + (1 - self.alpha) * self.state
            return self.state
        self.history.appendleft(value)
        w = self.weights[:len(self.history)]
        return float(np.dot(w, np.fromiter(self.history, np.float64, len(self.history))) / w.sum())

    def describe(self, fps: float) -> str:
        d = self.delay_frames
        return (f"causal {self.kind} smoothing, sigma {self.sigma:g} frames: mean delay {d:.1f} frames "
                f"= {d / fps:.2f} s at {fps:g} fps")


class OnlineTracks:
    """Causal version of :func:`mulde.pipeline.tracks.smooth_along_tracks` for one stream.

    Boxes are linked frame by frame with the same greedy IoU rule; each row becomes the mean of
    its track's rows over the last ``2 * window`` frames plus the box-centre speed over them.
    Tracks unseen for longer than the gap allowance are forgotten, so memory stays bounded.
    """

    def __init__(self, window: int, min_iou: float = 0.3, max_gap: int = 2) -> None:
        self.window, self.min_iou, self.max_gap = int(window), min_iou, max_gap
        self.tracks: dict[int, dict[str, Any]] = {}
        self.next_id = 0

    def reset(self) -> None:
        self.tracks.clear()

    def step(self, table: FeatureTable, frame: int) -> FeatureTable:
        n, dim = len(table), table.values.shape[1]
        values = np.zeros((n, dim + 3), np.float32)
        self.tracks = {k: t for k, t in self.tracks.items() if frame - t["last"] <= self.max_gap + 1}
        tid = np.full(n, -1, np.int64)
        live = list(self.tracks)
        if n and live:
            overlap = box_iou(table.boxes, np.stack([self.tracks[k]["box"] for k in live]))
            while overlap.size:
                i, j = np.unravel_index(np.argmax(overlap), overlap.shape)
                if overlap[i, j] < self.min_iou:
                    break
                tid[i] = live[j]
                overlap[i, :], overlap[:, j] = -1.0, -1.0
        for i in range(n):
            if tid[i] < 0:
                tid[i] = self.next_id
                self.tracks[self.next_id] = {"rows": deque()}
                self.next_id += 1
            box = table.boxes[i]
            track = self.tracks[int(tid[i])]
            track["last"], track["box"] = frame, box
            rows = track["rows"]
            rows.append((frame, table.values[i].astype(np.float64), (box[:2] + box[2:]) / 2,
                         max(float(box[3] - box[1]), 1.0)))
            while rows and rows[0][0] < frame - 2 * self.window:
                rows.popleft()
            values[i, :dim] = np.mean([r[1] for r in rows], axis=0)
            span = rows[-1][0] - rows[0][0]
            if span > 0:
                mean_h = float(np.mean([r[3] for r in rows]))
                v = (rows[-1][2] - rows[0][2]) / span / mean_h
                values[i, dim:] = [v[0], v[1], math.hypot(v[0], v[1])]
        return FeatureTable(frame_idx=table.frame_idx, values=values, boxes=table.boxes,
                            object_id=table.object_id, meta=table.meta)


class OnlineDerived:
    """Causal version of :func:`mulde.pipeline.derived.add_derived` for one stream.

    Keeps the object rows of the last ``2 * window`` frames and gives the current frame's rows
    the columns the offline code computes on that trailing span: a row's track window then
    reaches back ``window`` frames instead of both ways, and ``dwell`` still takes the largest
    fraction over the rows of the last ``window`` frames, each counted over its own full
    window. Memory stays bounded by the span.
    """

    def __init__(self, kinds: tuple[str, ...], window: int) -> None:
        self.kinds, self.window = tuple(kinds), int(window)
        self.rows: deque[FeatureTable] = deque()

    def reset(self) -> None:
        self.rows.clear()

    def step(self, table: FeatureTable, frame: int) -> FeatureTable:
        if table.boxes is None:
            return table
        while self.rows and int(self.rows[0].frame_idx[0]) < frame - 2 * self.window:
            self.rows.popleft()
        if not len(table):  # nothing to add to, but the columns still give the table its width
            return add_derived(table, self.kinds, self.window)
        self.rows.append(table)
        joined = FeatureTable(frame_idx=np.concatenate([t.frame_idx for t in self.rows]),
                              values=np.concatenate([t.values for t in self.rows]),
                              boxes=np.concatenate([t.boxes for t in self.rows]), meta=table.meta)
        out = add_derived(joined, self.kinds, self.window)
        return FeatureTable(frame_idx=table.frame_idx, values=out.values[len(joined) - len(table):],
                            boxes=table.boxes, object_id=table.object_id, meta=out.meta)


@dataclass
class FrameResult:
    """The causal score of one frame and what explains it.

    score: smoothed combined score (what thresholds and events use); raw: combined score before
    smoothing; per_type: each type's raw frame score (max over objects, as ``vad score`` writes);
    z: each type's standardised frame score; driver: the type with the largest standardised
    score; boxes: the highest-scoring objects [{"box": [x1, y1, x2, y2], "score": z, "type": t}].
    """

    index: int
    score: float
    raw: float
    per_type: dict[str, float]
    z: dict[str, float]
    driver: str | None
    boxes: list[dict[str, Any]] = field(default_factory=list)
    capture_time: float = 0.0
    stream_time: float = 0.0


class OnlineStream:
    """Per-stream state: a stepper, an optional tracker, optional derived rows and a smoother.

    ``frame_steppers``: one per ``extractor.frame_features`` entry of a run that models
    frame-level types beside the object types; each sees every frame the main stepper sees.
    """

    def __init__(self, stepper: Any, smoother: CausalSmoother, track_window: int,
                 derived: tuple[str, ...] = (), derived_window: int = 12,
                 frame_steppers: tuple[Any, ...] = ()) -> None:
        self.stepper, self.smoother = stepper, smoother
        self.frame_steppers = tuple(frame_steppers)
        self.tracks = OnlineTracks(track_window) if track_window else None
        self.derived = OnlineDerived(object_kinds(derived), derived_window) if object_kinds(derived) else None
        self.n_scored = 0

    def reset(self) -> None:
        """After a reconnect: no flow into the next frame, tracks restart (smoothing goes on)."""
        for stepper in (self.stepper, *self.frame_steppers):
            stepper.reset()
        if self.tracks is not None:
            self.tracks.reset()
        if self.derived is not None:
            self.derived.reset()


class OnlineScorer:
    """Scores frames causally with a trained run (see the module doc).

    smoothing: ``gaussian`` (one-sided) or ``exponential``; sigma: in frames (default: the run's
    ``smoothing_sigma``); top_k: how many of the highest-scoring objects a result names.
    """

    def __init__(self, run: Run, overrides: dict[str, Any] | None = None, smoothing: str | None = None,
                 sigma: float | None = None, top_k: int = 3) -> None:
        from mulde.pipeline.extract import build_extractors
        from mulde.pipeline.run import check_features, run_config

        self.run = run
        self.cfg = cfg = run_config(run, overrides)
        extractors = build_extractors(cfg)  # the main one, then one per extractor.frame_features entry
        self.extractor, self.frame_extractors = extractors[0], tuple(extractors[1:])
        check_features(run, extractors)
        self.types = tuple(run.feature_types)
        self.track_window = int(cfg.scoring.track_window or 0)
        self.derived = check_derived(cfg.scoring.derived, cfg.scoring.derived_window)
        self.derived_window = int(cfg.scoring.derived_window)
        self.frame_kinds = tuple(k for k in self.derived if k not in object_kinds(self.derived))
        self.rule, self.levels = cfg.scoring.combine, cfg.scoring.combine_levels
        self.sigma = float(cfg.scoring.smoothing_sigma or 0) if sigma is None else float(sigma)
        self.smoothing = smoothing or getattr(getattr(cfg, "alerts", None), "smoothing", "gaussian")
        CausalSmoother(self.sigma, self.smoothing)  # validates
        self.top_k = int(top_k)
        self._flow = None

    def new_stream(self) -> OnlineStream:
        from mulde.extractors.stepwise import make_stepper

        shared = {}
        if self.extractor.name == "objects":
            from mulde.extractors.flow import FlowEstimator

            c = self.extractor.cfg
            if self._flow is None:
                self._flow = FlowEstimator(c.flow, device=c.device, cache=c.cache)
            shared["flow"] = self._flow
        return OnlineStream(make_stepper(self.extractor, **shared), CausalSmoother(self.sigma, self.smoothing),
                            self.track_window, self.derived, self.derived_window,
                            tuple(make_stepper(ex) for ex in self.frame_extractors))

    def warm_up(self, height: int, width: int, frames: int = 2) -> None:
        """Score a few blank frames of one size on a throwaway stream.

        The first frame of a new size pays one-off costs (the detector's input setup, the flow
        estimator's buffers, lazy kernels on a GPU): about 150 ms here against 10-90 ms after it
        (benchmarks/RESULTS.md). A live watcher pays them before its first camera frame instead
        of dropping the frames that arrive meanwhile; the streams it scores are not touched.
        """
        stream = self.new_stream()
        blank = np.zeros((int(height), int(width), 3), np.uint8)
        for index in range(int(frames)):
            self.step(stream, index, blank)

    def smoother_delay(self) -> float:
        return CausalSmoother(self.sigma, self.smoothing).delay_frames

    def step(self, stream: OnlineStream, index: int, image: np.ndarray, prev: np.ndarray | None = None,
             capture_time: float = 0.0, stream_time: float = 0.0) -> FrameResult:
        """Score one frame of one stream (see :meth:`step_many`)."""
        return self.step_many([(stream, index, image, prev, capture_time, stream_time)])[0]

    def step_many(self, items: list[tuple]) -> list[FrameResult]:
        """Score one new frame of each of several streams in one batch.

        items: (stream, frame index, RGB image, previous frame or None, capture time, stream time).
        ``previous frame`` is the frame just before this one when frames in between were skipped.
        """
        from mulde.extractors.stepwise import ObjectStepper

        dets: list = [None] * len(items)
        if self.extractor.name == "objects":  # one batched detector call for the streams that detect now
            due = [k for k, (stream, index, *_) in enumerate(items) if stream.stepper.detects_on(index)]
            for k, det in zip(due, ObjectStepper.detect(self.extractor, [items[k][2] for k in due])):
                dets[k] = det
        tables = []
        for (stream, index, image, prev, *_), det in zip(items, dets):
            rows = stream.stepper.step(index, image, det=det, prev=prev)
            for stepper in stream.frame_steppers:
                rows.update(stepper.step(index, image, prev=prev))
            if stream.tracks is not None:
                rows = {t: stream.tracks.step(tab, index) if t in TRACKED_TYPES else tab for t, tab in rows.items()}
            if stream.derived is not None:
                rows = {t: stream.derived.step(tab, index) if t in DERIVED_TYPES else tab for t, tab in rows.items()}
            rows = apply_derived(rows, self.frame_kinds, self.derived_window)
            tables.append(rows)
        row_scores = self._score_rows(tables)
        out = []
        for k, (stream, index, _image, _prev, capture_time, stream_time) in enumerate(items):
            out.append(self._frame_result(stream, index, tables[k], row_scores[k], capture_time, stream_time))
        return out

    def _score_rows(self, tables: list[dict[str, FeatureTable]]) -> list[dict[str, np.ndarray]]:
        """Detector scores of every row, one ``score_samples`` call per type across streams."""
        out: list[dict[str, np.ndarray]] = [{} for _ in tables]
        for t in self.types:
            parts = [tab[t].values for tab in tables]
            sizes = [len(p) for p in parts]
            scores = (np.asarray(self.run.detectors[t].score_samples(np.concatenate(parts)), np.float64)
                      if sum(sizes) else np.zeros(0))
            for k, part in enumerate(np.split(scores, np.cumsum(sizes)[:-1])):
                out[k][t] = part
        return out

    def _frame_result(self, stream: OnlineStream, index: int, tables: dict[str, FeatureTable],
                      rows: dict[str, np.ndarray], capture_time: float, stream_time: float) -> FrameResult:
        stats = self.run.stats
        per_type = {t: float(rows[t].max()) if len(rows[t]) else float(stats[t].fill) for t in self.types}
        z = {t: (per_type[t] - stats[t].mean) / stats[t].std for t in self.types}
        raw = float(combine({t: np.array([per_type[t]]) for t in self.types}, stats, self.rule, self.levels)[0])
        score = stream.smoother.step(raw)
        stream.n_scored += 1
        driver = max(z, key=z.get) if z else None
        boxes = []
        for t in self.types:
            tab = tables[t]
            if tab.boxes is None or not len(tab):
                continue
            zs = (rows[t] - stats[t].mean) / stats[t].std
            boxes += [{"box": [round(float(v), 1) for v in tab.boxes[i]], "score": round(float(zs[i]), 4), "type": t}
                      for i in range(len(tab))]
        boxes = sorted(boxes, key=lambda b: -b["score"])[:self.top_k]
        return FrameResult(index=index, score=score, raw=raw, per_type=per_type, z=z, driver=driver,
                           boxes=boxes, capture_time=capture_time, stream_time=stream_time)


def score_video_causally(video: Any, run: Run, overrides: dict[str, Any] | None = None, fps: float | None = None,
                         tracker: Any = None, progress: bool = True) -> tuple[Any, OnlineScorer]:
    """Causal per-frame scores of a finished video (``vad score --causal``) as a DataFrame.

    A video file is decoded by the same :class:`~mulde.datasets.stream.StreamSource` as
    ``vad watch FILE --no-realtime``, so the two give identical scores; a frame folder is read
    in order. ``tracker`` (an :class:`~mulde.pipeline.events.EventTracker`) sees every result.
    """
    from pathlib import Path

    import pandas as pd
    from tqdm.auto import tqdm

    from mulde.datasets.stream import StreamSource
    from mulde.datasets.video import open_video

    scorer = OnlineScorer(run, overrides)
    stream = scorer.new_stream()
    rows: list[list[float]] = []
    if Path(str(video)).is_dir():
        reader = open_video(video, fps=fps)
        fps = float(reader.fps)
        frames = ((start + k, f, 0.0, (start + k) / fps) for start, chunk in reader.iter_chunks(16) for k, f in enumerate(chunk))
        total, closer = reader.n_frames, reader.close
    else:
        source = StreamSource(video, realtime=False, fps=fps)
        frames = ((f.index, f.image, f.capture_time, f.stream_time) for f in source)
        total, closer = None, source.close
    try:
        for index, image, capture_time, stream_time in tqdm(frames, total=total, unit="frame", disable=not progress,
                                                             desc=f"causal {Path(str(video)).name}"):
            r = scorer.step(stream, index, image, capture_time=capture_time, stream_time=stream_time)
            if tracker is not None:
                tracker.update(r, image)
            rows.append([r.index, r.stream_time, r.score, *[r.per_type[t] for t in scorer.types]])
    finally:
        closer()
    if tracker is not None:
        tracker.close("end")
    columns = ["frame", "time_s", "score", *[f"score_{t}" for t in scorer.types]]
    frame = pd.DataFrame(rows, columns=columns)
    frame["frame"] = frame["frame"].astype(np.int64)
    return frame, scorer


def results_from_offline(final: np.ndarray, per_type: dict[str, np.ndarray], rows: dict[str, np.ndarray],
                         tables: dict[str, FeatureTable], run: Run, fps: float, top_k: int = 3) -> list[FrameResult]:
    """Frame results of an offline (centred) scoring, so files get the same events as streams."""
    stats = run.stats
    boxes: dict[int, list[dict[str, Any]]] = {}
    for t in per_type:
        tab = tables[t]
        if tab.boxes is None or not len(tab):
            continue
        zs = (rows[t] - stats[t].mean) / stats[t].std
        for i in range(len(tab)):
            boxes.setdefault(int(tab.frame_idx[i]), []).append(
                {"box": [round(float(v), 1) for v in tab.boxes[i]], "score": round(float(zs[i]), 4), "type": t})
    out = []
    for i, score in enumerate(np.asarray(final, np.float64)):
        z = {t: (float(per_type[t][i]) - stats[t].mean) / stats[t].std for t in per_type}
        out.append(FrameResult(index=i, score=float(score), raw=float(score),
                               per_type={t: float(per_type[t][i]) for t in per_type}, z=z,
                               driver=max(z, key=z.get) if z else None,
                               boxes=sorted(boxes.get(i, []), key=lambda b: -b["score"])[:top_k],
                               capture_time=0.0, stream_time=i / fps))
    return out
