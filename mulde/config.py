"""One typed run configuration: sections, layers, validation and the resolved record.

A run's options live in five sections, each with one job:

- ``data``: which dataset, where, and its frame rate;
- ``extractor``: the feature mode (``features``, ``backbone``) and the chosen extractor's own
  options (the fields of its config dataclass, e.g. ``ObjectExtractorConfig``);
- ``detector``: the density model (``name``), the ``preset``, the feature types to model, and
  the model's own options (the fields of e.g. ``MULDEConfig``);
- ``scoring``: how row scores become frame scores (smoothing, tracks);
- ``runtime``: device, cache, seed and the workers that run the job.
- ``alerts``: thresholds and events of live and causal scoring (``vad watch``).

Layers, later wins: built-in defaults (the dataclass defaults), the dataset's packaged file
(``mulde/configs/<dataset>.yaml``), the preset, ``--config FILE.yaml``, the flags, ``--opt``.
A layer may be nested (``detector: {lr: 1e-3}``), dotted (``detector.lr``) or flat (``lr``):
a flat key goes to the one section that has it. Every value is parsed and type-checked with
pydantic (YAML's ``1e-3`` is a string and becomes 0.001); an unknown key, an ambiguous one
(``amp`` is the extractor's and the detector's) or a wrong type is one :class:`InputError`
line naming the key, the layer and the fix. Old spellings (``units``, ``L``, ``imgsz``,
``detector_weights``, ``clip_step``, ...) still work and log a deprecation warning.

pydantic validates single values against the dataclasses' own type hints, so the schema is the
code's dataclasses, never a copy of them; jsonargparse would also build the CLI, but mulde's
CLI keeps hand-written help and ultralytics-style short flags, so only validation is borrowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import logging
import os
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from mulde.errors import InputError

log = logging.getLogger("mulde")

SECTIONS = ("data", "extractor", "detector", "scoring", "runtime", "alerts")


@dataclass
class DataConfig:
    """dataset: a registered reader name (case-insensitive); root: its folder (stored absolute);
    fps: frame rate of frame folders (None: the dataset's own)."""

    dataset: str | None = None
    root: str | None = None
    fps: float | None = None


@dataclass
class ExtractorSection:
    """features: ``objects`` or ``frames``; backbone: the frame-centric extractor;
    frame_features: frame-centric extractors whose one-row-per-frame features are modelled as
    extra feature types beside the object types (``features: objects`` only; each extractor's
    tables are cached under its own key; see mulde/pipeline/extract.py)."""

    features: Literal["objects", "frames"] = "objects"
    backbone: str = "flowgrid"
    frame_features: tuple[Literal["flowgrid", "hiera_base_16x224", "hiera_base_plus_16x224",
                                  "hiera_large_16x224", "hiera_huge_16x224"], ...] = ()


@dataclass
class DetectorSection:
    """name: the density model; preset: ``auto`` (paper on a GPU, cpu on a CPU), ``paper``,
    ``cpu`` or ``test``; feature_types: the subset of the extractor's types to model."""

    name: Literal["mulde", "gmm", "knn", "msma"] = "mulde"
    preset: Literal["auto", "paper", "cpu", "test"] = "auto"
    feature_types: tuple[str, ...] | None = None
    # leave out a type whose training data shows no signal, e.g. unstable keypoints (mulde/pipeline/signal.py);
    # only when feature_types is not given
    drop_weak_types: bool = True


CombineRule = Literal["sum", "max", "holdout_sum", "holdout_max", "holdout_tail", "conformal"]
COMBINE_RULES: tuple[str, ...] = typing.get_args(CombineRule)
"""How feature types are merged (``scoring.combine``; each rule is in mulde/pipeline/score.py)."""
CombineLevels = Literal["max", "sum"]
COMBINE_LEVELS: tuple[str, ...] = typing.get_args(CombineLevels)


@dataclass
class ScoringConfig:
    """smoothing_sigma: temporal Gaussian in frames (0 = off); track_window: object velocity
    rows averaged over +-N frames of their IoU track (0 = off)."""

    smoothing_sigma: float = 3.0
    track_window: int = 0
    # derived: object columns computed from boxes and frame indices (mulde/pipeline/derived.py):
    # "track" (displacement, straightness, dwell over +-derived_window frames of the IoU track)
    # and/or "position" (box centre and height); "activity" adds a frame-level type beside the
    # flow grid (how much of the scene moves, how fast); combine: how feature types are merged
    # (mulde/pipeline/score.py: "sum" of clipped z-scores, or "max" of z-scores; "holdout_sum" /
    # "holdout_max" standardise each type on held-out normal training frames instead; "holdout_tail"
    # sums each type's surprise, -log10 of the fraction of those frames that score higher;
    # "conformal" sums -log10 of each type's conformal p-value against its own training frames).
    # combine_levels: in a run with object types and frame-level types (extractor.frame_features),
    # each level is merged by `combine` and the two levels' scores by "max" (the default: a type
    # blind to an anomaly kind, such as the flow grid to a stop, then adds no noise to the level
    # that sees it) or "sum" (one merge over every type, as runs trained before it was added).
    # crossfit_folds: K >= 2 gives each frame-level type (flow grid, Hiera, activity) of a run of
    # several types its statistics from training videos a model did not see: K more models per
    # such type, each fitted without one of K folds of the videos (0 = off, the default).
    derived: tuple[Literal["track", "position", "activity"], ...] = ()
    derived_window: int = 12
    combine: CombineRule = "conformal"
    combine_levels: CombineLevels = "max"
    crossfit_folds: int = 0


@dataclass
class RuntimeConfig:
    """device: auto | cpu | cuda | cuda:N; cache: features and weights (None: $MULDE_CACHE or
    ~/.cache/mulde); seed; workers: parallel extraction/scoring workers (None: one per GPU, else
    1); executor: local processes or ray; ray_address: join a Ray cluster; shard: ``K/N`` does
    only the K-th of N parts of the video list; retries: attempts after a worker dies."""

    device: str = "auto"
    cache: str | None = None
    seed: int = 0
    workers: int | None = None
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    shard: str | None = None
    retries: int = 2


@dataclass
class AlertsConfig:
    """Live scoring and events (``vad watch``, ``vad score --causal/--events``; see
    mulde.pipeline.events and mulde.pipeline.threshold). alarm_rate: false alarms per hour of
    normal video that sets the threshold (None: 1 per hour) or threshold: the score level itself;
    min_duration / cool_down: seconds above the threshold to open an event / below it to close
    one; smoothing: causal filter (one-sided ``gaussian`` or ``exponential``, sigma =
    scoring.smoothing_sigma); calibration_holdout: fraction of the training videos kept out of
    a probe model's fit to calibrate alarm rates on; the run's model is then fitted on all videos
    (0: no probe, calibrate on the training videos, optimistic); refit: false keeps the probe
    as the run's model, so its held-out statistics (thresholds, ``holdout_*`` combine rules)
    are exactly its own rather than another fit's."""

    alarm_rate: float | None = None
    threshold: float | None = None
    min_duration: float = 0.5
    cool_down: float = 2.0
    smoothing: Literal["gaussian", "exponential"] = "gaussian"
    calibration_holdout: float = 0.2
    refit: bool = True


SECTION_CLASSES: dict[str, type] = {"data": DataConfig, "extractor": ExtractorSection,
                                    "detector": DetectorSection, "scoring": ScoringConfig,
                                    "runtime": RuntimeConfig,
                                    "alerts": AlertsConfig}

# Component fields whose value comes from the runtime section, never from the user per component.
RUNTIME_FIELDS = {"device", "seed", "cache"}
# Public name -> component field name, where the component's field name is ambiguous to users
# ("detector" is the density model; "clip" is CLIP; YOLO's and the window's options say so).
PUBLIC_NAMES: dict[str, dict[str, str]] = {
    "extractor": {"yolo_weights": "detector_weights", "yolo_classes": "classes", "yolo_conf": "conf",
                  "yolo_iou": "iou", "yolo_imgsz": "imgsz", "yolo_batch": "detector_batch",
                  "window_len": "clip_len", "window_stride": "frame_stride", "window_step": "clip_step",
                  "flowgrid_method": "method"},
    "detector": {},
}
# Old spelling -> its section and public name; accepted with a warning.
DEPRECATED: dict[str, tuple[str, str]] = {
    "units": ("detector", "hidden"), "L": ("detector", "n_levels"),
    "detector_weights": ("extractor", "yolo_weights"), "classes": ("extractor", "yolo_classes"),
    "imgsz": ("extractor", "yolo_imgsz"), "conf": ("extractor", "yolo_conf"),
    "iou": ("extractor", "yolo_iou"), "detector_batch": ("extractor", "yolo_batch"),
    "clip_len": ("extractor", "window_len"), "clip_step": ("extractor", "window_step"),
    "frame_stride": ("extractor", "window_stride"), "extract_batch_size": ("extractor", "batch_size"),
    "method": ("extractor", "flowgrid_method"),
}
# Flat names found in several sections that keep their historical section.
FLAT_HOME = {"batch_size": "detector"}

# Presets set detector options only. The paper's values are the dataclass defaults (GPU users),
# with σ itself as the network's noise input, as in the authors' code: at 2 x 4096 a 64-d
# manifold scored 78.3 +- 1.0 AUC with σ against 72.6 +- 2.2 with log σ (the authors' code: 77.5),
# and Ped2 95.6 against 95.2 on seeds 0-1 (H100, benchmarks/RESULTS.md, session 20). "cpu" makes
# a 2-core machine finish in minutes (a 512-wide network is ~60x cheaper per step than 4096; a
# larger lr and smaller batch reach the same loss in 2000 steps on features of a few hundred
# dimensions) and keeps log σ, which measured better at that width; "test" is for tests.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"conditioning": "sigma"},
    "cpu": {"hidden": [512, 512], "batch_size": 512, "steps": 2000, "lr": 1e-3},
    "test": {"hidden": [128, 128], "batch_size": 256, "steps": 300, "lr": 1e-3},
}


