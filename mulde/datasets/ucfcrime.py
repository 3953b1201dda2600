"""UCF-Crime (Sultani et al., CVPR 2018): 1900 long untrimmed surveillance videos.

Video files are located by name anywhere under the root (``Anomaly-Videos-Part-*/<Class>/``,
``<Class>/``, ``Training-Normal-Videos-Part-*/``, ``Testing_Normal_Videos_Anomaly/`` or a flat
``videos/`` folder). Split lists ``Anomaly_Train.txt`` / ``Anomaly_Test.txt`` and
``Temporal_Anomaly_Annotation_for_Testing_Videos.txt`` are looked up anywhere under the root.

Annotation convention: each line is ``<video> <class> s1 e1 s2 e2`` with ``-1`` for an absent
second (or first) event. We read the frame numbers as 1-based and inclusive, as the dataset's
official MATLAB evaluation does (``GT(s:e) = 1``), and convert them to 0-based once here.
Training uses the normal training videos only (MULDE is trained on normal data).
"""

from __future__ import annotations

from pathlib import Path

from mulde.datasets.base import Dataset, VideoItem, count_frames, ranges_to_labels
from mulde.datasets.video import VIDEO_EXTENSIONS, natural_key
from mulde.errors import DatasetError

ANNOTATION_FILE = "Temporal_Anomaly_Annotation_for_Testing_Videos.txt"


def parse_temporal_annotation(path: str | Path) -> dict[str, list[tuple[int, int]]]:
    """``{video_stem: [(start, end), ...]}`` (1-based, inclusive) from the official txt."""
    path = Path(path)
    out: dict[str, list[tuple[int, int]]] = {}
    for k, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            nums = [int(x) for x in parts[2:6]]
        except ValueError:
            raise DatasetError(f"{path}: line {k} is not '<video> <class> s1 e1 s2 e2'") from None
        if len(nums) != 4:
            raise DatasetError(f"{path}: line {k} is not '<video> <class> s1 e1 s2 e2'")
        out[Path(parts[0]).stem] = [(s, e) for s, e in zip(nums[::2], nums[1::2]) if s >= 0 and e >= 0]
    return out


def is_normal(video: str) -> bool:
    return video.startswith("Normal_Videos")


class UCFCrime(Dataset):
    """UCF-Crime with the official split lists and temporal annotations."""

    name = "ucfcrime"
    default_fps = 30.0

    def __init__(self, root: str | Path) -> None:
        super().__init__(root)
        self._files: dict[str, Path] | None = None

    def _find(self, name: str) -> Path | None:
        direct = self.root / name
        if direct.is_file():
            return direct
        return next(iter(sorted(self.root.rglob(name))), None)

    def _video_files(self) -> dict[str, Path]:
        if self._files is None:
            files: dict[str, Path] = {}
            for p in sorted(self.root.rglob("*")):
                if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file():
                    files.setdefault(p.stem, p)  # the dataset ships 50 duplicated files
            if not files:
                raise DatasetError(f"{self.root}: no video files found; expected the UCF-Crime "
                                   "folders (Anomaly-Videos-Part-*, Training-Normal-Videos-*, ...)")
            self._files = files
        return self._files

    def _list(self, name: str) -> list[str] | None:
        f = self._find(name)
        if f is None:
            return None
        return [Path(x.strip()).stem for x in f.read_text().splitlines() if x.strip()]

    def _locate(self, video: str) -> Path:
        path = self._video_files().get(video)
        if path is None:
            raise DatasetError(f"{video}.mp4: listed in the UCF-Crime split but not found under "
                               f"{self.root}")
        return path

    def _list_videos(self, split: str) -> list[VideoItem]:
        if split == "train":
            names = self._list("Anomaly_Train.txt")
            if names is None:
                names = [v for v, p in self._video_files().items()
                         if is_normal(v) and "test" not in str(p.parent).lower()]
            items = [VideoItem(v, "train", self._locate(v))
                     for v in sorted(set(names), key=natural_key) if is_normal(v)]
        else:
            ann_file = self._find(ANNOTATION_FILE)
            if ann_file is None:
                raise DatasetError(f"{self.root / ANNOTATION_FILE}: UCF-Crime test annotation not "
                                   "found (it ships in UCF_Crimes-Train-Test-Split.zip)")
            ann = parse_temporal_annotation(ann_file)
            names = self._list("Anomaly_Test.txt") or list(ann)
            items = []
            for v in sorted(set(names), key=natural_key):
                if v not in ann:
                    raise DatasetError(f"{v}: test video has no line in {ann_file}")
                path = self._locate(v)
                n = count_frames(path)
                labels = ranges_to_labels(n, ann[v], True, v, str(ann_file))
                items.append(VideoItem(v, "test", path, labels))
        if not items:
            raise DatasetError(f"{self.root}: no UCF-Crime {split} videos found")
        return items

