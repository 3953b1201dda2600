"""A user's own data: ``train/`` with normal videos, ``test/`` with videos, optional labels.

Each entry of ``train/`` and ``test/`` is a video file or a folder of frames; the video id is the
file stem or folder name. Labels come from ``labels.csv`` (in the root or in ``test/``) with
columns ``video,start_frame,end_frame`` (0-based, inclusive end, several rows per video allowed).
When ``labels.csv`` exists, test videos without rows are all normal; when it does not, test
labels are None.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from mulde.datasets.base import (
    Dataset,
    VideoItem,
    count_frames,
    ranges_to_labels,
    require_dir,
)
from mulde.datasets.video import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, natural_key
from mulde.errors import DatasetError

LABEL_COLUMNS = ("video", "start_frame", "end_frame")


def list_sources(folder: Path) -> list[Path]:
    """Video files and frame folders directly inside ``folder``, in natural order."""
    out = []
    for p in folder.iterdir():
        if p.name.startswith("."):
            continue
        if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS:
            out.append(p)
        elif p.is_dir() and any(f.suffix.lower() in IMAGE_EXTENSIONS for f in p.iterdir()):
            out.append(p)
    return sorted(out, key=lambda p: natural_key(p.name))


def video_id(source: Path) -> str:
    return source.stem if source.is_file() else source.name


def read_labels_csv(path: Path) -> dict[str, list[tuple[int, int]]]:
    """``{video: [(start, end), ...]}`` (0-based, inclusive) from a labels.csv."""
    rows: dict[str, list[tuple[int, int]]] = {}
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in LABEL_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}; expected header "
                               "video,start_frame,end_frame")
        for k, row in enumerate(reader, 2):
            try:
                start, end = int(row["start_frame"]), int(row["end_frame"])
            except (TypeError, ValueError):
                raise DatasetError(f"{path}: line {k}: start_frame/end_frame must be "
                                   "integers") from None
            name = (row["video"] or "").strip()
            rows.setdefault(Path(name).stem if Path(name).suffix.lower() in VIDEO_EXTENSIONS
                            else name, []).append((start, end))
    return rows


class FolderDataset(Dataset):
    """``train/`` + ``test/`` folders of video files or frame folders, optional labels.csv."""

    name = "folder"

    def __init__(self, root: str | Path, fps: float | None = None) -> None:
        super().__init__(root)
        self.default_fps = fps

    def labels_file(self) -> Path | None:
        for cand in (self.root / "test" / "labels.csv", self.root / "labels.csv"):
            if cand.is_file():
                return cand
        return None

    def _list_videos(self, split: str) -> list[VideoItem]:
        folder = require_dir(self.root / split, self.name,
                             f"{split}/ with video files or frame folders")
        sources = list_sources(folder)
        if not sources:
            raise DatasetError(f"{folder}: no videos (files {', '.join(VIDEO_EXTENSIONS)} or "
                               "folders of images)")
        ids = [video_id(s) for s in sources]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise DatasetError(f"{folder}: several entries share the video id {dup[0]!r}; "
                               "rename one of them")
        if split == "train":
            items = [VideoItem(i, "train", s) for i, s in zip(ids, sources)]
        else:
            items = self._test_items(ids, sources)
        return items

    def _test_items(self, ids: list[str], sources: list[Path]) -> list[VideoItem]:
        lf = self.labels_file()
        if lf is None:
            return [VideoItem(i, "test", s) for i, s in zip(ids, sources)]
        rows = read_labels_csv(lf)
        unknown = sorted(set(rows) - set(ids))
        if unknown:
            raise DatasetError(f"{lf}: video {unknown[0]!r} is not in {self.root / 'test'} "
                               f"(known: {', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''})")
        items = []
        for i, s in zip(ids, sources):
            n = count_frames(s, fps=self.default_fps)
            labels = (ranges_to_labels(n, rows[i], False, i, str(lf)) if i in rows
                      else np.zeros(n, np.uint8))
            items.append(VideoItem(i, "test", s, labels))
        return items