# ----------------------------------------------------------------------------- the schema


@dataclass(frozen=True)
class Option:
    """One valid key: its section, public name, type, and which components own it."""

    section: str
    name: str
    type: Any
    owners: frozenset[str] = frozenset()
    help: str = ""


def _component_configs(section: str) -> dict[str, type]:
    """Registered component name -> its config dataclass (extractors or detectors)."""
    if section == "extractor":
        from mulde.extractors.registry import EXTRACTORS, extractor_class

        out = {}
        for name in EXTRACTORS:
            cls = extractor_class(name)
            conf = getattr(cls, "config_class", None) or getattr(
                __import__(cls.__module__, fromlist=["_"]), f"{cls.__name__}Config")
            out[name] = conf
        return out
    from mulde.detector.registry import DETECTORS

    return {name: cls.config_class for name, cls in DETECTORS.items()}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)  # each field's annotation read in the module of the class that declares it


@functools.lru_cache(maxsize=1)
def schema() -> dict[str, dict[str, Option]]:
    """Every valid key per section (own fields plus the components' config fields)."""
    out: dict[str, dict[str, Option]] = {}
    for section, cls in SECTION_CLASSES.items():
        hints = _hints(cls)
        out[section] = {f.name: Option(section, f.name, hints[f.name]) for f in dataclasses.fields(cls)}
    for section in ("extractor", "detector"):
        public = {v: k for k, v in PUBLIC_NAMES[section].items()}
        for comp, conf in _component_configs(section).items():
            hints = _hints(conf)
            for f in dataclasses.fields(conf):
                if f.name in RUNTIME_FIELDS:
                    continue
                name = public.get(f.name, f.name)
                prev = out[section].get(name)
                owners = (prev.owners if prev else frozenset()) | {comp}
                out[section][name] = Option(section, name, prev.type if prev else hints[f.name], owners)
    return out


