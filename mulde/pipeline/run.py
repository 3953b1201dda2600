"""A trained run directory: resolved config, one detector file per feature type, and stats.

Layout::

    run_dir/config.yaml              the resolved config of ``vad train``
    run_dir/run.json                 version, extractor key(s), feature types, training stats
    run_dir/<feature_type>.safetensors   one detector per feature type

``vad evaluate`` and ``vad score`` need nothing else.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mulde.atomic import atomic_write
from mulde.config import RunConfig, resolve_config
from mulde.errors import InputError, ModelFileError
from mulde.pipeline.derived import DERIVED_KINDS, derived_frame_types
from mulde.pipeline.score import TypeStats

log = logging.getLogger(__name__)

RUN_FORMAT = 2  # 2: nested typed config.yaml with every decided option


@dataclass
class Run:
    folder: Path
    config: dict[str, Any]
    extractor: str
    extractor_key: str
    feature_types: tuple[str, ...]
    stats: dict[str, TypeStats]
    detectors: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def detector_path(self, ftype: str) -> Path:
        return self.folder / f"{ftype}.safetensors"

    @property
    def frame_extractors(self) -> list[dict[str, Any]]:
        """The frame-level extractors modelled beside the main one (``extractor.frame_features``):
        name, cache key, config and feature types of each; empty for a one-extractor run."""
        return list(self.info.get("frame_extractors") or [])


def write_run_json(folder: Path, info: dict[str, Any]) -> Path:
    path = folder / "run.json"
    return atomic_write(path, json.dumps({"format": RUN_FORMAT, **info}, indent=2, default=str))


def load_run(folder: str | os.PathLike, device: str | None = None) -> Run:
    """Open a run directory written by ``vad train`` and load its detectors."""
    folder = Path(folder).expanduser()
    meta = folder / "run.json"
    if not meta.is_file():
        raise ModelFileError(f"{folder}: not a trained run (no run.json); pass the --out folder of `vad train`")
    try:
        info = json.loads(meta.read_text())
        config = yaml.safe_load((folder / "config.yaml").read_text()) or {}
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ModelFileError(f"{meta}: unreadable run metadata ({type(exc).__name__}); retrain with `vad train`") from exc
    if info.get("format") != RUN_FORMAT:
        raise ModelFileError(f"{meta}: run format {info.get('format')} is not supported by this mulde (expects {RUN_FORMAT}); retrain")
    from mulde.detector.registry import load_detector

    run = Run(folder=folder, config=config, extractor=info["extractor"], extractor_key=info["extractor_key"],
              feature_types=tuple(info["feature_types"]),
              stats={t: TypeStats(**s) for t, s in info["stats"].items()}, info=info)
    for ftype in run.feature_types:
        path = run.detector_path(ftype)
        if not path.is_file():
            raise ModelFileError(f"{path}: detector file missing from the run; retrain with `vad train`")
        run.detectors[ftype] = load_detector(path, device=device) if device else load_detector(path)
    return run


def requested_device(overrides: Mapping[str, Any] | None) -> str | None:
    """The device given now (flat, dotted or nested), for loading the run's detectors."""
    o = overrides or {}
    return o.get("device") or (o.get("runtime") or {}).get("device") or o.get("runtime.device")


def run_config(run: Run, overrides: Mapping[str, Any] | None = None, config_file: str | None = None,
               opt: Iterable[tuple[str, Any]] = ()) -> RunConfig:
    """The run's recorded configuration with the options given now (device, cache, smoothing, ...).

    No dataset file or preset is applied again: the record already holds every decided value.
    """
    base = run.config
    scoring = base.get("scoring") or {}
    if "combine_levels" not in scoring:  # trained before the option: one merge over every type
        base = {**base, "scoring": {**scoring, "combine_levels": "sum"}}
    return resolve_config(overrides, config_file=config_file, base=base, opt=opt, packaged=False)


def check_features(run: Run, extractors: Any) -> None:
    """Fail with one line naming what changed when ``extractors`` (one, or the list of
    :func:`~mulde.pipeline.extract.build_extractors`) would not reproduce the run's features, or
    would not produce every feature type the run models (overrides that drop an
    ``extractor.frame_features`` entry the run was trained with)."""
    extractors = list(extractors) if isinstance(extractors, (list, tuple)) else [extractors]
    made = {t for ex in extractors for t in ex.feature_types}
    made.update(derived_frame_types(DERIVED_KINDS, made))  # the types computed from these tables
    missing = [t for t in run.feature_types if t not in made]
    if missing:
        raise InputError(f"{run.folder}: the run models {', '.join(missing)} features, which "
                         f"{' + '.join(ex.name for ex in extractors)} here does not compute; drop the overriding "
                         "extractor options (frame_features, features, backbone) or retrain")
    recorded = {run.extractor: (run.extractor_key, run.info.get("extractor_config") or {})}
    for fe in run.frame_extractors:
        recorded.setdefault(fe["name"], (fe["key"], fe.get("config") or {}))
    for ex in extractors:
        key, then = recorded.get(ex.name, (None, {}))
        _check_one(run, ex, key, then)


EXECUTION_KEYS = ("amp", "yolo_runtime", "precision")  # how the features are computed, not which


def _precision(config: dict[str, Any]) -> str:
    """fp16, bf16 or fp32: what an extractor config's models compute in."""
    if config.get("amp"):
        return "fp16"
    runtime = str(config.get("yolo_runtime") or config.get("precision") or "fp32")
    return runtime.rsplit("-", 1)[-1] if runtime.endswith(("bf16", "fp16")) else "fp32"


def _check_one(run: Run, extractor: Any, recorded_key: str | None, then: dict[str, Any]) -> None:
    from mulde.pipeline.cache import extractor_key

    now = extractor.config()  # hashes weight files: once
    if extractor_key(extractor.name, now) == recorded_key:
        return
    changed = [f"{k}: {then.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(then) | set(now))
               if then.get(k) != now.get(k)]
    if changed and all(c.split(":")[0] in EXECUTION_KEYS for c in changed):
        was, is_ = _precision(then), _precision(now)
        if was == is_:  # YOLO in PyTorch or ONNX Runtime: the same fp32 boxes (< 0.001 px apart)
            log.info("YOLO runs in %s here and ran in %s for training: the same fp32 detections",
                     now.get("yolo_runtime") or "torch", then.get("yolo_runtime") or "torch")
        else:  # a run trained on a GPU scored on a CPU, or the other way round
            log.warning("%s: the models ran in %s for training and run in %s here (%s): the same "
                        "features up to rounding, so scores may shift slightly", run.folder, was, is_,
                        "; ".join(changed))
        return
    what = "; ".join(changed) if changed else f"mulde {run.info.get('mulde_version')} -> this version"
    raise InputError(f"{run.folder}: these features differ from the ones the run was trained on ({what}); "
                     "restore them (drop the overriding options, put back the same weight files) or retrain")
