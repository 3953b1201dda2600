"""What a dataset reader returns: a list of videos per split, with labels for the test split."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class VideoItem:
    """One video of a dataset.

    video_id: unique within the dataset and safe as a file name (e.g. ``01``, ``Test001``,
              ``01_0014``); it names the cache files.
    split:    ``train`` or ``test``.
    source:   a video file or a folder of frames; open it with ``mulde.datasets.video.open_video``.
    labels:   (n_frames,) uint8, 1 = anomalous, for labelled test videos; None otherwise.
    scene:    scene id for multi-scene datasets (ShanghaiTech, UBnormal), else None.
    """

    video_id: str
    split: str
    source: Path
    labels: np.ndarray | None = None
    scene: str | None = None


class Dataset:
    """Base class of the dataset readers (see ``mulde.datasets.registry``).

    Subclasses set ``name`` and implement :meth:`videos`. The constructor checks that
    ``root`` exists; readers raise :class:`mulde.errors.DatasetError` with the path and the
    expected layout when it does not match.
    """

    name: str = ""
    default_fps: float | None = None

    def __init__(self, root: str | Path) -> None:
        from mulde.errors import DatasetError

        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DatasetError(
                f"{self.root}: dataset root not found; pass --root DIR pointing at the {self.name + ' dataset' if self.name else 'dataset'} (an absolute path, or relative to the current folder)"
            )
        self._videos: dict[str, list[VideoItem]] = {}

    def videos(self, split: str) -> list[VideoItem]:
        """The sorted videos of a split, read from disk once and then remembered."""
        check_split(split, self.splits())
        if split not in self._videos:
            self._videos[split] = self._list_videos(split)
        return list(self._videos[split])

    def _list_videos(self, split: str) -> list[VideoItem]:
        raise NotImplementedError

    def splits(self) -> tuple[str, ...]:
        return ("train", "test")

    def fingerprint(self) -> str:
        """Hex digest naming this dataset's content, not where it is mounted (see
        :func:`fingerprint_tree`); computed once per instance."""
        if getattr(self, "_fingerprint", None) is None:
            self._fingerprint = fingerprint_tree(self.root, self.name)
        return self._fingerprint


SPLITS = ("train", "test")


def fingerprint_tree(root: str | Path, name: str = "") -> str:
    """Cheap content fingerprint of the videos under ``root`` (SHA-1 hex, no file is read).

    It covers ``name``, the relative path and size of every video file, and for every folder
    holding images its relative path, number of images and their total bytes. Hidden entries
    are skipped. The same data mounted under two roots gives the same digest, so nodes share
    cached features; adding, removing, renaming or resizing a video or frame changes it.
    """
    from mulde.datasets.video import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

    root = Path(root).expanduser()
    entries: list[tuple[str, str, int, int]] = []
    seen: set[str] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a symlink loop or a folder linked twice
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = Path(folder).relative_to(root).as_posix()
        n_images = image_bytes = 0
        for f in sorted(files):
            if f.startswith("."):
                continue
            suffix = os.path.splitext(f)[1].lower()
            if suffix not in VIDEO_EXTENSIONS and suffix not in IMAGE_EXTENSIONS:
                continue
            try:
                size = os.stat(os.path.join(folder, f)).st_size
            except OSError:  # a dangling link is not part of the data
                continue
            if suffix in VIDEO_EXTENSIONS:
                entries.append(("video", f"{rel}/{f}", size, 1))
            else:
                n_images += 1
                image_bytes += size
        if n_images:
            entries.append(("frames", rel, image_bytes, n_images))
    payload = json.dumps({"name": name, "entries": sorted(entries)}, separators=(",", ":"))
    return hashlib.sha1(payload.encode()).hexdigest()


def check_split(split: str, allowed: tuple[str, ...] = SPLITS) -> str:
    """Return ``split`` or raise InputError listing the allowed names."""
    from mulde.errors import InputError

    if split not in allowed:
        raise InputError(f"unknown split {split!r}; choose one of: {', '.join(allowed)}")
    return split


def ranges_to_labels(n_frames: int, ranges, one_based: bool, video_id: str,
                     where: str = "annotation") -> np.ndarray:
    """Per-frame 0/1 labels from inclusive ``(start, end)`` ranges (converted to 0-based here)."""
    from mulde.errors import DatasetError

    labels = np.zeros(int(n_frames), np.uint8)
    shift = 1 if one_based else 0
    for start, end in ranges:
        s, e = int(start) - shift, int(end) - shift
        if s < 0 or e < s or e >= n_frames:
            base = "1-based" if one_based else "0-based"
            raise DatasetError(
                f"{video_id}: anomaly range {start}..{end} ({base}, inclusive) from {where} lies "
                f"outside the video's {n_frames} frames; check that the annotation belongs to "
                "this video")
        labels[s:e + 1] = 1
    return labels


def check_label_length(video_id: str, labels: np.ndarray, n_frames: int, where: str) -> np.ndarray:
    """Raise DatasetError when labels and frames disagree in length (never truncate silently)."""
    from mulde.errors import DatasetError

    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != n_frames:
        raise DatasetError(
            f"{video_id}: labels from {where} cover {labels.size} frames but the video has "
            f"{n_frames} decodable frames; fix the annotation or re-extract the video's frames")
    return (labels != 0).astype(np.uint8)


def count_frames(source: Path, fps: float | None = None) -> int:
    """Decodable frame count of a video file or frame folder (cheap for frame folders)."""
    from mulde.datasets.video import list_frame_files, open_video

    source = Path(source)
    if source.is_dir():
        return len(list_frame_files(source))
    with open_video(source, fps=fps) as reader:
        return reader.n_frames


def require_dir(path: Path, dataset: str, what: str) -> Path:
    """``path`` if it is a folder, else DatasetError naming the expected layout."""
    from mulde.errors import DatasetError

    if not path.is_dir():
        raise DatasetError(f"{path}: expected folder not found ({what}); is --root the {dataset} "
                           "folder?")
    return path


def load_mat_variable(path: str | Path, name: str, expected: str) -> np.ndarray:
    """One variable of a MATLAB annotation file; a missing variable or corrupt file is a DatasetError."""
    import scipy.io

    from mulde.errors import DatasetError

    path = Path(path)
    try:
        return scipy.io.loadmat(str(path))[name]
    except KeyError:
        raise DatasetError(f"{path}: no variable {name!r} (expected {expected})") from None
    except Exception as exc:  # noqa: BLE001 - scipy raises several types for corrupt files
        raise DatasetError(f"{path}: cannot read MATLAB file ({type(exc).__name__})") from None