def all_keys() -> list[str]:
    """Every valid key, flat and dotted (for suggestions and docs)."""
    keys = []
    for section, opts in schema().items():
        keys += list(opts) + [f"{section}.{k}" for k in opts]
    return keys + list(DEPRECATED)


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


@functools.cache
def _adapter(tp: Any):
    from pydantic import ConfigDict, TypeAdapter

    try:
        return TypeAdapter(tp, config=ConfigDict(arbitrary_types_allowed=True))
    except Exception:  # a type pydantic cannot model (dataclass configs, callables): accept as is
        return TypeAdapter(Any)


def _is_tuple(tp: Any) -> bool:
    args = typing.get_args(tp)
    return typing.get_origin(tp) is tuple or any(typing.get_origin(a) is tuple for a in args)


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return "None" if tp is type(None) else tp.__name__
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    return str(tp).replace("typing.", "").replace("NoneType", "None")


def check_value(opt: Option, value: Any, layer: str) -> Any:
    """Parse and type-check one value (YAML strings such as ``1e-3`` become numbers)."""
    from pydantic import ValidationError

    if _is_tuple(opt.type) and value is not None and not isinstance(value, (list, tuple)):
        value = [value]
    try:
        return _adapter(opt.type).validate_python(value)
    except ValidationError as exc:
        why = exc.errors()[0].get("msg", "invalid value")
        raise InputError(f"option {opt.section}.{opt.name} = {value!r} ({layer}): expected {_type_name(opt.type)} "
                         f"({why}); fix the value") from None


