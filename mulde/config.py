"""Run configuration: one flat dict of options, resolved in layers.

Order (later wins): the built-in defaults below, the dataset's packaged defaults
(``mulde/configs/<dataset>.yaml``), the preset (``paper`` | ``cpu`` | ``test``), a user's
``--config FILE.yaml``, and finally the options given on the command line. YAML keys are the
option names of the CLI with ``_`` for ``-`` (``sigma_low``, ``units``, ``gmm_components``). The
resolved dict is written beside every output as ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mulde.errors import InputError

# Options every run has; dataset files and presets override them.
DEFAULTS: dict[str, Any] = {
    "dataset": None,
    "root": None,
    "cache": None,
    "device": "auto",
    "seed": 0,
    "features": "objects",
    "backbone": "flowgrid",
    "feature_types": None,
    "detector": "mulde",
    "preset": "paper",
    "smoothing_sigma": 3.0,
    "track_window": 0,
    "fps": None,
}

# Presets only touch detector hyper-parameters: the paper's values stay the defaults for GPU
# users; "cpu" makes a 2-core machine finish in minutes; "test" is for unit/e2e tests.
# A 512-wide network is ~60x cheaper per step than 4096; with a larger lr and a smaller batch
# 2000 steps suffice for features of a few hundred dimensions.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "cpu": {"units": [512, 512], "batch_size": 512, "steps": 2000, "lr": 1e-3},
    "test": {"units": [128, 128], "batch_size": 256, "steps": 300, "lr": 1e-3},
}

# CLI/YAML name -> detector-config field name, where they differ.
DETECTOR_ALIASES = {"units": "hidden", "L": "n_levels"}
# Training options that must never reach an extractor of the same field name.
DETECTOR_KEYS = {"units", "hidden", "L", "n_levels", "beta", "sigma_low", "sigma_high", "lr",
                 "batch_size", "steps", "epochs", "gmm_components", "k", "holdout"}
# CLI/YAML name -> extractor-config field name, where they differ.
EXTRACTOR_ALIASES = {"extract_batch_size": "batch_size"}


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
    """The packaged per-dataset defaults (empty for names without a file)."""
    if not name:
        return {}
    res = resources.files("mulde.configs").joinpath(f"{name}.yaml")
    if not res.is_file():
        return {}
    return yaml.safe_load(res.read_text()) or {}


def resolve_config(cli: dict[str, Any], config_file: str | os.PathLike | None = None,
                   base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Merge the layers into one dict; ``cli`` holds only options the user actually gave."""
    user_file = load_yaml(config_file) if config_file else {}
    given = {k: v for k, v in cli.items() if v is not None}
    layered = {**DEFAULTS, **(base or {})}
    name = given.get("dataset", user_file.get("dataset", layered.get("dataset")))
    layered.update(dataset_defaults(name))
    preset = given.get("preset", user_file.get("preset", layered.get("preset", "paper")))
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    layered.update(PRESETS[preset])
    layered.update(user_file)
    layered.update(given)
    layered["preset"] = preset
    return layered


def select_options(cfg: dict[str, Any], fields: set[str],
                   aliases: dict[str, str] | None = None) -> dict[str, Any]:
    """The entries of ``cfg`` that name a field of a config class (after aliasing)."""
    aliases = aliases or {}
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        name = aliases.get(key, key)
        if name in fields and value is not None:
            out[name] = tuple(value) if isinstance(value, list) else value
    return out


def config_fields(cls: type) -> set[str]:
    """Option names a class accepts: its dataclass config's fields, else its __init__ parameters."""
    conf = getattr(cls, "config_class", None)
    if conf is None:
        module = inspect.getmodule(cls)
        conf = getattr(module, f"{cls.__name__}Config", None)
        if conf is None and cls.__name__.endswith("Detector"):
            conf = getattr(module, f"{cls.__name__[:-len('Detector')]}Config", None)
    if conf is not None and dataclasses.is_dataclass(conf):
        return {f.name for f in dataclasses.fields(conf)}
    params = inspect.signature(cls.__init__).parameters
    skip = (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    return {p for p, v in params.items() if p != "self" and v.kind not in skip}


def config_hash(obj: Any, n: int = 12) -> str:
    """A short stable hash of a JSON-serialisable object."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:n]


def write_config(cfg: dict[str, Any], folder: str | os.PathLike, name: str = "config.yaml") -> Path:
    """Write the resolved config beside an output (atomically)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    tmp = path.with_suffix(path.suffix + ".tmp")
    clean = json.loads(json.dumps(cfg, default=str))
    tmp.write_text(yaml.safe_dump(clean, sort_keys=True))
    os.replace(tmp, path)
    return path
