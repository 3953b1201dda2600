"""UBnormal (Acsintoae et al., CVPR 2022): 29 virtual scenes, open-set anomaly types.

Layout: ``Scene1 .. Scene29`` each with ``normal_scene_<s>_scenario_<k>.mp4`` and
``abnormal_scene_<s>_scenario_<k>.mp4``; each abnormal video has
``<video>_annotations/<video>_tracks.txt`` with comma-separated rows
``object_id, start_frame, end_frame`` (0-based, inclusive, as in the official
``write_frame_level_ground_truth.py``). Split lists, looked up in ``scripts/`` and the root:
the official ``{normal,abnormal}_{training,validation,test}_video_names.txt`` or
``UBnormal_{train,validation,test}.txt``. Training uses the normal videos of the training split
only (MULDE paper, section 4); ``test`` and ``validation`` hold normal and abnormal videos.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mulde.datasets.base import Dataset, VideoItem, check_label_length, count_frames
from mulde.datasets.video import natural_key
from mulde.errors import DatasetError

SPLIT_FILES = {"train": "training", "validation": "validation", "test": "test"}


class UBnormal(Dataset):
    """UBnormal with the official split lists."""

    name = "ubnormal"
    default_fps = 30.0

    def __init__(self, root: str | Path) -> None:
        super().__init__(root)
        if not any(p.is_dir() and p.name.startswith("Scene") for p in self.root.iterdir()):
            raise DatasetError(f"{self.root}: no Scene1..Scene29 folders; is --root the "
                               "UBnormal folder?")

    def splits(self) -> tuple[str, ...]:
        return ("train", "validation", "test")

    def _read_list(self, name: str) -> list[str] | None:
        for folder in (self.root / "scripts", self.root):
            f = folder / name
            if f.is_file():
                return [Path(x.strip()).stem for x in f.read_text().splitlines() if x.strip()]
        return None

    def _names(self, split: str) -> list[str]:
        key = SPLIT_FILES[split]
        normal = self._read_list(f"normal_{key}_video_names.txt")
        abnormal = self._read_list(f"abnormal_{key}_video_names.txt")
        if normal is not None or abnormal is not None:
            names = (normal or []) + ([] if split == "train" else abnormal or [])
        else:
            short = {"train": "train", "validation": "validation", "test": "test"}[split]
            names = self._read_list(f"UBnormal_{short}.txt")
            if names is None:
                raise DatasetError(
                    f"{self.root / 'scripts'}: UBnormal split lists not found (expected "
                    f"normal_{key}_video_names.txt / abnormal_{key}_video_names.txt or "
                    f"UBnormal_{short}.txt, from the official repository's scripts/ folder)")
            if split == "train":
                names = [n for n in names if n.startswith("normal")]
        return sorted(set(names), key=natural_key)

    def _path(self, video: str) -> Path:
        parts = video.split("_")
        if len(parts) < 3 or not parts[2].isdigit():
            raise DatasetError(f"{video}: not a UBnormal video name "
                               "(expected (ab)normal_scene_<n>_scenario_<k>)")
        path = self.root / f"Scene{parts[2]}" / f"{video}.mp4"
        if not path.is_file():
            raise DatasetError(f"{path}: video listed in the split file is missing")
        return path

    def _labels(self, video: str, path: Path) -> np.ndarray:
        n = count_frames(path)
        if not video.startswith("abnormal"):
            return np.zeros(n, np.uint8)
        tracks = path.parent / f"{video}_annotations" / f"{video}_tracks.txt"
        if not tracks.is_file():
            raise DatasetError(f"{tracks}: annotation of abnormal video {video} not found")
        labels = np.zeros(n, np.uint8)
        text = [ln for ln in tracks.read_text().splitlines() if ln.strip()]
        for k, line in enumerate(text, 1):
            try:
                _obj, start, end = (int(float(x)) for x in line.split(",")[:3])
            except ValueError:
                raise DatasetError(f"{tracks}: line {k} is not 'object_id,start,end'") from None
            if start < 0 or end < start or end >= n:
                raise DatasetError(
                    f"{video}: track {start}..{end} (0-based, inclusive) in {tracks} lies outside "
                    f"the video's {n} decodable frames; check the video file")
            labels[start:end + 1] = 1
        return check_label_length(video, labels, n, str(tracks))

    def _list_videos(self, split: str) -> list[VideoItem]:
        items = []
        for video in self._names(split):
            path = self._path(video)
            scene = video.split("_")[2]
            labels = None if split == "train" else self._labels(video, path)
            items.append(VideoItem(video, split, path, labels, scene=scene))
        if not items:
            raise DatasetError(f"{self.root}: the UBnormal {split} split lists no videos")
        return items
