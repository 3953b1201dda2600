"""Stage 1: videos -> cached feature tables (``vad extract``), resumable per video."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mulde.config import RunConfig, resolve_config
from mulde.datasets.base import Dataset, VideoItem
from mulde.errors import DatasetError, InputError
from mulde.extractors.base import FeatureTable
from mulde.extractors.registry import extractor_class
from mulde.pipeline.cache import FeatureCache, extractor_key
from mulde.pipeline.executor import JobReport, RunOptions, run_job

log = logging.getLogger(__name__)

FRAME_BACKBONES = ("flowgrid", "hiera_base_16x224", "hiera_base_plus_16x224",
                   "hiera_large_16x224", "hiera_huge_16x224")


def as_run_config(cfg: RunConfig | dict[str, Any]) -> RunConfig:
    """A :class:`RunConfig` as is; a mapping of options (flat or nested) resolved into one."""
    return cfg if isinstance(cfg, RunConfig) else resolve_config(cfg)


def build_extractor(cfg: RunConfig | dict[str, Any]):
    """Create the extractor a config chooses, with its own options and the runtime's device/cache."""
    cfg = as_run_config(cfg)
    name = cfg.extractor_name()
    return extractor_class(name)(**cfg.component_kwargs("extractor", name))


def frame_extractor(cfg: RunConfig, backbone: str):
    """The frame-centric extractor of one ``extractor.frame_features`` entry, with its own options."""
    name = "hiera" if backbone.startswith("hiera") else backbone
    kwargs = cfg.component_kwargs("extractor", name)
    if name == "hiera":
        kwargs["model"] = backbone
    return extractor_class(name)(**kwargs)


def build_extractors(cfg: RunConfig | dict[str, Any], ds: Dataset | None = None) -> list:
    """Every extractor a run needs: the one ``features``/``backbone`` choose, then one per
    ``extractor.frame_features`` entry (frame-level types modelled beside the object types).
    Their feature types never overlap, and each caches its tables under its own key.
    ``ds``: the dataset whose training videos decide ``yolo_imgsz: auto``."""
    from mulde.pipeline.object_size import resolve_auto_imgsz

    cfg = resolve_auto_imgsz(as_run_config(cfg), ds)
    extra = tuple(dict.fromkeys(cfg.extractor.frame_features or ()))
    if extra and cfg.extractor.features != "objects":
        raise InputError(f"extractor.frame_features {list(extra)} adds frame-level features to an object-centric "
                         "run, and this run is frame-centric (features: frames); set backbone instead, or use "
                         "features: objects")
    out = [build_extractor(cfg)] + [frame_extractor(cfg, b) for b in extra]
    seen: dict[str, str] = {}
    for ex in out:
        for t in ex.feature_types:
            if t in seen:
                raise InputError(f"extractor.frame_features: {ex.name} and {seen[t]} both produce {t!r} features; "
                                 "list each frame backbone once")
            seen[t] = ex.name
    return out


def open_dataset(cfg: RunConfig | dict[str, Any]) -> Dataset:
    """The dataset a config names; ``data.fps`` sets the frame rate of its frame folders."""
    from mulde.datasets.registry import get_dataset

    cfg = as_run_config(cfg)
    if not cfg.data.dataset or not cfg.data.root:
        missing = "dataset" if not cfg.data.dataset else "root"
        raise InputError(f"--{missing} is required (or set `{missing}:` in --config FILE.yaml)")
    ds = get_dataset(cfg.data.dataset, cfg.data.root)
    if cfg.data.fps:
        ds.default_fps = float(cfg.data.fps)
    return ds


def dataset_key(ds: Dataset) -> str:
    """Cache folder of a dataset: its name plus a fingerprint of its videos (relative paths and
    sizes, :meth:`Dataset.fingerprint`), so the same data under two roots shares features and
    different data never mixes."""
    return f"{ds.name}-{ds.fingerprint()[:12]}"


