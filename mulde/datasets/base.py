"""What a dataset reader returns: a list of videos per split, with labels for the test split."""

from __future__ import annotations

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
                f"{self.root}: dataset root not found; pass --root DIR pointing at the {self.name or 'dataset'} folder"
            )

    def videos(self, split: str) -> list[VideoItem]:
        raise NotImplementedError

    def splits(self) -> tuple[str, ...]:
        return ("train", "test")
