"""Stage 1: videos -> cached feature tables (``vad extract``), resumable per video."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from mulde.config import DETECTOR_KEYS, EXTRACTOR_ALIASES, config_fields, select_options
from mulde.datasets.base import Dataset, VideoItem
from mulde.errors import DatasetError, InputError
from mulde.extractors.base import FeatureTable
from mulde.extractors.registry import extractor_class
from mulde.pipeline.cache import FeatureCache, extractor_key

log = logging.getLogger(__name__)

FRAME_BACKBONES = ("flowgrid", "hiera_base_16x224", "hiera_base_plus_16x224",
                   "hiera_large_16x224", "hiera_huge_16x224")


def extractor_name(cfg: dict[str, Any]) -> str:
    """Which registered extractor a config asks for (``objects``, ``flowgrid`` or ``hiera``)."""
    features = cfg.get("features")
    if features == "objects":
        return "objects"
    if features == "frames":
        backbone = str(cfg.get("backbone") or "flowgrid")
        if backbone == "flowgrid":
            return "flowgrid"
        if backbone.startswith("hiera"):
            return "hiera"
        raise InputError(f"unknown frame backbone {backbone!r}; choose one of {', '.join(FRAME_BACKBONES)}")
    raise InputError(f"unknown --features {features!r}; choose frames or objects")


def build_extractor(cfg: dict[str, Any]):
    """Create the extractor a config describes, passing every option its config class knows."""
    name = extractor_name(cfg)
    cls = extractor_class(name)
    fields = config_fields(cls)
    options = select_options({k: v for k, v in cfg.items() if k not in DETECTOR_KEYS}, fields,
                             EXTRACTOR_ALIASES)
    if name == "hiera" and "model" in fields:
        options["model"] = cfg.get("backbone")
    return cls(**options)


def dataset_key(ds: Dataset) -> str:
    """Cache folder of a dataset: its name plus a hash of its root, so two copies never mix."""
    digest = hashlib.sha1(str(Path(ds.root).resolve()).encode()).hexdigest()[:8]
    return f"{ds.name}-{digest}"


@dataclass
class ExtractSummary:
    key: str
    folder: Path
    computed: int
    skipped: int


def _check_labels(item: VideoItem, tables: dict[str, FeatureTable]) -> None:
    if item.labels is None:
        return
    for table in tables.values():
        n = table.n_frames
        if n != len(item.labels):
            raise DatasetError(
                f"{item.source}: {n} decodable frames but {len(item.labels)} labels; fix the "
                "annotation or the video (labels are never truncated silently)"
            )
        break


def extract_split(ds: Dataset, split: str, extractor, cache: FeatureCache, overwrite: bool = False,
                  progress: bool = True) -> ExtractSummary:
    """Extract every video of one split into the cache, skipping videos already there."""
    from mulde.datasets.video import open_video

    items = ds.videos(split)
    if not items:
        raise DatasetError(f"{ds.root}: no {split} videos found for dataset {ds.name}")
    dkey, key = dataset_key(ds), extractor_key(extractor.name, extractor.config())
    cache.write_manifest(dkey, key, {"dataset": ds.name, "root": str(ds.root),
                                     "extractor": extractor.name, "config": extractor.config(),
                                     "feature_types": list(extractor.feature_types)})
    todo = [it for it in items if overwrite or not cache.has(dkey, key, split, it.video_id, tuple(extractor.feature_types))]
    skipped = len(items) - len(todo)
    if skipped:
        log.info("%s/%s: %d of %d videos already cached under %s (skipped; --overwrite recomputes)",
                 ds.name, split, skipped, len(items), cache.folder(dkey, key, split))
    for item in tqdm(todo, desc=f"extract {ds.name}/{split}", unit="video", disable=not progress):
        with open_video(item.source, fps=ds.default_fps) as reader:
            tables = extractor.extract(reader, progress=progress)
        _check_labels(item, tables)
        cache.save(dkey, key, split, item.video_id, tables)
    return ExtractSummary(key=key, folder=cache.folder(dkey, key, split), computed=len(todo), skipped=skipped)


def load_split(ds: Dataset, split: str, extractor, cache: FeatureCache, extract_missing: bool = True,
               progress: bool = True) -> list[tuple[VideoItem, dict[str, FeatureTable]]]:
    """Features of every video of a split, extracting whatever the cache lacks first."""
    dkey, key = dataset_key(ds), extractor_key(extractor.name, extractor.config())
    types = tuple(extractor.feature_types)
    items = ds.videos(split)
    missing = [it for it in items if not cache.has(dkey, key, split, it.video_id, types)]
    if missing:
        if not extract_missing:
            raise InputError(
                f"{len(missing)} {split} videos of {ds.name} are not in the cache {cache.root}; run `vad extract` first"
            )
        log.info("%d %s videos not cached yet: extracting them now", len(missing), split)
        extract_split(ds, split, extractor, cache, progress=progress)
    out = []
    for item in items:
        tables = cache.load(dkey, key, split, item.video_id, types)
        _check_labels(item, tables)
        out.append((item, tables))
    return out


def cache_for(cfg: dict[str, Any]) -> FeatureCache:
    cache = cfg.get("cache")
    return FeatureCache(os.path.expanduser(cache) if cache else None)
