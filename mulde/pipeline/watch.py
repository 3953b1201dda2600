"""``vad watch``: score live sources as frames arrive and raise events, unattended.

One capture thread per source reads frames (:class:`mulde.datasets.stream.StreamSource`,
which reopens a dropped stream with back-off). The main thread takes the newest frame of every
source that has one, scores them in one batch (:class:`mulde.pipeline.online.OnlineScorer`,
models shared), and feeds each result to its source's :class:`~mulde.pipeline.events.EventTracker`.

Falling behind: a live source (or a file played in real time) keeps only its two newest frames.
When scoring is slower than the source, the frames in between are skipped and counted; the
scored frame's flow is still computed from the frame just before it, so velocity features keep
their meaning, and event durations count source frames. ``--no-realtime`` on a file or stdin
applies back-pressure instead: every frame is scored, none dropped (what ``vad score --causal``
reproduces exactly).

Memory is bounded: two frames per source, the extractor's ring buffers, a fixed window of recent
latencies; scores and events are streamed to files. SIGINT/SIGTERM stop the captures, close any
open event (``closed_by: signal``) and flush every output. A status line (fps, latency, drop
rate, events) is logged every ``status_every`` seconds, and ``metrics_port`` serves Prometheus
text metrics on 127.0.0.1.

Before the captures start, the scorer is warmed up once per distinct frame size
(:meth:`~mulde.pipeline.online.OnlineScorer.warm_up`), so the one-off costs of a first frame do
not make a camera's first frames late or dropped.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from mulde.atomic import commit, temp_path_for
from mulde.datasets.stream import Frame, StreamSource
from mulde.errors import InputError
from mulde.pipeline.events import EventRules, EventSink, EventTracker
from mulde.pipeline.online import FrameResult, OnlineScorer, OnlineStream
from mulde.pipeline.threshold import threshold_for

log = logging.getLogger("mulde")

LATENCY_WINDOW = 2000


@dataclass
class WatchOptions:
    """Command options of ``vad watch`` (thresholds and event rules come from the run config's
    ``alerts`` section).

    realtime: play files at their frame rate (False: as fast as possible, nothing dropped);
    scores: CSV of every scored frame; events: JSON-lines file (None: stdout); webhook: URL that
    receives each event as a POST; snapshots: folder of peak JPEGs (None: beside the events file,
    or none when events go to stdout); metrics_port: Prometheus endpoint on 127.0.0.1;
    status_every: seconds between status lines (0: none); give_up_s: stop reconnecting a source
    after this many seconds without frames (None: never); backoff: first and longest wait between
    reconnect attempts; timeout_s: network open/read time-out; max_frames: stop each source after
    this many frames (tests, benchmarks); max_lag_s: how far scoring may fall behind a live
    source before frames are skipped (the queue holds at most that many seconds of frames).
    """

    realtime: bool = True
    scores: str | None = None
    events: str | None = None
    webhook: str | None = None
    snapshots: str | None = None
    metrics_port: int | None = None
    status_every: float = 10.0
    give_up_s: float | None = None
    backoff: tuple[float, float] = (0.5, 30.0)
    timeout_s: float = 5.0
    max_frames: int | None = None
    fps: float | None = None
    max_lag_s: float = 0.5


@dataclass
class SourceState:
    """Everything the watch loop keeps for one source (bounded)."""

    name: str
    source: StreamSource
    stream: OnlineStream
    tracker: EventTracker
    threshold: float
    blocking: bool
    queue: deque = field(default_factory=deque)
    capacity: int = 2
    evicted: Frame | None = None
    thread: threading.Thread | None = None
    done: bool = False
    error: BaseException | None = None
    last_index: int = -1
    received: int = 0
    scored: int = 0
    dropped: int = 0
    reconnects: int = 0
    pending_gaps: list = field(default_factory=list)
    latencies: deque = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    latency_sum: float = 0.0
    last_score: float = float("nan")
    started: float = field(default_factory=time.time)


class _Metrics(BaseHTTPRequestHandler):
    """``GET /metrics``: Prometheus text format (version 0.0.4)."""

    watcher: Watcher | None = None

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.split("?")[0] not in ("/metrics", "/"):
            self.send_error(404)
            return
        body = self.watcher.metrics_text().encode() if self.watcher else b""
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:  # no access log on stderr
        pass


def _label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


class Watcher:
    """Scores several sources with one :class:`OnlineScorer` (see the module doc)."""

    def __init__(self, sources: list[str], scorer: OnlineScorer, options: WatchOptions | None = None) -> None:
        if not sources:
            raise InputError("vad watch needs at least one SOURCE (URL, webcam index, video file or -)")
        if sum(str(s).strip() == "-" for s in sources) > 1:
            raise InputError("standard input (-) can be given only once")
        self.opts = opts = options or WatchOptions()
        self.scorer = scorer
        alerts = scorer.cfg.alerts
        self.rules_base = alerts
        self.cond = threading.Condition()
        self.stop_event = threading.Event()
        self.stop_reason = "end"
        events_path = Path(opts.events).expanduser() if opts.events else None
        snapshots = opts.snapshots or (events_path.with_name(f"{events_path.stem}_snapshots") if events_path else None)
        self.sink = EventSink(events_path, opts.webhook)
        self.states: list[SourceState] = []
        try:
            for i, src in enumerate(sources):
                source = StreamSource(src, realtime=opts.realtime, backoff=opts.backoff, give_up_s=opts.give_up_s,
                                      timeout_s=opts.timeout_s, fps=opts.fps)
                thr, how = threshold_for(scorer.run, alerts.alarm_rate, alerts.threshold, fps=source.fps)
                rules = EventRules(thr, alerts.min_duration, alerts.cool_down)
                tag = f"s{i}" if len(sources) > 1 else None
                tracker = EventTracker(rules, source.fps, source.name, snapshots, emit=self.sink, tag=tag)
                state = SourceState(source.name, source, scorer.new_stream(), tracker, thr,
                                    blocking=not source.realtime)
                state.capacity = max(2, int(round(opts.max_lag_s * source.fps)) + 1)
                self.states.append(state)
                log.info("%s: %s, %dx%d at %g fps; %s; %s", source.name, source.kind, source.width, source.height,
                         source.fps, how, self.describe_smoothing(source.fps))
        except BaseException:
            for st in self.states:
                st.source.close()
            self.sink.close()
            raise
        self.score_file = Path(opts.scores).expanduser() if opts.scores else None
        self._csv = None
        self._server: ThreadingHTTPServer | None = None
        self.started = time.time()

    def describe_smoothing(self, fps: float) -> str:
        from mulde.pipeline.online import CausalSmoother

        return CausalSmoother(self.scorer.sigma, self.scorer.smoothing).describe(fps)

    # ------------------------------------------------------------------ capture threads
    def _capture(self, st: SourceState) -> None:
        limit = self.opts.max_frames
        try:
            while not self.stop_event.is_set():
                if limit is not None and st.received >= limit:
                    break
                frame = st.source.read()
                if frame is None:
                    break
                with self.cond:
                    if frame.gap_s > 0 and st.source.gaps:
                        st.pending_gaps.append(st.source.gaps[-1].to_dict())
                        st.reconnects += 1
                    while st.blocking and len(st.queue) >= 4 and not self.stop_event.is_set():
                        self.cond.wait(0.1)
                    if not st.blocking and len(st.queue) >= st.capacity:
                        st.evicted = st.queue.popleft()  # scoring is behind: the oldest is skipped
                    st.queue.append(frame)
                    st.received += 1
                    self.cond.notify_all()
            if st.source.gave_up and st.source.gaps:
                with self.cond:
                    st.pending_gaps.append({**st.source.gaps[-1].to_dict(), "gave_up": True})
        except BaseException as exc:  # reported by the main loop
            st.error = exc
        finally:
            st.source.close()
            with self.cond:
                st.done = True
                self.cond.notify_all()

    def _take(self, st: SourceState) -> tuple[Frame, np.ndarray | None] | None:
        """The frame to score next from a source, and the frame before it when some were skipped.

        Frames are scored in order while the oldest waiting one is at most ``max_lag_s`` old;
        beyond that the loop jumps to the newest frame (the ones in between are dropped) and
        hands the frame just before it to the stepper as the flow reference.
        """
        if not st.queue:
            return None
        if st.blocking:
            frame = st.queue.popleft()
            self.cond.notify_all()
            return frame, None
        prev = None
        if time.time() - st.queue[0].capture_time > self.opts.max_lag_s and len(st.queue) > 1:
            frame = st.queue[-1]
            if st.queue[-2].index == frame.index - 1 and frame.gap_s == 0:
                prev = st.queue[-2].image
            st.queue.clear()
        else:
            frame = st.queue.popleft()
        if st.last_index >= 0 and frame.index - st.last_index > 1:
            st.dropped += frame.index - st.last_index - 1
            evicted = st.evicted
            if prev is None and evicted is not None and evicted.index == frame.index - 1 and frame.gap_s == 0:
                prev = evicted.image
        return frame, prev

    # ------------------------------------------------------------------ main loop
    def run(self) -> dict[str, Any]:
        """Score until every source ends or a signal arrives; returns the summary."""
        handlers = self._install_signals()
        if self.opts.metrics_port is not None:
            self._start_metrics(self.opts.metrics_port)
        if self.score_file is not None:
            self._open_csv()
        for size in dict.fromkeys((st.source.height, st.source.width) for st in self.states):
            if min(size) > 0:
                self.scorer.warm_up(*size)
        self.started = time.time()
        for st in self.states:
            st.started = self.started
            st.thread = threading.Thread(target=self._capture, args=(st,), name=f"mulde-capture-{st.name}",
                                         daemon=True)
            st.thread.start()
        last_status = time.time()
        try:
            while True:
                with self.cond:
                    while (not self.stop_event.is_set() and not any(st.queue or st.pending_gaps for st in self.states)
                           and not all(st.done for st in self.states)):
                        self.cond.wait(0.2)
                    if self.stop_event.is_set():
                        break
                    batch, gaps = [], []
                    for st in self.states:
                        if st.pending_gaps:
                            gaps.append((st, list(st.pending_gaps)))
                            st.pending_gaps.clear()
                        taken = self._take(st)
                        if taken is not None:
                            batch.append((st, *taken))
                    finished = not batch and all(st.done and not st.queue for st in self.states)
                for st, items in gaps:
                    for gap in items:
                        st.tracker.note_gap(gap)
                if batch:
                    self._score(batch)
                for st in self.states:
                    if st.error is not None:
                        raise st.error
                if self.opts.status_every and time.time() - last_status >= self.opts.status_every:
                    last_status = time.time()
                    for line in self.status_lines():
                        log.info("%s", line)
                if finished:
                    break
        finally:
            self._shutdown(handlers)
        return self.summary()

    def _score(self, batch: list[tuple[SourceState, Frame, np.ndarray | None]]) -> None:
        items = []
        for st, frame, prev in batch:
            if frame.gap_s > 0:
                st.stream.reset()
            items.append((st.stream, frame.index, frame.image, prev, frame.capture_time, frame.stream_time))
        results = self.scorer.step_many(items)
        for (st, frame, _prev), r in zip(batch, results):
            st.tracker.update(r, frame.image)
            latency = time.time() - frame.capture_time
            st.latencies.append(latency)
            st.latency_sum += latency
            st.scored += 1
            st.last_index = frame.index
            st.last_score = r.score
            if self._csv is not None:
                self._write_row(st, r, latency)

    # ------------------------------------------------------------------ outputs
    def _open_csv(self) -> None:
        self.score_file.parent.mkdir(parents=True, exist_ok=True)
        self._csv_tmp = temp_path_for(self.score_file)
        self._csv = open(self._csv_tmp, "w", encoding="utf-8")  # noqa: SIM115 - closed in _shutdown
        cols = ["frame", "time_s", "score", *[f"score_{t}" for t in self.scorer.types], "raw", "driver",
                "latency_ms", "wall_time", "source"]
        self._csv.write(",".join(cols) + "\n")

    def _write_row(self, st: SourceState, r: FrameResult, latency: float) -> None:
        vals = [str(r.index), repr(float(r.stream_time)), repr(float(r.score)),
                *[repr(float(r.per_type[t])) for t in self.scorer.types], repr(float(r.raw)), r.driver or "",
                f"{1000 * latency:.2f}", f"{r.capture_time:.3f}", '"' + st.name.replace('"', "'") + '"']
        self._csv.write(",".join(vals) + "\n")

    def _finish_csv(self) -> None:
        if self._csv is None:
            return
        self._csv.close()
        commit(self._csv_tmp, self.score_file)
        self._csv = None

    # ------------------------------------------------------------------ status and metrics
    def stats(self, st: SourceState) -> dict[str, Any]:
        lat = np.asarray(st.latencies, np.float64)
        elapsed = max(time.time() - st.started, 1e-9)
        seen = st.scored + st.dropped
        return {"source": st.name, "frames": st.scored, "received": st.received, "dropped": st.dropped,
                "drop_rate": st.dropped / seen if seen else 0.0, "fps": st.scored / elapsed,
                "latency_p50_ms": float(np.percentile(lat, 50) * 1000) if len(lat) else None,
                "latency_p95_ms": float(np.percentile(lat, 95) * 1000) if len(lat) else None,
                "events": st.tracker.n_events, "event_open": st.tracker.is_open, "reconnects": st.reconnects,
                "threshold": st.threshold}

    def status_lines(self) -> list[str]:
        out = []
        for st in self.states:
            s = self.stats(st)
            lat = (f"latency p50 {s['latency_p50_ms']:.0f} ms p95 {s['latency_p95_ms']:.0f} ms"
                   if s["latency_p50_ms"] is not None else "latency -")
            out.append(f"[watch] {st.name}: {s['fps']:.1f} fps, {lat}, dropped {100 * s['drop_rate']:.1f}%, "
                       f"events {s['events']}{' (one open)' if s['event_open'] else ''}, "
                       f"reconnects {s['reconnects']}")
        return out

    def metrics_text(self) -> str:
        lines = []

        def metric(name: str, kind: str, doc: str, rows: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {doc}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(f"{name}{labels} {value:.6g}" for labels, value in rows)

        sts = [(st, self.stats(st), f'{{source="{_label(st.name)}"}}') for st in self.states]
        metric("mulde_frames_total", "counter", "Frames scored.", [(lb, s["frames"]) for _, s, lb in sts])
        metric("mulde_frames_received_total", "counter", "Frames read from the source.",
               [(lb, s["received"]) for _, s, lb in sts])
        metric("mulde_frames_dropped_total", "counter", "Frames skipped because scoring fell behind.",
               [(lb, s["dropped"]) for _, s, lb in sts])
        lines += ["# HELP mulde_latency_seconds Capture to event decision over recent frames.",
                  "# TYPE mulde_latency_seconds summary"]
        for st, _s, lb in sts:
            lat = np.asarray(st.latencies, np.float64)
            for q in (0.5, 0.95, 0.99):
                value = float(np.quantile(lat, q)) if len(lat) else float("nan")
                lines.append(f'mulde_latency_seconds{{source="{_label(st.name)}",quantile="{q}"}} {value:.6g}')
            lines.append(f"mulde_latency_seconds_sum{lb} {st.latency_sum:.6g}")
            lines.append(f"mulde_latency_seconds_count{lb} {st.scored}")
        metric("mulde_events_total", "counter", "Events opened.", [(lb, s["events"]) for _, s, lb in sts])
        metric("mulde_event_open", "gauge", "1 while an event is open.", [(lb, float(s["event_open"])) for _, s, lb in sts])
        metric("mulde_reconnects_total", "counter", "Times the source was reopened.",
               [(lb, s["reconnects"]) for _, s, lb in sts])
        metric("mulde_score", "gauge", "Latest smoothed score.", [(lb, st.last_score) for st, _, lb in sts])
        metric("mulde_threshold", "gauge", "Event threshold.", [(lb, s["threshold"]) for _, s, lb in sts])
        metric("mulde_fps", "gauge", "Frames scored per second since the start.", [(lb, s["fps"]) for _, s, lb in sts])
        return "\n".join(lines) + "\n"

    def _start_metrics(self, port: int) -> None:
        handler = type("MetricsHandler", (_Metrics,), {"watcher": self})
        try:
            self._server = ThreadingHTTPServer(("127.0.0.1", int(port)), handler)
        except OSError as exc:
            raise InputError(f"--metrics-port {port}: cannot listen on 127.0.0.1:{port} ({exc.strerror or exc}); "
                             "choose a free port") from None
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="mulde-metrics", daemon=True).start()
        log.info("metrics on http://127.0.0.1:%d/metrics", self._server.server_address[1])

    # ------------------------------------------------------------------ stopping
    def stop(self, reason: str = "signal") -> None:
        """Ask the loop to end (safe from a signal handler or another thread)."""
        self.stop_reason = reason
        self.stop_event.set()
        for st in self.states:
            st.source.stop()
        with self.cond:
            self.cond.notify_all()

    def _install_signals(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        old = {}

        def handler(signum, _frame):
            log.warning("%s: closing open events and flushing outputs", signal.Signals(signum).name)
            self.stop("signal")

        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, handler)
        return old

    def _shutdown(self, handlers: dict) -> None:
        self.stop_event.set()
        for st in self.states:
            st.source.stop()
        with self.cond:
            self.cond.notify_all()
        for st in self.states:
            if st.thread is not None:
                st.thread.join(timeout=self.opts.timeout_s + 2)
        for st in self.states:
            st.tracker.close(self.stop_reason if self.stop_reason == "signal" else "end")
        self._finish_csv()
        self.sink.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for sig, old in handlers.items():
            signal.signal(sig, old)
        for line in self.status_lines():
            log.info("%s", line)

    def summary(self) -> dict[str, Any]:
        return {"sources": [self.stats(st) for st in self.states], "stopped_by": self.stop_reason,
                "seconds": time.time() - self.started}


def watch(sources: list[str], run_dir: str | Path | None = None, overrides: dict[str, Any] | None = None,
          options: WatchOptions | None = None, scorer: OnlineScorer | None = None) -> dict[str, Any]:
    """Score ``sources`` live with the run in ``run_dir`` (or a ready ``scorer``); see the module doc."""
    if scorer is None:
        from mulde.pipeline.run import load_run, requested_device

        run = load_run(run_dir, device=requested_device(overrides))
        scorer = OnlineScorer(run, overrides)
    return Watcher(list(sources), scorer, options).run()
