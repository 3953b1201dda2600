"""The executor job of ``vad extract``: one dataset video -> its feature files in the cache.

The job carries a recipe of the extractor rather than the extractor itself, so a worker
process or Ray actor builds its own copy once (its models on its own device) and checks that
the copy writes the same cache key. Run inline, it uses the caller's extractor as is.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from mulde import __version__
from mulde.datasets.base import VideoItem
from mulde.errors import MuldeError
from mulde.pipeline.cache import FeatureCache, extractor_key
from mulde.pipeline.executor import WorkItem

GPU_WORDS = ("auto", "cuda", None)


def extractor_recipe(extractor: Any) -> tuple[Any, dict[str, Any] | None]:
    """``(class, options)`` that rebuild ``extractor`` from its config dataclass, or
    ``(extractor, None)`` for an extractor without one (it then travels pickled as is)."""
    cfg = getattr(extractor, "cfg", None)
    if cfg is not None and dataclasses.is_dataclass(cfg):
        return type(extractor), {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    return extractor, None


def _on_gpu(extractor: Any) -> bool:
    return str(getattr(extractor, "device", "cpu")).startswith("cuda")


class ExtractJob:
    """Extract videos of one dataset split into the cache (see :mod:`mulde.pipeline.executor`)."""

    def __init__(self, extractor: Any, cache: FeatureCache, dataset: str, split: str,
                 fps: float | None = None, overwrite: bool = False, label: str = "extract") -> None:
        self.label = label
        self.cache_root = str(cache.root)
        self.dataset, self.split, self.fps, self.overwrite = dataset, split, fps, overwrite
        self.key = extractor_key(extractor.name, extractor.config())
        self.version = __version__  # part of the key: a worker importing another copy writes other keys
        self.types = tuple(extractor.feature_types)
        self.gpu = _on_gpu(extractor)
        self.recipe = extractor_recipe(extractor)
        self._extractor = extractor
        self._cache = cache

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_extractor"] = None  # workers build their own copy in setup()
        state["_cache"] = None
        return state

    @property
    def folder(self) -> Path:
        return self.cache.folder(self.dataset, self.key, self.split)

    @property
    def cache(self) -> FeatureCache:
        if self._cache is None:
            self._cache = FeatureCache(self.cache_root)
        return self._cache

    def uses_gpu(self) -> bool:
        return self.gpu

    def setup(self, device: str | None) -> None:
        if self._extractor is not None:
            return  # inline: the caller's extractor, exactly as given
        if self.version != __version__:
            raise MuldeError(f"this process runs mulde {self.version} and its worker mulde {__version__} (a source "
                             "tree beside an installed copy?); install the one you run (pip install -e .) or run "
                             "with --workers 1")
        cls, options = self.recipe
        if options is None:
            self._extractor = cls
            return
        if device and "device" in options and options["device"] in GPU_WORDS:
            options = {**options, "device": device}
            import torch

            torch.cuda.set_device(torch.device(device))
        extractor = cls(**options)
        key = extractor_key(extractor.name, extractor.config())
        if key != self.key:
            raise MuldeError(f"a worker rebuilt the {extractor.name} extractor with cache key {key}, not "
                             f"{self.key}; run with --workers 1")
        self._extractor = extractor

    def is_done(self, item: WorkItem) -> bool:
        if self.overwrite:
            return False
        return self.cache.has(self.dataset, self.key, self.split, item.key, self.types)

    def run(self, item: WorkItem, progress: bool) -> int:
        from mulde.datasets.video import open_video
        from mulde.pipeline.extract import _check_labels

        video: VideoItem = item.payload
        for ftype in self.types:  # temporaries of a writer that was killed (we hold the claim now)
            final = self.cache.path(self.dataset, self.key, self.split, video.video_id, ftype)
            for tmp in final.parent.glob(f".{final.name}.*.tmp*"):
                tmp.unlink(missing_ok=True)
        with open_video(video.source, fps=self.fps) as reader:
            tables = self._extractor.extract(reader, progress=progress)
            frames = int(reader.n_frames)
        _check_labels(video, tables)
        self.cache.save(self.dataset, self.key, self.split, video.video_id, tables)
        return frames


def work_items(videos: list[VideoItem]) -> list[WorkItem]:
    """One work item per dataset video (the video id names the claim and the cache files)."""
    return [WorkItem(v.video_id, str(v.source), v) for v in videos]
