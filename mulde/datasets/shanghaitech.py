"""ShanghaiTech Campus (Liu et al., CVPR 2018): 13 scenes, 330 training and 107 test videos.

Layout: ``training/videos/01_001.avi`` (or ``training/frames/01_001/``), ``testing/frames/01_0014/``
with per-frame 0/1 labels in ``testing/test_frame_mask/01_0014.npy`` (already 0-based, one value
per frame). The scene id is the part of the name before ``_``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mulde.datasets.avenue import video_files
from mulde.datasets.base import (
    Dataset,
    VideoItem,
    check_label_length,
    count_frames,
    require_dir,
)
from mulde.datasets.ucsd import _subdirs
from mulde.errors import DatasetError


class ShanghaiTech(Dataset):
    """ShanghaiTech Campus with training videos (or frames) and test frame folders."""

    name = "shanghaitech"
    default_fps = 24.0

    def __init__(self, root: str | Path) -> None:
        super().__init__(root)
        require_dir(self.root / "training", self.name, "training/videos/*.avi")
        require_dir(self.root / "testing", self.name, "testing/frames/ + testing/test_frame_mask/")

    def _list_videos(self, split: str) -> list[VideoItem]:
        if split == "train":
            vids = self.root / "training" / "videos"
            frames = self.root / "training" / "frames"
            if vids.is_dir():
                sources = video_files(vids)
            elif frames.is_dir():
                sources = _subdirs(frames)
            else:
                raise DatasetError(f"{vids}: expected folder not found (training videos *.avi, "
                                   "or training/frames/<video>/)")
            items = [VideoItem(s.stem, "train", s, scene=s.stem.split("_")[0]) for s in sources]
        else:
            frames = require_dir(self.root / "testing" / "frames", self.name,
                                 "test frames testing/frames/<video>/")
            masks = require_dir(self.root / "testing" / "test_frame_mask", self.name,
                                "per-frame labels testing/test_frame_mask/<video>.npy")
            items = []
            for d in _subdirs(frames):
                f = masks / f"{d.name}.npy"
                if not f.is_file():
                    raise DatasetError(f"{f}: label file for test video {d.name} not found")
                try:
                    labels = np.load(f).reshape(-1)
                except (OSError, ValueError) as exc:
                    raise DatasetError(f"{f}: cannot read labels ({exc})") from None
                labels = check_label_length(d.name, labels, count_frames(d), str(f))
                items.append(VideoItem(d.name, "test", d, labels, scene=d.name.split("_")[0]))
        if not items:
            raise DatasetError(f"{self.root}: no {split} videos found for ShanghaiTech")
        return items
