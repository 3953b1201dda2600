"""One reader interface for video files, frame folders and in-memory arrays.

Every reader returns RGB uint8 frames, knows its real decodable frame count, and offers random
access (``get``, ``reader[i]``) and streaming (``iter_chunks``) that never holds the whole video.

Backends, chosen per file by :func:`open_video`:

* ``decord`` with random access, when decord opens the file and its frame timestamps are valid
  (MP4/MKV, OpenCV-written MJPG AVI). The header count is verified by decoding the last frame.
  Every read ends by stopping decord's read-ahead thread, which would otherwise hold decoded
  frames while the caller works (see :meth:`DecordVideo._stop_read_ahead`).
* ``opencv`` sequential cursor, when decord is missing, fails, or reports no usable timestamps
  (many H.264 AVIs). Seeking in such files is not frame accurate in either library (measured on
  the project's sample videos), so this backend only decodes forward: random access backwards
  reopens the file. Its frame count comes from one decode pass, cached on disk
  (``$MULDE_CACHE/video_frame_counts.json``) keyed by path, size and modification time.

When the container header claims more frames than decode (a truncated file) the reader reports
the decodable count and logs one warning.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2  # before decord: decord loaded first breaks OpenCV's PNG decoding (zlib clash)
import numpy as np

from mulde.atomic import atomic_write
from mulde.errors import InputError, VideoError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".webm", ".wmv")
DEFAULT_FPS = 25.0


class FrameIndexError(InputError, IndexError):
    """A frame index outside ``[-n_frames, n_frames)``."""


def natural_key(name: str) -> list:
    """Sort key that orders ``2.jpg`` before ``10.jpg``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


