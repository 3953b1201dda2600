"""All pretrained weights the extractors know, for ``vad weights list`` and ``vad weights download``.

Each loader module exposes ``WEIGHTS`` (name -> description), ``local_weights_path(name, cache)``
and ``download_weights(name, cache, progress)``; this module only gathers them.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from mulde.errors import InputError

LOADER_MODULES = ("mulde.extractors.hiera", "mulde.extractors.clip", "mulde.extractors.detection",
                  "mulde.extractors.flow")


def _loaders() -> dict[str, ModuleType]:
    """Weight name -> the module that loads it."""
    out: dict[str, ModuleType] = {}
    for name in LOADER_MODULES:
        module = importlib.import_module(name)
        for weight in getattr(module, "WEIGHTS", {}):
            out[weight] = module
    return out


def list_weights(cache: str | None = None) -> list[dict[str, Any]]:
    """Every known weight with its description, local path and whether it is present."""
    rows = []
    for weight, module in _loaders().items():
        path = Path(module.local_weights_path(weight, cache))
        rows.append({"name": weight, "description": module.WEIGHTS[weight], "path": str(path),
                     "present": path.is_file()})
    return rows


def download(names: list[str] | None, cache: str | None = None, progress: bool = True) -> list[tuple[str, Path]]:
    """Fetch the named weights (all when ``names`` is None) into the cache; returns their paths."""
    loaders = _loaders()
    names = list(loaders) if names is None else names
    unknown = [n for n in names if n not in loaders]
    if unknown:
        raise InputError(f"unknown weights {', '.join(unknown)}; choose from {', '.join(loaders)}")
    return [(n, Path(loaders[n].download_weights(n, cache=cache, progress=progress))) for n in names]
