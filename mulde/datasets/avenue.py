"""CUHK Avenue (Lu et al., ICCV 2013): 16 training and 21 test videos, 640x360, 25 fps.

Layouts:

* official: ``training_videos/01.avi``, ``testing_videos/01.avi`` (``--root`` may also be the
  folder holding ``Avenue Dataset/``) with labels from
  ``ground_truth_demo/testing_label_mask/1_label.mat`` (``volLabel``: 1xT cell of pixel masks; a
  frame is anomalous when any mask pixel is set). ``ground_truth_demo`` may sit in the root or
  beside it (the two official zips are often extracted side by side).
* frame layout: ``training/frames/01/*.jpg``, ``testing/frames/01/*.jpg`` and ``avenue.mat``
  (``gt`` like ``ped2.mat``: 1-based inclusive ranges).
"""

from __future__ import annotations

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
from mulde.datasets.ucsd import _subdirs, load_gt_mat
from mulde.datasets.video import VIDEO_EXTENSIONS, natural_key
from mulde.errors import DatasetError


def load_vol_label(path: str | Path) -> np.ndarray:
    """Per-frame 0/1 labels from an Avenue ``<n>_label.mat`` (``volLabel`` mask cell)."""
    vol = load_mat_variable(path, "volLabel", "a 1xT cell of masks")
    cells = vol.ravel() if vol.dtype == object else [vol]
    return np.array([np.asarray(m).any() for m in cells], dtype=np.uint8)


def video_files(folder: Path) -> list[Path]:
    """Video files of a folder in natural order."""
    return sorted((p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS),
                  key=lambda p: natural_key(p.name))


class Avenue(Dataset):
    """CUHK Avenue in the official video layout or the frame layout."""

    name = "avenue"
    default_fps = 25.0

    def __init__(self, root: str | Path) -> None:
        super().__init__(root)
        self.layout, self.base = self._detect()

    def _detect(self) -> tuple[str, Path]:
        for base in (self.root, self.root / "Avenue Dataset", self.root / "Avenue_Dataset"):
            if (base / "training_videos").is_dir() and (base / "testing_videos").is_dir():
                return "official", base
        if (self.root / "training").is_dir() and (self.root / "testing").is_dir():
            return "frames", self.root
        raise DatasetError(
            f"{self.root}: not an Avenue folder; expected training_videos/ + testing_videos/ "
            "(+ ground_truth_demo/), or training/frames/ + testing/frames/ + avenue.mat")

    def _gt_dir(self) -> Path:
        for cand in (self.base, self.root, self.base.parent):
            d = cand / "ground_truth_demo" / "testing_label_mask"
            if d.is_dir():
                return d
        raise DatasetError(f"{self.base / 'ground_truth_demo' / 'testing_label_mask'}: Avenue "
                           "labels not found; extract ground_truth_demo.zip into the root")

    def _sources(self, split: str) -> list[Path]:
        if self.layout == "official":
            return video_files(self.base / f"{'training' if split == 'train' else 'testing'}_videos")
        folder = self.base / ("training" if split == "train" else "testing")
        if (folder / "frames").is_dir():
            folder = folder / "frames"
        return _subdirs(folder)

    def _labels(self, sources: list[Path]) -> list[tuple[np.ndarray, str]]:
        if self.layout == "official":
            gt = self._gt_dir()
            out = []
            for src in sources:
                f = gt / f"{int(src.stem) if src.stem.isdigit() else src.stem}_label.mat"
                if not f.is_file():
                    raise DatasetError(f"{f}: label file for test video {src.name} not found")
                out.append((load_vol_label(f), str(f)))
            return out
        mat = self.base / "avenue.mat"
        if not mat.is_file():
            raise DatasetError(f"{mat}: label file not found (expected a 'gt' cell of ranges)")
        ranges = load_gt_mat(mat)
        if len(ranges) != len(sources):
            raise DatasetError(f"{mat}: has labels for {len(ranges)} test videos but "
                               f"{len(sources)} test folders were found")
        out = []
        for src, rng in zip(sources, ranges):
            n = count_frames(src)
            out.append((ranges_to_labels(n, rng, True, src.name, str(mat)), str(mat)))
        return out

    def _list_videos(self, split: str) -> list[VideoItem]:
        sources = self._sources(split)
        if not sources:
            raise DatasetError(f"{self.base}: no {split} videos found for Avenue")
        if split == "train":
            items = [VideoItem(s.stem, "train", s) for s in sources]
        else:
            items = []
            for src, (labels, where) in zip(sources, self._labels(sources)):
                n = count_frames(src, fps=self.default_fps)
                items.append(VideoItem(src.stem, "test", src,
                                       check_label_length(src.stem, labels, n, where)))
        return items
