"""Shared test set-up: offline hubs, a non-interactive plot backend, and the real-data fixture."""

from __future__ import annotations

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


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never let a test write to the user's ~/.cache/mulde."""
    monkeypatch.setenv("MULDE_CACHE", str(tmp_path_factory.mktemp("mulde_cache")))
