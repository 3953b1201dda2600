"""Detectors by name, and loading any saved detector by the kind stored in its file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mulde.detector.base import Detector, read_model_header
from mulde.detector.baselines import GMMDetector, KNNDetector, MSMADetector
from mulde.detector.mulde import MULDE
from mulde.errors import InputError, ModelFileError

DETECTORS: dict[str, type[Detector]] = {
    "mulde": MULDE,
    "gmm": GMMDetector,
    "knn": KNNDetector,
    "msma": MSMADetector,
}


def make_detector(name: str, **params: Any) -> Detector:
    """A new detector ``name`` with config overrides ``params`` (InputError if unknown)."""
    cls = DETECTORS.get(str(name).lower())
    if cls is None:
        raise InputError(f"unknown detector {name!r}; choose from {', '.join(DETECTORS)}")
    return cls(**params)


def load_detector(path: str | Path, device: str | None = None) -> Detector:
    """Load any saved detector, dispatching on the ``kind`` in its file header."""
    kind = read_model_header(path)["kind"]
    cls = DETECTORS.get(kind)
    if cls is None:
        raise ModelFileError(
            f"{path}: unknown detector kind {kind!r} (this mulde knows {', '.join(DETECTORS)})"
        )
    return cls.load(path, device=device)