def _route(key: str, layer: str) -> Option:
    """The option a key names: dotted, flat (one section has it) or an old spelling."""
    key = str(key).replace("-", "_")
    opts = schema()
    if "." in key:
        section, name = key.split(".", 1)
        if section not in opts:
            raise InputError(f"unknown section {section!r} in {key!r} ({layer}){_suggest(section, SECTIONS)}; "
                             f"sections are {', '.join(SECTIONS)}")
        if name in DEPRECATED and DEPRECATED[name][0] == section:
            return _deprecated(name, layer)
        if name not in opts[section]:
            raise InputError(f"unknown option {key!r} in {layer}{_suggest(name, opts[section])}; "
                             "the valid keys are in `vad <command> --help` and README 'Configuration'")
        return opts[section][name]
    if key in DEPRECATED:
        return _deprecated(key, layer)
    homes = [s for s in SECTIONS if key in opts[s]]
    if len(homes) == 1:
        return opts[homes[0]][key]
    if len(homes) > 1:
        if key in FLAT_HOME:
            return opts[FLAT_HOME[key]][key]
        raise InputError(f"option {key!r} ({layer}) is ambiguous: it is an option of "
                         f"{' and '.join(homes)}; write {' or '.join(f'{s}.{key}' for s in homes)}")
    raise InputError(f"unknown option {key!r} in {layer}{_suggest(key, all_keys())}; "
                     "the valid keys are in `vad <command> --help` and README 'Configuration'")


_deprecated_seen: set[str] = set()


def _deprecated(old: str, layer: str) -> Option:
    section, new = DEPRECATED[old]
    if old not in _deprecated_seen:  # once per process
        _deprecated_seen.add(old)
        log.warning("option %r (%s) is deprecated; write %r (or %s.%s)", old, layer, new, section, new)
    return schema()[section][new]


def parse_layer(data: Mapping[str, Any] | None, layer: str) -> dict[str, dict[str, Any]]:
    """A flat, dotted or nested mapping -> {section: {name: checked value}}."""
    out: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for key, value in (data or {}).items():
        key = str(key).replace("-", "_")
        if key in SECTIONS and isinstance(value, Mapping):
            for sub, subval in value.items():
                opt = _route(f"{key}.{sub}", layer)
                out[opt.section][opt.name] = check_value(opt, subval, layer)
            continue
        if key == "detector" and isinstance(value, str):  # `detector: knn`: the density model
            key = "detector.name"
        opt = _route(key, layer)
        out[opt.section][opt.name] = check_value(opt, value, layer)
    return out


# ----------------------------------------------------------------------------- the config


