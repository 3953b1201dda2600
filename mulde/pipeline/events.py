"""Score series -> events, shared by ``vad watch`` (streams) and ``vad score --events`` (files).

An event opens when the (smoothed) score has stayed at or above the threshold for
``min_duration`` seconds and closes once it has stayed below for ``cool_down`` seconds; its end
is the last frame above the threshold. Durations are counted in source frames (frame index
differences at the source's frame rate), so skipped frames do not stretch them.

Each event is reported twice as one JSON object per line: ``"event": "open"`` as soon as it
opens (for alerting) and ``"event": "close"`` with the full record: start and end (frame,
wall-clock time, stream time), duration, peak score and frame, the boxes of the
highest-scoring objects at the peak, the feature type that drove the score, a snapshot JPEG of
the peak frame with those boxes drawn, and the stream gaps that fell inside it. A reconnect
gap is reported as its own ``"event": "gap"`` line.

Sinks: a JSON-lines file or stdout (one complete line per write, flushed), and optionally a
webhook that receives each line as an HTTP POST from a background thread (stdlib urllib;
failures are logged, never raised; a full queue drops the oldest message with a log line).
"""

from __future__ import annotations

import json
import logging
import queue
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

import cv2
import numpy as np

from mulde.atomic import atomic_write
from mulde.errors import InputError

log = logging.getLogger(__name__)


@dataclass
class EventRules:
    """threshold: score level; min_duration / cool_down: seconds above to open / below to close."""

    threshold: float
    min_duration: float = 0.5
    cool_down: float = 2.0

    def __post_init__(self) -> None:
        if not np.isfinite(self.threshold):
            raise InputError(f"event threshold must be finite, got {self.threshold}")
        if self.min_duration < 0 or self.cool_down < 0:
            raise InputError(f"--min-duration ({self.min_duration}) and --cool-down ({self.cool_down}) "
                             "must be >= 0 seconds")

    def frames(self, fps: float) -> tuple[int, int]:
        """(frames above to open, frames below to close) at ``fps``; at least one each."""
        return max(1, round(self.min_duration * fps)), max(1, round(self.cool_down * fps))


def iso(t: float | None) -> str | None:
    """Wall-clock seconds since the epoch as ISO 8601 UTC (None stays None)."""
    if t is None or not t:
        return None
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="milliseconds")


def _point(r: Any) -> dict[str, Any]:
    return {"frame": int(r.index), "wall_time": iso(r.capture_time), "stream_time": round(float(r.stream_time), 3)}


