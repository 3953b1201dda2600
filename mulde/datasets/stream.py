"""Live frame sources for ``vad watch``: stream URLs, webcams, video files and standard input.

Decoding uses OpenCV's FFmpeg backend (``cv2.VideoCapture(..., cv2.CAP_FFMPEG)``). OpenCV is
already a dependency of mulde (the file reader in :mod:`mulde.datasets.video` falls back to it),
its wheels bundle FFmpeg with the network protocols (RTSP, HTTP(S), TCP, UDP, RTMP, SRT) and
``pipe:0`` for standard input, and it takes open/read time-outs as capture properties, which is
what reconnecting needs. PyAV would add a second copy of FFmpeg for the same job.

A source yields :class:`Frame` objects (RGB uint8 plus the source's frame counter, the wall-clock
time it was captured and the stream's own timestamp). Errors on the first open are one
:class:`~mulde.errors.VideoError` line each (unreachable URL, no such webcam, not a video). A live
stream that drops later is reopened with exponential back-off; the gap is logged, counted in
:attr:`StreamSource.gaps` and carried by the first frame after it (``Frame.gap_s``).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np

from mulde.datasets.video import DEFAULT_FPS, quiet_native_stderr
from mulde.errors import InputError, VideoError

log = logging.getLogger(__name__)

# FFmpeg and OpenCV print their own warnings for every failed open; mulde reports one line itself.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
try:
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
except AttributeError:  # very old OpenCV without the logging module
    pass

URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "tcp", "udp", "srt", "rtp")
DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "rtmp": 1935, "rtmps": 443, "http": 80, "https": 443}


@dataclass
class Frame:
    """One decoded frame of a source.

    index: frames received from the source so far (0-based, continues across reconnects);
    image: (H, W, 3) uint8 RGB; capture_time: wall clock (``time.time()``) when it was read;
    stream_time: the stream's own timestamp in seconds (container time for files and
    streams that carry one, else index / fps); gap_s: seconds of disconnection just before
    this frame (0 unless the source was reopened).
    """

    index: int
    image: np.ndarray
    capture_time: float
    stream_time: float
    gap_s: float = 0.0


@dataclass
class Gap:
    """A period in which a live source delivered nothing (from drop to the next frame)."""

    start: float
    end: float
    attempts: int
    after_frame: int

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def to_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "seconds": round(self.seconds, 3),
                "attempts": self.attempts, "after_frame": self.after_frame}


def source_kind(source: str | int) -> str:
    """``stdin`` for ``-``, ``webcam`` for an integer index, ``url`` for scheme://..., else ``file``."""
    text = str(source).strip()
    if text == "-":
        return "stdin"
    if text.isdigit():
        return "webcam"
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme:
        if scheme not in URL_SCHEMES:
            raise InputError(f"{text}: unsupported stream scheme {scheme!r}; use one of "
                             f"{', '.join(URL_SCHEMES)}, a webcam index, a video file or - for stdin")
        return "url"
    return "file"