@dataclass
class RunConfig:
    """A resolved run configuration: typed sections plus the chosen components' options."""

    data: DataConfig = field(default_factory=DataConfig)
    extractor: ExtractorSection = field(default_factory=ExtractorSection)
    detector: DetectorSection = field(default_factory=DetectorSection)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    # component options given in some layer (public names), beyond the section's own fields
    extractor_options: dict[str, Any] = field(default_factory=dict)
    detector_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_layers(cls, layers: list[dict[str, dict[str, Any]]]) -> RunConfig:
        cfg = cls()
        for layer in layers:
            for section, values in layer.items():
                own = {f.name for f in dataclasses.fields(SECTION_CLASSES[section])}
                for name, value in values.items():
                    if name in own:
                        setattr(getattr(cfg, section), name, value)
                    else:
                        getattr(cfg, f"{section}_options")[name] = value
        return cfg

    # -- what the components get ---------------------------------------------------------
    def extractor_name(self) -> str:
        """The registered extractor these options choose (``objects``, ``flowgrid`` or ``hiera``)."""
        if self.extractor.features == "objects":
            return "objects"
        backbone = str(self.extractor.backbone or "flowgrid")
        if backbone == "flowgrid":
            return "flowgrid"
        if backbone.startswith("hiera"):
            return "hiera"
        raise InputError(f"unknown frame backbone {backbone!r} (extractor.backbone); choose flowgrid, "
                         "hiera_base_16x224, hiera_base_plus_16x224, hiera_large_16x224 or hiera_huge_16x224")

    def component_kwargs(self, section: str, name: str) -> dict[str, Any]:
        """Keyword options for component ``name`` of a section: its own fields, runtime filled in."""
        conf = _component_configs(section)[name]
        fields = {f.name for f in dataclasses.fields(conf)}
        rename = PUBLIC_NAMES[section]
        out = {}
        for public, value in getattr(self, f"{section}_options").items():
            fname = rename.get(public, public)
            if fname in fields and schema()[section][public].owners >= {name}:
                out[fname] = value
        runtime = {"device": self.runtime.device, "seed": self.runtime.seed, "cache": self.runtime.cache}
        for fname in RUNTIME_FIELDS & fields:
            if runtime[fname] is not None:
                out[fname] = runtime[fname]
        if section == "extractor" and name == "hiera":
            out["model"] = self.extractor.backbone
        return out

    # -- records -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Nested, JSON/YAML-friendly; reading it back gives the same config."""
        out = {s: dataclasses.asdict(getattr(self, s)) for s in SECTIONS}
        out["extractor"].update(self.extractor_options)
        out["detector"].update(self.detector_options)
        return json.loads(json.dumps(out, default=str))

    def hash(self) -> str:
        return config_hash(self.to_dict())


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping; a missing or malformed file is one clear error."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: config file not found; pass --config with an existing YAML file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({str(exc).splitlines()[0]}); fix the file") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of option: value at the top level")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def dataset_defaults(name: str | None) -> dict[str, Any]:
    """The packaged per-dataset defaults (empty for names without a file); names are case-insensitive."""
    if not name:
        return {}
    res = resources.files("mulde.configs").joinpath(f"{str(name).strip().lower()}.yaml")
    if not res.is_file():
        return {}
    return yaml.safe_load(res.read_text()) or {}


def _pick(layers: list[dict[str, dict[str, Any]]], section: str, name: str, default: Any = None) -> Any:
    for layer in reversed(layers):
        if name in layer[section]:
            return layer[section][name]
    return default


def cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover - torch is a dependency
        return False


def resolve_preset(preset: str, device: str) -> str:
    """``auto`` -> ``paper`` when the run's device is a GPU, else ``cpu`` (logged once)."""
    if preset != "auto":
        return preset
    gpu = str(device).startswith("cuda") or (device == "auto" and cuda_available())
    chosen = "paper" if gpu else "cpu"
    if chosen in _deprecated_seen:
        return chosen
    _deprecated_seen.add(chosen)  # one log line per process
    log.info("preset auto -> %s (%s); pass --preset %s for the other", chosen,
             "GPU: the paper's 2x4096 network" if gpu else "no GPU: a 2x512 network, minutes on a CPU",
             "cpu" if gpu else "paper")
    return chosen


def resolve_config(flags: Mapping[str, Any] | None = None, config_file: str | os.PathLike | None = None,
                   base: Mapping[str, Any] | None = None, opt: Iterable[tuple[str, Any]] = (),
                   packaged: bool = True) -> RunConfig:
    """Merge the layers into one checked :class:`RunConfig`.

    ``base`` is the lowest user layer (the demo's options, or a trained run's own config with
    ``packaged=False`` so no dataset file or preset is applied again); ``flags`` holds only
    options the user gave; ``opt`` the ``--opt KEY=VALUE`` pairs, applied last.
    """
    user: list[dict[str, dict[str, Any]]] = []
    if base:
        user.append(parse_layer(base, "built-in options" if packaged else "the run's config.yaml"))
    if config_file:
        user.append(parse_layer(load_yaml(config_file), f"--config {config_file}"))
    user.append(parse_layer({k: v for k, v in (flags or {}).items() if v is not None}, "command line"))
    opts: dict[str, Any] = {}
    for key, value in opt:
        opts[key] = value
    user.append(parse_layer(opts, "--opt"))
    layers = list(user)
    if packaged:
        dataset = _pick(user, "data", "dataset")
        pre = [parse_layer(dataset_defaults(dataset), f"mulde/configs/{str(dataset).lower()}.yaml")] if dataset else []
        if pre:  # a dataset's additions to its object runs; derived columns extend velocity rows
            frames = _pick(pre + user, "extractor", "features") == "frames"
            no_velocity = "velocity" not in (_pick(user, "detector", "feature_types") or ("velocity",))
            for section, name, drop in (("extractor", "frame_features", frames),
                                        ("scoring", "derived", frames or no_velocity)):
                if drop and _pick(user, section, name) is None:
                    pre[0][section].pop(name, None)
        preset = resolve_preset(_pick(pre + user, "detector", "preset", "auto"),
                                _pick(user, "runtime", "device", "auto"))
        pre.append(parse_layer(PRESETS[preset], f"preset {preset}"))
        layers = pre + user
        cfg = RunConfig.from_layers(layers)
        cfg.detector.preset = preset
    else:
        cfg = RunConfig.from_layers(layers)
    return _normalise(cfg)


