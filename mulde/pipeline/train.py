"""Stage 2: fit one detector per feature type on cached normal training features (``vad train``).

The run folder is built under a hidden temporary name and renamed into place at the end, so
an interrupted or failed training never leaves a half-written run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from mulde import __version__
from mulde.config import RunConfig, public_options, resolved_record, write_config
from mulde.errors import InputError
from mulde.pipeline.cache import extractor_key
from mulde.pipeline.derived import derived_frame_types, object_kinds
from mulde.pipeline.extract import (
    as_run_config,
    build_extractors,
    cache_for,
    load_tables,
    open_dataset,
)
from mulde.pipeline.run import write_run_json
from mulde.pipeline.score import TypeStats, frame_max, held_out_spread, prepare_tables, type_stats
from mulde.pipeline.signal import drop_weak_types
from mulde.pipeline.tracks import TRACKED_TYPES

log = logging.getLogger(__name__)


def make_configured_detector(cfg: RunConfig | dict[str, Any]):
    """The density model a config names, with its own options and the runtime's device/seed."""
    from mulde.detector.registry import make_detector

    cfg = as_run_config(cfg)
    return make_detector(cfg.detector.name, **cfg.component_kwargs("detector", cfg.detector.name))


def feature_types_for(cfg: RunConfig, available: tuple[str, ...], frame_types: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The feature types to model: ``detector.feature_types``, else all the extractors make
    (``available``: the main extractor's, ``frame_types``: those of ``extractor.frame_features``,
    which must all be modelled: they were asked for by name)."""
    wanted = cfg.detector.feature_types
    if not wanted:
        return tuple(available) + tuple(frame_types)
    unknown = [t for t in wanted if t not in available and t not in frame_types]
    if unknown:
        raise InputError(f"feature types {unknown} (detector.feature_types) are not produced by this extractor; "
                         f"available: {', '.join(tuple(available) + tuple(frame_types))}")
    left = [t for t in frame_types if t not in wanted]
    if left:
        raise InputError(f"extractor.frame_features adds {', '.join(left)} features and detector.feature_types "
                         f"leaves them out; add {', '.join(left)} to feature_types or drop frame_features")
    return tuple(wanted)


def training_profile(items: list, fps: float | None, limit: int = 16) -> dict[str, Any]:
    """What the training footage looks like (frame rate, frame size), from up to ``limit`` videos,
    so that ``vad score`` can warn when it is given something else."""
    from mulde.datasets.video import open_video

    rates, sizes = [], []
    for item in items[:limit]:
        with contextlib.suppress(Exception), open_video(item.source, fps=fps) as reader:
            rates.append(float(reader.fps or 0))
            sizes.append((int(reader.width), int(reader.height)))
    if not rates:
        return {}
    return {"fps": float(np.median(rates)), "frame_size": list(max(set(sizes), key=sizes.count))}


def _describe(cfg: RunConfig, det: Any) -> str:
    conf = getattr(det, "config", None)
    parts = [f"preset {cfg.detector.preset}"]
    for name in ("hidden", "batch_size", "steps", "lr", "lr_schedule", "ema_decay"):
        if hasattr(conf, name):
            parts.append(f"{name} {getattr(conf, name)}")
    return ", ".join(parts)


def train_run(cfg: RunConfig | dict[str, Any], out: str | Path, progress: bool = True) -> dict[str, Any]:
    """Train and save a run directory; returns its run.json content."""
    cfg = as_run_config(cfg)
    out = Path(out).expanduser().resolve()
    ds = open_dataset(cfg)
    extractors = build_extractors(cfg, ds)
    extractor = extractors[0]
    cache = cache_for(cfg)
    frame_types = tuple(t for ex in extractors[1:] for t in ex.feature_types)
    types = feature_types_for(cfg, tuple(extractor.feature_types), frame_types)
    window = int(cfg.scoring.track_window or 0)
    if window and not set(types) & set(TRACKED_TYPES):
        raise InputError(f"--track-window smooths object-centric {', '.join(TRACKED_TYPES)} features, and this "
                         f"run models {', '.join(types)}; drop --track-window or use --features objects")
    sc = cfg.scoring
    if object_kinds(sc.derived or ()) and "velocity" not in types:
        raise InputError(f"--derived {' '.join(object_kinds(sc.derived))} adds columns to object-centric velocity "
                         f"rows, and this run models {', '.join(types)}; drop it or use --features objects with velocity")
    if "activity" in (sc.derived or ()) and not derived_frame_types(sc.derived, types):
        raise InputError(f"--derived activity is computed from flowgrid features, and this run models "
                         f"{', '.join(types)}; drop activity or add flowgrid (--features flowgrid, or "
                         "extractor.frame_features: [flowgrid])")
    types += derived_frame_types(sc.derived, types)
    frame_types += derived_frame_types(sc.derived, frame_types)
    train = [(item, prepare_tables(tabs, window, sc.derived, sc.derived_window))
             for item, tabs in load_tables(ds, "train", extractors, cache, progress=progress)]
    if cfg.detector.drop_weak_types and not cfg.detector.feature_types:  # object types; frame types were asked for
        own = tuple(t for t in types if t not in frame_types)
        types = drop_weak_types([tabs for _, tabs in train], own) + tuple(t for t in types if t in frame_types)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    from mulde.pipeline.threshold import split_calibration

    held = set(split_calibration(len(train), cfg.alerts.calibration_holdout, cfg.runtime.seed).tolist())
    calib = [tabs for k, (_, tabs) in enumerate(train) if k in held]
    try:
        if calib:
            # Calibrate alarm rates on videos a probe model never saw, then fit the run's model on
            # every video: its scores (and AUC) are those of a run without the hold-out, and its
            # thresholds, in training-standardised units, carry over from the probe.
            probe = tmp / ".calibration-probe"
            probe.mkdir()
            fit = [pair for k, pair in enumerate(train) if k not in held]
            log.info("calibration: a probe model on %d videos, scored on %d held-out normal videos", len(fit), len(calib))
            probe_info = _fit_types(cfg, ds, extractors, types, fit, probe, progress)
            spread = _held_out_spread(probe_info, probe, calib, held=True)
            _add_spread(probe_info, spread)
            calibration = _calibrate(cfg, probe_info, probe, calib, held=True)
            if not cfg.alerts.refit:  # the probe is the run's model: its files, config and run.json
                for f in probe.iterdir():
                    f.rename(tmp / f.name)
            shutil.rmtree(probe)
        if calib and not cfg.alerts.refit:
            log.info("alerts.refit is off: the probe fitted on %d of %d videos is the run's model", len(fit), len(train))
            info = probe_info
        else:
            info = _fit_types(cfg, ds, extractors, types, train, tmp, progress)
        if not calib:
            if cfg.scoring.combine.startswith("holdout"):
                log.warning("combine %s: no held-out videos (alerts.calibration_holdout is 0 or there is one "
                            "video), so each type is standardised on its training frames", cfg.scoring.combine)
            spread = _held_out_spread(info, tmp, [tabs for _, tabs in train], held=False)
        _add_spread(info, spread)
        if not calib:
            calibration = _calibrate(cfg, info, tmp, [tabs for _, tabs in train], held=False)
        info["calibration"] = calibration
        write_run_json(tmp, info)
        if out.exists():
            old = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.old"
            out.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def _calibrate(cfg: RunConfig, info: dict[str, Any], folder: Path, tables: list, held: bool) -> dict[str, Any]:
    """The causal score distribution of normal videos scored by the run in ``folder`` (alarm-rate thresholds)."""
    from mulde.detector.registry import load_detector
    from mulde.pipeline.score import TypeStats
    from mulde.pipeline.threshold import calibrate, held_out_scores

    types = info["feature_types"]
    detectors = {t: load_detector(folder / f"{t}.safetensors") for t in types}
    stats = {t: TypeStats(**info["stats"][t]) for t in types}
    scores = held_out_scores(tables, detectors, stats, float(cfg.scoring.smoothing_sigma or 0), cfg.alerts.smoothing,
                             rule=cfg.scoring.combine, levels=cfg.scoring.combine_levels)
    fps = (info.get("training_data") or {}).get("fps") or cfg.data.fps or 25.0
    if not held:
        log.warning("thresholds calibrated on the training videos themselves (alerts.calibration_holdout is 0 or "
                    "there is one video): alarm rates will be optimistic")
    return {**calibrate(scores, fps), "held_out": held}


def _held_out_spread(info: dict[str, Any], folder: Path, tables: list, held: bool) -> dict[str, dict[str, float]]:
    """Per type, where normal frames the run in ``folder`` did not see fall in its training
    z-scores (median and normal tail, :func:`~mulde.pipeline.score.held_out_spread`); with
    ``held`` false the tables are its own training videos, and the log line says so."""
    from mulde.detector.registry import load_detector

    out = {}
    for t in info["feature_types"]:
        det, st = load_detector(folder / f"{t}.safetensors"), TypeStats(**info["stats"][t])
        frames = []
        for tabs in tables:
            tab = tabs[t]
            rows = det.score_samples(tab.values) if len(tab) else np.zeros(0)
            frames.append(frame_max(tab, rows, tab.n_frames, st.fill))
        out[t] = held_out_spread(frames, st)
        log.info("%s on %s normal frames: median %.2f, 99th percentile %.2f training std above the "
                 "training mean", t, "held-out" if held else "its own training (no held-out videos)",
                 out[t]["held_center"], out[t]["held_center"] + out[t]["held_scale"])
    return out


def _add_spread(info: dict[str, Any], spread: dict[str, dict[str, float]]) -> None:
    for t, values in spread.items():
        info["stats"][t].update(values)


def _frame_scores(tables: list, rows: np.ndarray) -> list[np.ndarray]:
    """Each video's frame scores (max over its rows; inf where a frame has none) from the rows of
    all ``tables`` in order."""
    frames, start = [], 0
    for table in tables:
        frames.append(frame_max(table, rows[start:start + len(table)], table.n_frames, np.inf))
        start += len(table)
    return frames


def _out_of_fold_frames(cfg: RunConfig, tables: list, ftype: str, folds: int, progress: bool) -> list[np.ndarray]:
    """Every training video's frame scores from a model fitted without it (``folds`` models, each
    on the other folds of videos, configured as the run's own model, whose score scale they share).

    A frame-level feature describes the whole scene, so a model places normal frames of videos it
    did not see far above its own training frames (Ped2's flow grid: a median 26 training std),
    while object rows mix across videos; statistics from unseen videos measure such a type's
    votes on the scale test videos reach (``scoring.crossfit_folds``; benchmarks/RESULTS.md,
    session 11)."""
    order = np.random.default_rng(cfg.runtime.seed).permutation(len(tables))
    fold_of = np.empty(len(tables), int)
    fold_of[order] = np.arange(len(tables)) % folds
    out: list[np.ndarray] = [np.zeros(0)] * len(tables)
    for k in range(folds):
        inside = [i for i in range(len(tables)) if fold_of[i] != k]
        held = [i for i in range(len(tables)) if fold_of[i] == k]
        det = make_configured_detector(cfg)
        det.fit(np.concatenate([tables[i].values for i in inside], axis=0), progress=progress)
        rows = np.asarray(det.score_samples(np.concatenate([tables[i].values for i in held], axis=0)), np.float64)
        for i, f in zip(held, _frame_scores([tables[i] for i in held], rows)):
            out[i] = f
    log.info("%s: statistics from %d models, each scoring the training videos of one fold it did not see "
             "(scoring.crossfit_folds)", ftype, folds)
    return out


def _fit_types(cfg: RunConfig, ds: Any, extractors: list, types: tuple[str, ...], train: list,
               folder: Path, progress: bool) -> dict[str, Any]:
    extractor = extractors[0]
    stats, timings, ranges, det = {}, {}, {}, None
    crossfit_folds = min(int(cfg.scoring.crossfit_folds or 0), len(train))
    frame_level = {t for ex in extractors if ex.name != "objects" for t in ex.feature_types}  # one row per frame
    frame_level.update(derived_frame_types(cfg.scoring.derived, frame_level))
    crossfit = frame_level & set(types) if len(types) > 1 and crossfit_folds >= 2 else set()
    for ftype in types:
        tables = [tabs[ftype] for _, tabs in train]
        X = np.concatenate([t.values for t in tables], axis=0) if tables else np.zeros((0, 0))
        if len(X) == 0:
            raise InputError(f"no {ftype} features in the {ds.name} training split; nothing to train on "
                             "(check the detector settings or drop this type with --feature-types)")
        det = make_configured_detector(cfg)
        log.info("training %s on %d %s rows of dimension %d (%s)", cfg.detector.name, len(X), ftype, X.shape[1],
                 _describe(cfg, det))
        t0 = time.perf_counter()
        det.fit(X, progress=progress)
        timings[ftype] = time.perf_counter() - t0
        rows = np.asarray(det.score_samples(X), dtype=np.float64)
        frames = (_out_of_fold_frames(cfg, tables, ftype, crossfit_folds, progress) if ftype in crossfit
                  else _frame_scores(tables, rows))
        stats[ftype] = type_stats(frames, rows)
        z = (np.concatenate(frames) - stats[ftype].mean) / stats[ftype].std
        z = z[np.isfinite(z)]
        ranges[ftype] = {"z_p99": float(np.percentile(z, 99)), "z_max": float(z.max())} if len(z) else {}
        det.save(folder / f"{ftype}.safetensors")
    record = resolved_record(cfg, extractor, det)
    for ex in extractors[1:]:  # the frame extractors' options too, without touching the main one's
        if dataclasses.is_dataclass(getattr(ex, "cfg", None)):
            for key, value in public_options("extractor", ex.cfg).items():
                record.extractor_options.setdefault(key, value)
    write_config(record, folder)
    device = getattr(det, "device_", None) or getattr(extractor, "device", None)
    info = {
        "mulde_version": __version__,
        "dataset": ds.name,
        "root": str(Path(ds.root).resolve()),
        "features": cfg.extractor.features,
        "extractor": extractor.name,
        "extractor_key": extractor_key(extractor.name, extractor.config()),
        "extractor_config": extractor.config(),
        "frame_extractors": [{"name": ex.name, "key": extractor_key(ex.name, ex.config()), "config": ex.config(),
                              "feature_types": list(ex.feature_types)} for ex in extractors[1:]],
        "detector": cfg.detector.name,
        "feature_types": list(types),
        "stats": {t: s.to_dict() for t, s in stats.items()},
        "train_seconds": timings,
        "train_videos": len(train),
        "resolved": {"device": str(device) if device is not None else None, "preset": cfg.detector.preset,
                     "config_hash": record.hash()},
        "training_data": {**training_profile([item for item, _ in train], ds.default_fps), "score_range": ranges},
    }
    write_run_json(folder, info)
    return info