def write_snapshot(path: Path, image: np.ndarray, boxes: list[dict[str, Any]]) -> Path:
    """JPEG of an RGB frame with the given boxes drawn (red, labelled with their score); atomic."""
    bgr = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    for b in boxes:
        x1, y1, x2, y2 = (int(round(v)) for v in b["box"])
        cv2.rectangle(bgr, (x1, y1), (x2, y2), (0, 0, 255), 2)
        cv2.putText(bgr, f"{b['score']:.1f}", (x1, max(10, y1 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (0, 0, 255), 1, cv2.LINE_AA)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise InputError(f"{path}: could not encode the snapshot JPEG")
    return atomic_write(path, buf.tobytes())


class EventTracker:
    """Turns one source's frame results into events (see the module doc).

    fps: the source's frame rate (durations in frames); source: its name in the records;
    snapshot_dir: where peak JPEGs go (None: no snapshots); emit: called with every record.
    """

    def __init__(self, rules: EventRules, fps: float, source: str = "", snapshot_dir: str | Path | None = None,
                 emit: Callable[[dict[str, Any]], None] | None = None, tag: str | None = None) -> None:
        self.rules, self.fps, self.source = rules, float(fps), source
        self.open_frames, self.close_frames = rules.frames(self.fps)
        self.snapshot_dir = Path(snapshot_dir) if snapshot_dir else None
        self.emit = emit or (lambda record: None)
        self.tag = tag or "".join(ch if ch.isalnum() else "_" for ch in Path(str(source)).name)[-40:] or "source"
        self.n_events = 0
        self.records: list[dict[str, Any]] | None = None  # set to [] to keep the closed events
        self._run: list[Any] | None = None  # [first above result, peak result, peak boxes]
        self._open: dict[str, Any] | None = None
        self._last_above: Any = None
        self._peak_image: np.ndarray | None = None
        self._gaps: list[dict[str, Any]] = []

    @property
    def is_open(self) -> bool:
        return self._open is not None

    def note_gap(self, gap: dict[str, Any]) -> None:
        """Report a reconnect gap (its own record, and inside the open event if there is one)."""
        self.emit({"event": "gap", "source": self.source, **gap,
                   "start": iso(gap.get("start")), "end": iso(gap.get("end"))})
        if self._open is not None:
            self._gaps.append(gap)

    def update(self, r: Any, image: np.ndarray | Callable[[], np.ndarray] | None = None) -> None:
        """Feed the next frame result; ``image`` (or a function returning it) for snapshots."""
        above = r.score >= self.rules.threshold
        if self._open is None:
            if not above:
                self._run = None
                return
            if self._run is None:
                self._run = [r, r]
                self._keep_peak(r, image)
            elif r.score > self._run[1].score:
                self._run[1] = r
                self._keep_peak(r, image)
            self._last_above = r
            if r.index - self._run[0].index + 1 >= self.open_frames:
                self._start()
            return
        if above:
            self._last_above = r
            if r.score > self._open["peak_result"].score:
                self._open["peak_result"] = r
                self._keep_peak(r, image)
        elif r.index - self._last_above.index >= self.close_frames:
            self._finish("cool_down")

    def close(self, reason: str = "end") -> None:
        """Close an open event now (end of the source, or a signal)."""
        if self._open is not None:
            self._finish(reason)
        self._run = None

    def _keep_peak(self, r: Any, image: Any) -> None:
        if self.snapshot_dir is None or image is None:
            return
        img = image() if callable(image) else image
        self._peak_image = None if img is None else np.array(img, copy=True)

    def _snapshot(self, event_id: str, peak: Any) -> str | None:
        if self.snapshot_dir is None or self._peak_image is None:
            return None
        path = self.snapshot_dir / f"{event_id}.jpg"
        try:
            write_snapshot(path, self._peak_image, peak.boxes)
        except (OSError, InputError) as exc:
            log.warning("could not write snapshot %s: %s", path, exc)
            return None
        return str(path)

    def _record(self, kind: str, peak: Any) -> dict[str, Any]:
        o = self._open
        return {"event": kind, "id": o["id"], "source": self.source, "threshold": round(self.rules.threshold, 6),
                "start": _point(o["start"]),
                "peak": {"score": round(float(peak.score), 4), **_point(peak)},
                "driver": peak.driver, "boxes": peak.boxes}

    def _start(self) -> None:
        start, peak = self._run
        self.n_events += 1
        self._open = {"id": f"{self.tag}-{self.n_events:04d}", "start": start, "peak_result": peak}
        self._gaps = []
        record = self._record("open", peak)
        record["snapshot"] = self._snapshot(self._open["id"], peak)
        self._run = None
        self.emit(record)

    def _finish(self, reason: str) -> None:
        peak, end = self._open["peak_result"], self._last_above
        record = self._record("close", peak)
        record["end"] = _point(end)
        record["duration_s"] = round((end.index - self._open["start"].index + 1) / self.fps, 3)
        record["snapshot"] = self._snapshot(self._open["id"], peak)
        record["closed_by"] = reason
        record["gaps"] = list(self._gaps)
        self._open, self._gaps, self._peak_image = None, [], None
        if self.records is not None:
            self.records.append(record)
        self.emit(record)


class Webhook:
    """POSTs JSON records to a URL from a background thread; failures are logged, never raised."""

    def __init__(self, url: str, timeout: float = 5.0, max_queue: int = 100) -> None:
        if not url.lower().startswith(("http://", "https://")):
            raise InputError(f"--webhook must be an http:// or https:// URL, got {url!r}")
        self.url, self.timeout = url, float(timeout)
        self.queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self.sent = self.failed = self.dropped = 0
        self._thread = threading.Thread(target=self._loop, name="mulde-webhook", daemon=True)
        self._thread.start()

    def __call__(self, record: dict[str, Any]) -> None:
        while True:
            try:
                self.queue.put_nowait(record)
                return
            except queue.Full:
                try:
                    self.queue.get_nowait()
                    self.dropped += 1
                    log.warning("webhook %s: queue full, dropped the oldest message", self.url)
                except queue.Empty:
                    pass

    def _loop(self) -> None:
        while True:
            record = self.queue.get()
            if record is None:
                return
            data = json.dumps(record).encode()
            req = urllib.request.Request(self.url, data=data, method="POST",
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    resp.read()
                self.sent += 1
            except (urllib.error.URLError, OSError, ValueError) as exc:
                self.failed += 1
                log.warning("webhook %s failed: %s", self.url, getattr(exc, "reason", exc))

    def close(self, wait: float = 5.0) -> None:
        """Send what is queued (up to ``wait`` seconds), then stop."""
        try:
            self.queue.put(None, timeout=wait)
        except queue.Full:
            return
        self._thread.join(timeout=wait)


class EventSink:
    """Writes records as JSON lines to a file (appending) or to stdout, and to a webhook."""

    def __init__(self, path: str | Path | None = None, webhook: str | None = None,
                 stream: TextIO | None = None) -> None:
        self.path = Path(path).expanduser() if path else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh: TextIO = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        else:
            self._fh = stream or sys.stdout
        self.webhook = Webhook(webhook) if webhook else None
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}

    def __call__(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, default=str) + "\n"
        with self.lock:
            self._fh.write(line)
            self._fh.flush()
            self.counts[record.get("event", "?")] = self.counts.get(record.get("event", "?"), 0) + 1
        if self.webhook is not None:
            self.webhook(record)

    def close(self) -> None:
        if self.webhook is not None:
            self.webhook.close()
        if self.path is not None:
            self._fh.close()


def events_for_series(results: list[Any], rules: EventRules, fps: float, source: str = "",
                      snapshot_dir: str | Path | None = None,
                      image_of: Callable[[int], np.ndarray] | None = None) -> list[dict[str, Any]]:
    """All records (open, close) for a finished series of frame results (``vad score --events``)."""
    records: list[dict[str, Any]] = []
    tracker = EventTracker(rules, fps, source, snapshot_dir, emit=records.append)
    for r in results:
        tracker.update(r, (lambda i=r.index: image_of(i)) if image_of is not None else None)
    tracker.close("end")
    return records


def write_events(path: str | Path, records: list[dict[str, Any]]) -> Path:
    """Write finished records as JSON lines atomically (a file is never half written)."""
    return atomic_write(Path(path).expanduser(), "".join(json.dumps(r, default=str) + "\n" for r in records))


def tracker_for_run(run: Any, alerts: Any, fps: float, source: str, snapshot_dir: str | Path | None = None,
                    emit: Callable[[dict[str, Any]], None] | None = None) -> EventTracker:
    """An :class:`EventTracker` with the threshold and rules of a run's config ``alerts`` section."""
    from mulde.pipeline.threshold import threshold_for

    thr, how = threshold_for(run, alerts.alarm_rate, alerts.threshold, fps=fps)
    log.info("events: %s; open after %g s above, close after %g s below", how, alerts.min_duration,
             alerts.cool_down)
    return EventTracker(EventRules(thr, alerts.min_duration, alerts.cool_down), fps, source, snapshot_dir, emit)