def _reachable(url: str, timeout: float) -> str | None:
    """None when a TCP connection to the URL's host opens, else the reason it does not."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("udp", "rtp", "srt") or not parts.hostname:
        return None  # connectionless: nothing to probe
    try:
        port = parts.port or DEFAULT_PORTS.get(scheme)
    except ValueError:
        return f"bad port in {url}"
    if port is None:
        return f"no port in {url}"
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return None
    except socket.gaierror:
        return f"unknown host {parts.hostname!r}"
    except TimeoutError:
        return f"no answer from {parts.hostname}:{port} within {timeout:g} s"
    except OSError as exc:
        return f"{parts.hostname}:{port}: {exc.strerror or exc}"


class StreamSource:
    """Frames from one source, read in order; see the module doc.

    realtime:   play a video file at its own frame rate (sleeping between frames) like a camera;
                False reads it as fast as the consumer asks. Live sources are always real time.
    reconnect:  reopen a live source (URL, webcam) that stops delivering frames.
    backoff:    (first, maximum) wait between reopen attempts in seconds, doubled each time.
    give_up_s:  stop reconnecting after this many seconds without a frame (None: never).
    timeout_s:  open and read time-out of network streams.
    fps:        frame rate to assume when the source reports none (default 25).
    """

    def __init__(self, source: str | int, realtime: bool = True, reconnect: bool = True,
                 backoff: tuple[float, float] = (0.5, 30.0), give_up_s: float | None = None,
                 timeout_s: float = 5.0, fps: float | None = None) -> None:
        self.source = str(source).strip()
        self.kind = source_kind(self.source)
        self.live = self.kind in ("url", "webcam")
        self.realtime = bool(realtime) or self.live
        self.reconnect = bool(reconnect) and self.live
        first, maximum = (float(b) for b in backoff)
        if first <= 0 or maximum < first:
            raise InputError(f"reconnect back-off must be 0 < first <= max seconds, got {backoff}")
        self.backoff = (first, maximum)
        self.give_up_s = give_up_s
        self.timeout_s = float(timeout_s)
        self._fps_hint = fps
        self.fps = float(fps or DEFAULT_FPS)
        self.width = self.height = 0
        self.gaps: list[Gap] = []
        self.n_frames = 0
        self._cap: cv2.VideoCapture | None = None
        self._pending: np.ndarray | None = None  # first frame, read while opening
        self._t0: float | None = None  # wall clock of frame 0 (real-time file playback)
        self._closed = False
        self.gave_up = False
        self._open_first()

    # ------------------------------------------------------------------ opening
    @property
    def name(self) -> str:
        return "stdin" if self.kind == "stdin" else (f"webcam {self.source}" if self.kind == "webcam"
                                                     else self.source)

    def _capture(self) -> cv2.VideoCapture:
        ms = int(self.timeout_s * 1000)
        if self.kind == "webcam":
            api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
            return cv2.VideoCapture(int(self.source), api)
        target = "pipe:0" if self.kind == "stdin" else self.source
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        return cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)

    def _try_open(self) -> bool:
        """Open the capture and read its first frame; True on success."""
        self._release()
        cap = self._capture()
        if not cap.isOpened():
            cap.release()
            return False
        ok, frame = cap.read()
        if not ok or frame is None or frame.ndim != 3:
            cap.release()
            return False
        self._cap, self._pending = cap, frame
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if self._fps_hint:
            self.fps = float(self._fps_hint)
        elif 0.5 < fps < 1000:  # some streams report 90000 (the time base) or 0
            self.fps = fps
        self.height, self.width = frame.shape[:2]
        return True

    def _open_first(self) -> None:
        if self.kind == "file":
            path = Path(self.source).expanduser()
            if not path.is_file():
                raise VideoError(f"{path}: video file not found")
            if path.stat().st_size == 0:
                raise VideoError(f"{path}: empty file (0 bytes)")
            self.source = str(path)
        with quiet_native_stderr():  # FFmpeg logs every failed open itself; mulde says it in one line
            opened = self._try_open()
        if opened:
            return
        raise VideoError(self._open_error())

    def _open_error(self) -> str:
        if self.kind == "webcam":
            cams = sorted(p.name for p in Path("/dev").glob("video*")) if sys.platform.startswith("linux") else []
            found = f"devices present: {', '.join(cams)}" if cams else "no camera devices found"
            return f"webcam {self.source}: cannot open this camera index ({found}); pass an existing index"
        if self.kind == "url":
            reason = _reachable(self.source, min(self.timeout_s, 5.0))
            if reason is not None:
                return f"{self.source}: stream unreachable ({reason}); check the address and that the server runs"
            return (f"{self.source}: connected but found no decodable video (not a video stream, or an "
                    "unsupported codec); check the URL path and format")
        if self.kind == "stdin":
            return "stdin: no decodable video on standard input; pipe a video stream, e.g. ffmpeg ... -f mpegts -"
        return f"{self.source}: no decodable video frames (unsupported or corrupt file)"

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    # ------------------------------------------------------------------ reading
    def read(self) -> Frame | None:
        """The next frame, or None when the source has ended (file/stdin end, or gave up)."""
        if self._closed:
            return None
        gap_s = 0.0
        bgr = self._next_bgr()
        if bgr is None:
            if not self.reconnect:
                return None
            gap = self._reopen()
            if gap is None:
                return None
            gap_s = gap.seconds
            bgr = self._next_bgr()
            if bgr is None:
                return None
        now = time.time()
        stream_time = self._stream_time()
        if self.kind in ("file", "stdin") and self.realtime:
            if self._t0 is None:
                self._t0 = now - stream_time
            wait = self._t0 + stream_time - now
            if wait > 0:
                time.sleep(wait)
                now = time.time()
        frame = Frame(self.n_frames, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), now, stream_time, gap_s)
        self.n_frames += 1
        return frame

    def _stream_time(self) -> float:
        ms = self._cap.get(cv2.CAP_PROP_POS_MSEC) if self._cap is not None else 0.0
        if self.kind == "webcam" or not np.isfinite(ms) or ms <= 0 and self.n_frames > 0:
            return self.n_frames / self.fps
        return float(ms) / 1000.0

    def _next_bgr(self) -> np.ndarray | None:
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        if self._cap is None:
            return None
        ok, frame = self._cap.read()
        if not ok or frame is None:
            return None
        if frame.shape[:2] != (self.height, self.width):
            log.warning("%s: frame size changed from %dx%d to %dx%d", self.name, self.width, self.height,
                        frame.shape[1], frame.shape[0])
            self.height, self.width = frame.shape[:2]
        return frame

    def _reopen(self) -> Gap | None:
        """Reopen a dropped live source with exponential back-off; the gap, or None on giving up."""
        start = time.time()
        wait, attempts = self.backoff[0], 0
        log.warning("%s: stream dropped after frame %d; reconnecting", self.name, self.n_frames - 1)
        self._release()
        while not self._closed:
            attempts += 1
            if self._try_open():
                gap = Gap(start, time.time(), attempts, self.n_frames - 1)
                self.gaps.append(gap)
                self._t0 = None
                log.warning("%s: reconnected after %.1f s (%d attempts)", self.name, gap.seconds, attempts)
                return gap
            elapsed = time.time() - start
            if self.give_up_s is not None and elapsed >= self.give_up_s:
                log.warning("%s: no frames for %.1f s; giving up (reconnect limit %g s)", self.name,
                            elapsed, self.give_up_s)
                self.gaps.append(Gap(start, time.time(), attempts, self.n_frames - 1))
                self.gave_up = True
                return None
            left = None if self.give_up_s is None else self.give_up_s - elapsed
            self._sleep(wait if left is None else min(wait, max(left, 0.0)))
            wait = min(wait * 2, self.backoff[1])
        return None

    def _sleep(self, seconds: float) -> None:
        end = time.time() + seconds
        while not self._closed and (left := end - time.time()) > 0:
            time.sleep(min(0.1, left))

    def __iter__(self):
        while True:
            frame = self.read()
            if frame is None:
                return
            yield frame

    def stop(self) -> None:
        """Ask a reader in another thread to stop: interrupts a reconnect wait; the next
        :meth:`read` returns None. The decoder is released by :meth:`close` in the reading thread."""
        self._closed = True

    def close(self) -> None:
        """Stop reading and release the decoder (call from the thread that reads)."""
        self._closed = True
        self._release()

    def __enter__(self) -> StreamSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"StreamSource({self.name!r}, kind={self.kind}, fps={self.fps:g}, size={self.width}x{self.height})"


def open_source(source: str | int, **options) -> StreamSource:
    """Open a stream, webcam, video file or ``-`` (stdin); see :class:`StreamSource`."""
    return StreamSource(source, **options)


__all__ = ["Frame", "Gap", "StreamSource", "open_source", "source_kind", "URL_SCHEMES"]