class VideoReader:
    """Common interface; subclasses implement :meth:`_read` for sorted unique indices."""

    path: str
    n_frames: int
    fps: float
    width: int
    height: int

    def __len__(self) -> int:
        return self.n_frames

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.path!r}, n_frames={self.n_frames}, "
                f"fps={self.fps:g}, size={self.width}x{self.height})")

    def _index(self, i: int) -> int:
        try:
            j = int(i)
        except (TypeError, ValueError):
            raise FrameIndexError(f"{self.path}: frame index {i!r} is not an integer") from None
        if j < -self.n_frames or j >= self.n_frames:
            raise FrameIndexError(
                f"{self.path}: frame index {j} out of range; the video has {self.n_frames} frames "
                f"(valid 0..{self.n_frames - 1})")
        return j % self.n_frames

    def get(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at ``indices`` (any order, repeats allowed) as (k, H, W, 3) uint8 RGB."""
        idx = [self._index(i) for i in indices]
        if not idx:
            return np.zeros((0, self.height, self.width, 3), np.uint8)
        uniq = sorted(set(idx))
        frames = self._read(uniq)
        pos = {f: k for k, f in enumerate(uniq)}
        if len(uniq) == len(idx) and uniq == idx:
            return frames
        return frames[[pos[i] for i in idx]]

    def __getitem__(self, i: int) -> np.ndarray:
        return self.get([i])[0]

    def iter_chunks(self, chunk_size: int = 64, start: int = 0,
                    stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first_index, frames)`` for consecutive chunks of ``[start, stop)``."""
        if chunk_size < 1:
            raise InputError(f"chunk_size must be >= 1, got {chunk_size}")
        stop = self.n_frames if stop is None else min(int(stop), self.n_frames)
        if start < 0 or start > self.n_frames:
            raise FrameIndexError(
                f"{self.path}: start {start} out of range for {self.n_frames} frames")
        for s in range(int(start), stop, chunk_size):
            e = min(s + chunk_size, stop)
            yield s, self._read(list(range(s, e)))

    def _read(self, indices: list[int]) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """Release the decoder (the reader is unusable afterwards)."""

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ArrayVideo(VideoReader):
    """An in-memory video (tests, synthetic data): frames (T, H, W, 3) or (T, H, W) uint8."""

    def __init__(self, frames: np.ndarray, fps: float = DEFAULT_FPS, path: str = "<array>") -> None:
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = np.repeat(frames[..., None], 3, axis=-1)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise InputError(f"{path}: frames must have shape (T, H, W, 3), got {frames.shape}")
        if frames.dtype != np.uint8:
            raise InputError(f"{path}: frames must be uint8 RGB, got dtype {frames.dtype}")
        if len(frames) == 0:
            raise VideoError(f"{path}: video has no frames")
        self.frames = frames
        self.path = str(path)
        self.n_frames, self.height, self.width = frames.shape[:3]
        self.fps = float(fps)

    def _read(self, indices: list[int]) -> np.ndarray:
        return self.frames[indices]


def list_frame_files(folder: str | Path) -> list[Path]:
    """Image files of a frame folder in natural order (``2.jpg`` < ``10.jpg``)."""
    folder = Path(folder)
    files = [p for p in folder.iterdir()
             if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")]
    return sorted(files, key=lambda p: natural_key(p.name))


class FrameFolderVideo(VideoReader):
    """A folder of image files, one frame each; all frames must have the same size."""

    def __init__(self, folder: str | Path, fps: float | None = None) -> None:
        folder = Path(folder)
        self.path = str(folder)
        self.files = list_frame_files(folder)
        if not self.files:
            raise VideoError(
                f"{folder}: frame folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        self.n_frames = len(self.files)
        self.fps = float(fps) if fps else DEFAULT_FPS
        first = self._load(self.files[0])
        self.height, self.width = first.shape[:2]

    @staticmethod
    def _load(path: Path) -> np.ndarray:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is not None:
            return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        try:  # Pillow as a second decoder (see the note at ``import cv2``)
            from PIL import Image

            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"), dtype=np.uint8)
        except Exception:  # noqa: BLE001 - any failure means the file is unreadable
            raise VideoError(f"{path}: cannot read image (missing or corrupt); replace or delete "
                             "it") from None

    def _read(self, indices: list[int]) -> np.ndarray:
        out = np.empty((len(indices), self.height, self.width, 3), np.uint8)
        for k, i in enumerate(indices):
            img = self._load(self.files[i])
            if img.shape[:2] != (self.height, self.width):
                raise VideoError(
                    f"{self.files[i]}: frame size {img.shape[1]}x{img.shape[0]} differs from the "
                    f"folder's first frame {self.width}x{self.height}; all frames must match")
            out[k] = img
        return out


# ---------------------------------------------------------------- frame-count cache (on disk)

def _count_cache_file() -> Path:
    env = os.environ.get("MULDE_CACHE")
    base = Path(env).expanduser() if env else Path("~/.cache/mulde").expanduser()
    return base / "video_frame_counts.json"


def _file_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def _cached_count(path: Path) -> int | None:
    try:
        data = json.loads(_count_cache_file().read_text())
        value = data.get(_file_key(path))
        return int(value) if value is not None else None
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def _store_count(path: Path, n: int) -> None:
    cache = _count_cache_file()
    try:
        try:
            data = json.loads(cache.read_text())
            if not isinstance(data, dict):
                data = {}
        except (OSError, ValueError):
            data = {}
        data[_file_key(path)] = int(n)
        atomic_write(cache, json.dumps(data))
    except OSError as exc:  # the cache is an optimisation only
        log.debug("could not write frame-count cache %s: %s", cache, exc)


def _warn_truncated(path: Path, claimed: int, real: int) -> None:
    log.warning("%s: header claims %d frames but only %d decode; using %d", path, claimed, real,
                real)


# ---------------------------------------------------------------- file backends

class OpenCVVideo(VideoReader):
    """Forward-only OpenCV cursor: frame accurate on files whose seeking is not."""

    backend = "opencv"

    def __init__(self, path: Path, header_count: int | None = None, use_cache: bool = True) -> None:
        self._cv2 = cv2
        self.path = str(path)
        self._file = path
        self._cap = None
        self._pos = 0
        cap = self._open()
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) or DEFAULT_FPS
        claimed = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if header_count:
            claimed = max(claimed, int(header_count))
        ok, frame = cap.read()
        if not ok or frame is None:
            self.close()
            raise VideoError(f"{path}: no decodable frames (empty or corrupt video file)")
        self.height, self.width = frame.shape[:2]
        self._pos = 1
        n = _cached_count(path) if use_cache else None
        if n is None:
            n = self._count_frames()
            if use_cache:
                _store_count(path, n)
            if claimed and claimed != n:
                _warn_truncated(path, claimed, n)
        self.n_frames = n

    def _open(self):
        if self._cap is not None:
            self._cap.release()
        with quiet_native_stderr():
            cap = self._cv2.VideoCapture(str(self._file))
        if not cap.isOpened():
            raise VideoError(f"{self._file}: cannot open video file (unsupported or corrupt)")
        self._cap, self._pos = cap, 0
        return cap

    def _count_frames(self) -> int:
        self._open()
        n = 0
        while self._cap.grab():
            n += 1
        self._open()
        return n

    def _read(self, indices: list[int]) -> np.ndarray:
        cv2 = self._cv2
        if self._cap is None:
            raise VideoError(f"{self.path}: reader is closed")
        if indices[0] < self._pos:
            self._open()
        out = np.empty((len(indices), self.height, self.width, 3), np.uint8)
        for k, i in enumerate(indices):
            while self._pos < i:
                if not self._cap.grab():
                    raise VideoError(f"{self.path}: decoding stopped at frame {self._pos}")
                self._pos += 1
            ok, frame = self._cap.read()
            if not ok or frame is None:
                raise VideoError(f"{self.path}: cannot decode frame {i}")
            self._pos += 1
            if frame.shape[:2] != (self.height, self.width):
                raise VideoError(f"{self.path}: frame {i} changes size to "
                                 f"{frame.shape[1]}x{frame.shape[0]}")
            out[k] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        return out

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class _DecordUnreliable(Exception):
    """decord could not decode the frames its index promises; use the OpenCV backend."""


class DecordVideo(VideoReader):
    """decord random access for files with valid per-frame timestamps.

    The header count is verified by decoding the first and the last frame; when that fails the
    constructor raises ``_DecordUnreliable`` and :func:`open_video` falls back to OpenCV, which
    counts the decodable frames (decord's decoder does not recover from such an error).
    """

    backend = "decord"

    def __init__(self, path: Path, vr) -> None:
        self.path = str(path)
        self._vr = vr
        self.fps = float(vr.get_avg_fps() or 0.0) or DEFAULT_FPS
        self.n_frames = len(vr)
        try:
            first = vr.get_batch([0]).asnumpy()
            last = vr.get_batch([self.n_frames - 1]).asnumpy()
        except Exception:  # noqa: BLE001 - decord raises its own error types
            raise _DecordUnreliable from None
        if first.size == 0 or last.size == 0:
            raise _DecordUnreliable
        self.height, self.width = (int(v) for v in first.shape[1:3])
        self._stop_read_ahead()

    def _read(self, indices: list[int]) -> np.ndarray:
        if self._vr is None:
            raise VideoError(f"{self.path}: reader is closed")
        try:
            frames = self._vr.get_batch(indices).asnumpy()
        except Exception as exc:  # noqa: BLE001
            raise VideoError(f"{self.path}: cannot decode frames {indices[0]}..{indices[-1]} "
                             f"({type(exc).__name__})") from None
        self._stop_read_ahead()
        return frames

    def _stop_read_ahead(self) -> None:
        """Stop decord's decoding thread, which otherwise goes on decoding frames past the last
        one asked for and keeps them until the next read (dmlc/decord#157, #208). While the
        caller works on a chunk (an extractor, the overlay writer) that held memory growing with
        the video's length (measured at 480x360: about 0.4 GB, the whole video, at 795 frames;
        0.8-1.6 GB at 7,950). A seek to frame 0 stops the thread and clears its queue; the next
        read seeks to its first frame from the nearest keyframe, which costs decoding up to one
        keyframe interval (without colour conversion) per read: about 2 ms/frame at 480x360 with
        64-frame chunks and x264's 250-frame interval."""
        try:
            self._vr.seek(0)
        except Exception as exc:  # noqa: BLE001 - the frames are read; only the memory bound is lost
            log.debug("%s: decord cannot seek to frame 0 (%s); its read-ahead goes on", self.path, exc)

    def close(self) -> None:
        self._vr = None


def _timestamps_usable(vr) -> bool:
    """True when decord's per-frame start times are finite, non-negative and increasing."""
    n = len(vr)
    if n == 0:
        return False
    try:
        ts = np.asarray(vr.get_frame_timestamp(list(range(n))), dtype=np.float64)
    except Exception:  # noqa: BLE001
        return False
    start = ts.reshape(n, -1)[:, 0]
    return bool(np.all(np.isfinite(start)) and start.min() >= -1e-6
                and (n == 1 or np.all(np.diff(start) > 0)))


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence native writes to file descriptor 2 (FFmpeg's and decord's own log lines) for a moment.

    A failed open is then reported by mulde in one line, not by three libraries in several.
    OPENCV_FFMPEG_LOGLEVEL only counts when set before OpenCV first uses FFmpeg, and decord has
    no switch at all; Python's own stderr is flushed first.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _open_decord(path: Path):
    try:
        import decord
    except ImportError:
        return None
    try:
        with quiet_native_stderr():
            return decord.VideoReader(str(path), ctx=decord.cpu(0))
    except Exception as exc:  # noqa: BLE001
        log.debug("decord cannot open %s (%s); using OpenCV", path, exc)
        return None


def open_video(source: str | Path, fps: float | None = None, backend: str = "auto",
               use_cache: bool = True) -> VideoReader:
    """Open a video file or a folder of frames.

    fps:       frame rate for frame folders (the dataset's default), else 25; files use their own.
    backend:   ``auto`` (decord when it is frame accurate, else OpenCV), ``decord`` or ``opencv``.
    use_cache: reuse/store verified frame counts of files that need a counting pass.
    """
    if isinstance(source, VideoReader):
        return source
    path = Path(source).expanduser()
    if not path.exists():
        raise VideoError(f"{path}: video file or frame folder not found")
    if path.is_dir():
        return FrameFolderVideo(path, fps=fps)
    if backend not in ("auto", "decord", "opencv"):
        raise InputError(f"unknown video backend {backend!r}; choose auto, decord or opencv")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
    vr = None if backend == "opencv" else _open_decord(path)
    if vr is not None and len(vr) == 0:
        raise VideoError(f"{path}: video has no frames")
    if vr is not None and (backend == "decord" or _timestamps_usable(vr)):
        try:
            return DecordVideo(path, vr)
        except _DecordUnreliable:
            log.debug("decord cannot decode all of %s; using OpenCV", path)
    header = len(vr) if vr is not None else None
    del vr
    return OpenCVVideo(path, header_count=header, use_cache=use_cache)


def is_video_source(path: str | Path) -> bool:
    """True for a video file (by extension) or a folder holding image frames."""
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() in VIDEO_EXTENSIONS
    if path.is_dir():
        return any(p.suffix.lower() in IMAGE_EXTENSIONS for p in path.iterdir())
    return False