def _normalise(cfg: RunConfig) -> RunConfig:
    if cfg.data.dataset:
        from mulde.datasets.registry import DATASETS

        name = str(cfg.data.dataset).strip().lower()
        if name not in DATASETS:
            raise InputError(f"unknown dataset {cfg.data.dataset!r}{_suggest(name, DATASETS)}; choose one of "
                             f"{', '.join(DATASETS)}")
        cfg.data.dataset = name
    if cfg.data.root:
        cfg.data.root = str(Path(cfg.data.root).expanduser().resolve())
    if cfg.runtime.cache:
        cfg.runtime.cache = str(Path(cfg.runtime.cache).expanduser().resolve())
    if cfg.runtime.shard is not None:
        parse_shard(cfg.runtime.shard)
    cfg.extractor_name()  # validates the backbone
    if cfg.scoring.crossfit_folds < 0 or cfg.scoring.crossfit_folds == 1:
        raise InputError(f"scoring.crossfit_folds = {cfg.scoring.crossfit_folds}: use 0 (off) or a number of folds >= 2")
    _check_detector_options(cfg)
    return cfg


def _check_detector_options(cfg: RunConfig) -> None:
    """Build the detector's config once so a bad value (``ema_decay=2``) fails before any work."""
    from mulde.detector.base import make_config

    conf = _component_configs("detector").get(str(cfg.detector.name).lower())
    if conf is None:
        return  # an unknown name gets its own error where the detector is made
    try:
        make_config(conf, None, cfg.component_kwargs("detector", cfg.detector.name))
    except InputError as err:
        raise InputError(f"detector options: {err}") from None


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N`` -> (K, N) with 0 <= K < N (K is 0-based, as SLURM_ARRAY_TASK_ID usually is)."""
    try:
        k, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise InputError(f"runtime.shard {text!r}: expected K/N, e.g. 0/4 for the first of 4 parts") from None
    if not (n >= 1 and 0 <= k < n):
        raise InputError(f"runtime.shard {text!r}: need 0 <= K < N (K is 0-based)")
    return k, n


def config_hash(obj: Any, n: int = 12) -> str:
    """A short stable hash of a JSON-serialisable object."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:n]


def write_config(cfg: RunConfig | Mapping[str, Any], folder: str | os.PathLike, name: str = "config.yaml") -> Path:
    """Write the resolved config beside an output (atomically)."""
    from mulde.atomic import atomic_write

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = cfg.to_dict() if isinstance(cfg, RunConfig) else json.loads(json.dumps(dict(cfg), default=str))
    return atomic_write(folder / name, yaml.safe_dump(data, sort_keys=False))


def public_options(section: str, conf: Any) -> dict[str, Any]:
    """A component's full config dataclass as public option names (runtime fields left out)."""
    public = {v: k for k, v in PUBLIC_NAMES[section].items()}
    raw = json.loads(json.dumps(dataclasses.asdict(conf), default=str))
    return {public.get(k, k): v for k, v in raw.items() if k not in RUNTIME_FIELDS}


def resolved_record(cfg: RunConfig, extractor: Any, detector: Any | None = None) -> RunConfig:
    """``cfg`` with every option of the chosen extractor and detector written out and every
    "auto" the components decided (CLIP/pose on or off, the flow method) fixed, so that
    evaluating or scoring with the record rebuilds exactly the same components."""
    out = dataclasses.replace(cfg, extractor_options=dict(cfg.extractor_options),
                              detector_options=dict(cfg.detector_options))
    if getattr(extractor, "cfg", None) is not None and dataclasses.is_dataclass(extractor.cfg):
        full = public_options("extractor", extractor.cfg)
        for decided in ("deep", "pose"):  # tri-state options the extractor resolved from the weights on disk
            if decided in full and hasattr(extractor, decided):
                full[decided] = bool(getattr(extractor, decided))
        out.extractor_options.update(full)
    if detector is not None and dataclasses.is_dataclass(getattr(detector, "config", None)):
        out.detector_options.update(public_options("detector", detector.config))
    return out