@dataclass
class ExtractSummary:
    key: str
    folder: Path
    computed: int
    skipped: int
    failed: int = 0
    failures_file: Path | None = None
    report: JobReport | None = None


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
                  progress: bool = True, *, workers: int | None = None, executor: str = "local",
                  ray_address: str | None = None, shard: str | tuple[int, int] | None = None,
                  retries: int = 2, raise_on_failure: bool = True,
                  run_options: RunOptions | None = None) -> ExtractSummary:
    """Extract every video of one split into the cache, skipping videos already there.

    ``workers``/``executor``/``ray_address``/``shard``/``retries`` choose how
    (:mod:`mulde.pipeline.executor`; one local worker runs inline). A video that fails is
    listed in ``failures.json`` beside the features while the others go on; then
    :class:`~mulde.pipeline.executor.FailedVideos` is raised (unless ``raise_on_failure`` is
    False: the summary counts them).
    """
    from mulde.pipeline.extract_job import ExtractJob, work_items

    items = ds.videos(split)
    if not items:
        raise DatasetError(f"{ds.root}: no {split} videos found for dataset {ds.name}")
    options = run_options or RunOptions(executor=executor, workers=workers, ray_address=ray_address,
                                        shard=shard, retries=retries)
    dkey, key = dataset_key(ds), extractor_key(extractor.name, extractor.config())
    cache.write_manifest(dkey, key, {"dataset": ds.name, "root": str(ds.root),
                                     "extractor": extractor.name, "config": extractor.config(),
                                     "feature_types": list(extractor.feature_types)})
    folder = cache.folder(dkey, key, split)
    job = ExtractJob(extractor, cache, dkey, split, fps=ds.default_fps, overwrite=overwrite,
                     label=f"extract {ds.name}/{split}")
    report = run_job(job, work_items(items), folder, options, progress=progress,
                     skip_note=f"already cached under {folder} (skipped; --overwrite recomputes)")
    if raise_on_failure:
        report.raise_for_failures()
    return ExtractSummary(key=key, folder=folder, computed=len(report.computed), skipped=len(report.skipped),
                          failed=len(report.failed), failures_file=report.failures_file, report=report)


def load_split(ds: Dataset, split: str, extractor, cache: FeatureCache, extract_missing: bool = True,
               progress: bool = True, run_options: RunOptions | None = None
               ) -> list[tuple[VideoItem, dict[str, FeatureTable]]]:
    """Features of every video of a split, extracting whatever the cache lacks first (with
    ``run_options``: workers, executor, ...; default the plain loop)."""
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
        extract_split(ds, split, extractor, cache, progress=progress,
                      run_options=RunOptions(**{**vars(run_options or RunOptions()), "shard": None}))
    out = []
    for item in items:
        tables = cache.load(dkey, key, split, item.video_id, types)
        _check_labels(item, tables)
        out.append((item, tables))
    return out


def load_tables(ds: Dataset, split: str, extractors: list, cache: FeatureCache, extract_missing: bool = True,
                progress: bool = True, run_options: RunOptions | None = None
                ) -> list[tuple[VideoItem, dict[str, FeatureTable]]]:
    """:func:`load_split` for several extractors (each from its own cache key), merged per video.

    Every extractor decodes the same frames, so their tables must agree on the frame count."""
    merged: list[tuple[VideoItem, dict[str, FeatureTable]]] = []
    for k, extractor in enumerate(extractors):
        part = load_split(ds, split, extractor, cache, extract_missing, progress, run_options)
        if k == 0:
            merged = [(item, dict(tabs)) for item, tabs in part]
            continue
        for (item, tabs), (_, more) in zip(merged, part):
            n, m = next(iter(tabs.values())).n_frames, next(iter(more.values())).n_frames
            if n != m:
                raise DatasetError(f"{item.source}: {extractors[0].name} features cover {n} frames and "
                                   f"{extractor.name} features {m}; re-extract both with --overwrite")
            tabs.update(more)
    return merged


def cache_for(cfg: RunConfig | dict[str, Any]) -> FeatureCache:
    cache = as_run_config(cfg).runtime.cache
    return FeatureCache(os.path.expanduser(cache) if cache else None)
