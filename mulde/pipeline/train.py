"""Stage 2: fit one detector per feature type on cached normal training features (``vad train``)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from mulde import __version__
from mulde.config import DETECTOR_ALIASES, config_fields, select_options, write_config
from mulde.datasets.registry import get_dataset
from mulde.errors import InputError
from mulde.pipeline.cache import extractor_key
from mulde.pipeline.extract import build_extractor, cache_for, load_split
from mulde.pipeline.run import write_run_json
from mulde.pipeline.score import frame_max, type_stats
from mulde.pipeline.tracks import TRACKED_TYPES, apply_tracks

log = logging.getLogger(__name__)


def make_configured_detector(cfg: dict[str, Any]):
    """The detector a config names, with every option its config class knows."""
    from mulde.detector.registry import DETECTORS, make_detector

    name = cfg.get("detector", "mulde")
    if name not in DETECTORS:
        raise InputError(f"unknown detector {name!r}; choose one of {', '.join(sorted(DETECTORS))}")
    params = select_options(cfg, config_fields(DETECTORS[name]), DETECTOR_ALIASES)
    return make_detector(name, **params)


def feature_types_for(cfg: dict[str, Any], available: tuple[str, ...]) -> tuple[str, ...]:
    """The feature types to model: ``feature_types`` from the config, else all the extractor makes."""
    wanted = cfg.get("feature_types")
    if not wanted:
        return tuple(available)
    wanted = (wanted,) if isinstance(wanted, str) else tuple(wanted)
    unknown = [t for t in wanted if t not in available]
    if unknown:
        raise InputError(f"feature types {unknown} are not produced by this extractor; available: {', '.join(available)}")
    return wanted


def train_run(cfg: dict[str, Any], out: str | Path, progress: bool = True) -> dict[str, Any]:
    """Train and save a run directory; returns its run.json content."""
    out = Path(out).expanduser()
    ds = get_dataset(cfg["dataset"], cfg["root"])
    extractor = build_extractor(cfg)
    cache = cache_for(cfg)
    types = feature_types_for(cfg, tuple(extractor.feature_types))
    window = int(cfg.get("track_window") or 0)
    if window and not set(types) & set(TRACKED_TYPES):
        raise InputError(f"--track-window smooths object-centric {', '.join(TRACKED_TYPES)} features, and this "
                         f"run models {', '.join(types)}; drop --track-window or use --features objects")
    train = [(item, apply_tracks(tabs, window)) for item, tabs in load_split(ds, "train", extractor, cache,
                                                                              progress=progress)]
    out.mkdir(parents=True, exist_ok=True)
    write_config(cfg, out)
    stats, timings = {}, {}
    for ftype in types:
        tables = [tabs[ftype] for _, tabs in train]
        X = np.concatenate([t.values for t in tables], axis=0) if tables else np.zeros((0, 0))
        if len(X) == 0:
            raise InputError(f"no {ftype} features in the {ds.name} training split; nothing to train on "
                             "(check the detector settings or drop this type with --feature-types)")
        log.info("training %s on %d %s rows of dimension %d", cfg.get("detector"), len(X), ftype, X.shape[1])
        det = make_configured_detector(cfg)
        t0 = time.perf_counter()
        det.fit(X, progress=progress)
        timings[ftype] = time.perf_counter() - t0
        rows = np.asarray(det.score_samples(X), dtype=np.float64)
        frames, start = [], 0
        for table in tables:
            r = rows[start:start + len(table)]
            start += len(table)
            frames.append(frame_max(table, r, table.n_frames, np.inf))
        stats[ftype] = type_stats(frames, rows)
        det.save(out / f"{ftype}.safetensors")
    info = {
        "mulde_version": __version__,
        "dataset": ds.name,
        "root": str(ds.root),
        "features": cfg.get("features"),
        "extractor": extractor.name,
        "extractor_key": extractor_key(extractor.name, extractor.config()),
        "extractor_config": extractor.config(),
        "detector": cfg.get("detector"),
        "feature_types": list(types),
        "stats": {t: s.to_dict() for t, s in stats.items()},
        "train_seconds": timings,
        "train_videos": len(train),
    }
    write_run_json(out, info)
    return info
