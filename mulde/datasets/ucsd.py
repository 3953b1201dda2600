"""UCSD Pedestrian 1 and 2 (Mahadevan et al., CVPR 2010).

Two layouts are read:

* frame layout used by most VAD code: ``training/frames/01/000.jpg``, ``testing/frames/01/...``
  and ``ped2.mat`` (``gt``: 1xN cell of 2xK ``[start; end]`` ranges, 1-based, inclusive);
* official layout: ``UCSDped2/Train/Train001/*.tif``, ``UCSDped2/Test/Test001/*.tif`` with labels
  parsed from ``UCSDped2.m`` (``TestVideoFile{end+1}.gt_frame = [61:180];``). The ``Test001_gt``
  mask folders are not videos. ``--root`` may be ``UCSDped2``, its parent, or the extracted
  ``UCSD_Anomaly_Dataset.v1p2`` folder.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from mulde.datasets.base import (
    Dataset,
    VideoItem,
    check_label_length,
    count_frames,
    load_mat_variable,
    ranges_to_labels,
)
from mulde.datasets.video import natural_key
from mulde.errors import DatasetError


def parse_ucsd_m(path: str | Path) -> list[list[tuple[int, int]]]:
    """Anomalous ranges (1-based, inclusive) per test video from an official ``UCSDpedN.m``."""
    path = Path(path)
    entries: dict[int, list[tuple[int, int]]] = {}
    count = 0
    pattern = re.compile(r"TestVideoFile\{\s*(end\s*\+\s*1|\d+)\s*\}\.gt_frame\s*=\s*\[([^\]]*)\]")
    for line in path.read_text(errors="replace").splitlines():
        line = line.split("%", 1)[0]
        m = pattern.search(line)
        if not m:
            continue
        count = count + 1 if m.group(1).startswith("end") else int(m.group(1))
        ranges = [(int(a), int(b or a))
                  for a, b in re.findall(r"(\d+)\s*(?::\s*(\d+))?", m.group(2))]
        entries[count] = ranges
    if not entries:
        raise DatasetError(f"{path}: no 'TestVideoFile{{...}}.gt_frame = [a:b];' lines found")
    n = max(entries)
    return [entries.get(k, []) for k in range(1, n + 1)]


def load_gt_mat(path: str | Path) -> list[list[tuple[int, int]]]:
    """Anomalous ranges (1-based, inclusive) per test video from a ``ped2.mat``-style ``gt`` cell."""
    gt = load_mat_variable(path, "gt", "a 1xN cell of 2xK ranges")
    cells = gt.ravel() if gt.dtype == object else [gt]
    out = []
    for cell in cells:
        arr = np.asarray(cell, dtype=np.int64)
        if arr.size == 0:
            out.append([])
            continue
        if arr.ndim == 1:
            arr = arr.reshape(2, -1)
        if arr.shape[0] != 2:
            raise DatasetError(f"{path}: gt entries must be 2xK [start; end] arrays, got {arr.shape}")
        out.append([(int(s), int(e)) for s, e in arr.T])
    return out


def _subdirs(folder: Path, pattern: str = r".+") -> list[Path]:
    rx = re.compile(pattern)
    return sorted((p for p in folder.iterdir() if p.is_dir() and rx.fullmatch(p.name)),
                  key=lambda p: natural_key(p.name))


class UCSDPed(Dataset):
    """UCSD Ped1/Ped2 in the frame layout or the official TIFF layout (10 fps)."""

    default_fps = 10.0
    variant = "ped2"

    def __init__(self, root: str | Path) -> None:
        self.name = self.variant
        super().__init__(root)
        self.layout, self.base = self._detect()

    def _detect(self) -> tuple[str, Path]:
        official = f"UCSD{self.variant}"
        for base in (self.root, self.root / official, self.root / "UCSD_Anomaly_Dataset.v1p2" / official):
            if (base / "Train").is_dir() and (base / "Test").is_dir():
                return "official", base
        if (self.root / "training").is_dir() and (self.root / "testing").is_dir():
            return "frames", self.root
        raise DatasetError(
            f"{self.root}: not a UCSD {self.variant} folder; expected training/frames/ + "
            f"testing/frames/ + {self.variant}.mat, or {official}/Train/ + {official}/Test/")

    def _frame_dirs(self, split: str) -> list[Path]:
        if self.layout == "official":
            folder = self.base / ("Train" if split == "train" else "Test")
            prefix = "Train" if split == "train" else "Test"
            return _subdirs(folder, rf"{prefix}\d+")
        folder = self.base / ("training" if split == "train" else "testing")
        if (folder / "frames").is_dir():
            folder = folder / "frames"
        return _subdirs(folder)

    def _ranges(self) -> tuple[list[list[tuple[int, int]]], Path]:
        if self.layout == "official":
            name = f"UCSD{self.variant}.m"
            for cand in (self.base / "Test" / name, self.base / name, self.root / name):
                if cand.is_file():
                    return parse_ucsd_m(cand), cand
            raise DatasetError(f"{self.base / 'Test' / name}: annotation file not found "
                               "(the official tarball ships it in the Test folder)")
        cand = self.base / f"{self.variant}.mat"
        if cand.is_file():
            return load_gt_mat(cand), cand
        m_file = self.base / f"UCSD{self.variant}.m"
        if m_file.is_file():
            return parse_ucsd_m(m_file), m_file
        raise DatasetError(f"{cand}: label file not found (expected a 'gt' cell of frame ranges)")

    def _list_videos(self, split: str) -> list[VideoItem]:
        dirs = self._frame_dirs(split)
        if not dirs:
            raise DatasetError(f"{self.base}: no {split} videos found for UCSD {self.variant}")
        items = []
        if split == "train":
            items = [VideoItem(d.name, "train", d) for d in dirs]
        else:
            ranges, where = self._ranges()
            if len(ranges) != len(dirs):
                raise DatasetError(
                    f"{where}: has labels for {len(ranges)} test videos but {len(dirs)} test "
                    "folders were found; use the annotation file that belongs to this data")
            for d, rng in zip(dirs, ranges):
                n = count_frames(d)
                labels = ranges_to_labels(n, rng, one_based=True, video_id=d.name, where=str(where))
                items.append(VideoItem(d.name, "test", d,
                                       check_label_length(d.name, labels, n, str(where))))
        return items


class UCSDPed2(UCSDPed):
    """UCSD Pedestrian 2: 16 training and 12 test videos, 360x240."""

    name = "ped2"
    variant = "ped2"


class UCSDPed1(UCSDPed):
    """UCSD Pedestrian 1: 34 training and 36 test videos, 238x158."""

    name = "ped1"
    variant = "ped1"
