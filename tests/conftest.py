"""Shared test set-up: offline hubs, a non-interactive plot backend, and the real-data fixture."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` beside the repo; tests that need it skip on a user's machine."""
    if not (SHARED_DATA / "ucsd_ped2").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (only present in the project's workspace)")
    return SHARED_DATA


@pytest.fixture
def cross_fitted(caplog):
    """``train(args, out, folds)``: ``vad train ARGS`` with ``scoring.crossfit_folds=folds`` into
    ``out``; returns the training log and the new run's per-type statistics."""
    from mulde.cli import main

    def train(args: list[str], out: Path, folds: int) -> tuple[str, dict]:
        with caplog.at_level("INFO", logger="mulde.pipeline.train"):
            assert main(["train", *args, "--opt", f"scoring.crossfit_folds={folds}", "--out", str(out), "-q"]) == 0
        return caplog.text, json.loads((out / "run.json").read_text())["stats"]

    return train


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never let a test write to the user's ~/.cache/mulde."""
    monkeypatch.setenv("MULDE_CACHE", str(tmp_path_factory.mktemp("mulde_cache")))
