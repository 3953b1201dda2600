"""Extractor registry: a short name to a class, imported lazily (like timm's model registry)."""

from __future__ import annotations

import importlib
from typing import Any

from mulde.errors import InputError

# name -> "module:Class"; each class takes keyword options and exposes the Extractor protocol.
EXTRACTORS: dict[str, str] = {
    "objects": "mulde.extractors.objects:ObjectExtractor",
    "flowgrid": "mulde.extractors.flowgrid:FlowGridExtractor",
    "hiera": "mulde.extractors.hiera:HieraExtractor",
}


def list_extractors() -> list[str]:
    return sorted(EXTRACTORS)


def extractor_class(name: str) -> type:
    if name not in EXTRACTORS:
        raise InputError(f"unknown extractor {name!r}; choose one of {', '.join(list_extractors())}")
    module, cls = EXTRACTORS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def create_extractor(name: str, **options: Any):
    """Build an extractor by name with keyword options (unknown options are an error)."""
    return extractor_class(name)(**options)
