"""Atomic writes: complete files only, unique temporary names, ordinary permissions."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from mulde.atomic import atomic_path, atomic_write

PACKAGE = Path(__file__).resolve().parents[1] / "mulde"


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_write_text_and_bytes(tmp_path, umask_022):
    out = atomic_write(tmp_path / "sub" / "a.json", '{"x": "é"}')
    assert out == tmp_path / "sub" / "a.json" and out.read_text(encoding="utf-8") == '{"x": "é"}'
    atomic_write(out, b"\x00\x01")  # replaces the old content
    assert out.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in out.parent.iterdir()) == ["a.json"]  # no temp file left
    assert mode(out) == 0o644


def test_mode_follows_umask(tmp_path):
    old = os.umask(0o027)
    try:
        assert mode(atomic_write(tmp_path / "f", "x")) == 0o640
    finally:
        os.umask(old)


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_failed_writer_leaves_old_file_and_no_temp(tmp_path, exc):
    target = tmp_path / "scores.csv"
    target.write_text("old")
    seen = []
    with pytest.raises(exc):
        with atomic_path(target) as tmp:
            seen.append(tmp)
            tmp.write_text("half writ")
            raise exc("interrupted")
    assert target.read_text() == "old"
    assert not seen[0].exists() and sorted(p.name for p in tmp_path.iterdir()) == ["scores.csv"]


def test_writer_that_creates_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match="did not create"):
        with atomic_path(tmp_path / "x.bin"):
            pass
    assert not (tmp_path / "x.bin").exists()


def test_temp_names_are_hidden_unique_and_keep_the_suffix(tmp_path):
    target = tmp_path / "overlay.mp4"
    names = set()
    for _ in range(50):
        with pytest.raises(ValueError), atomic_path(target) as tmp:
            names.add(tmp)
            raise ValueError
    assert len(names) == 50
    for tmp in names:
        assert tmp.parent == tmp_path and tmp.name.startswith(".overlay.mp4.") and tmp.suffix == ".mp4"
        assert f".{os.getpid()}." in tmp.name


def test_two_threads_never_share_a_temp_file(tmp_path):
    target = tmp_path / "manifest.json"
    barrier = threading.Barrier(2)
    temps: list[Path] = []
    payloads = {i: bytes([65 + i]) * 2_000_000 for i in range(2)}

    def write(i: int) -> None:
        with atomic_path(target) as tmp:
            temps.append(tmp)
            barrier.wait(timeout=10)  # both writers hold a temp file at the same time
            with tmp.open("wb") as fh:
                for k in range(0, len(payloads[i]), 100_000):
                    fh.write(payloads[i][k:k + 100_000])
            barrier.wait(timeout=10)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(set(temps)) == 2
    assert target.read_bytes() in payloads.values()  # one complete file, never a mix
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_two_processes_writing_the_same_file(tmp_path):
    target = tmp_path / "run.json"
    code = ("import sys; from mulde.atomic import atomic_write\n"
            "for _ in range(40): atomic_write(sys.argv[1], sys.argv[2] * 300_000)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(target), ch]) for ch in "xy"]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    text = target.read_text()
    assert text in ("x" * 300_000, "y" * 300_000)
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


@dataclass
class _Cfg:
    a: int = 1


def test_feature_and_model_files_are_0644(tmp_path, umask_022):
    """These came from mkstemp (0600) before; now every file the package writes is 0644."""
    import torch

    from mulde.detector.base import write_model_file
    from mulde.extractors.base import FeatureTable

    table = FeatureTable(np.arange(3), np.ones((3, 2), np.float32), meta={"n_frames": 3})
    feat = table.save(tmp_path / "v.velocity.npz")
    model = write_model_file(tmp_path / "m.safetensors", "gmm", _Cfg(), {"w": torch.ones(2)})
    assert mode(feat) == 0o644 and mode(model) == 0o644
    np.testing.assert_array_equal(FeatureTable.load(feat).values, table.values)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors", "v.velocity.npz"]


def test_no_hand_written_atomic_writes_left():
    """Every rename-into-place in the package goes through mulde.atomic (unique temp names)."""
    pattern = re.compile(r"os\.replace\(|mkstemp\(|with_suffix\(.*\.tmp|\.part\"")
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "atomic.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}")
    assert not offenders, "use mulde.atomic.atomic_path/atomic_write:\n" + "\n".join(offenders)
