"""Batch scoring (``vad score`` with many inputs): videos -> ``<out-dir>/<name>.scores.csv``.

Inputs are video files, folders of frames, folders of videos (each video, and each sub-folder of
frames, is one input), glob patterns (``'cams/*.mp4'``) and ``@list.txt`` files (one path per
line; ``#`` starts a comment; relative paths are relative to the list file). Every worker loads
the trained run once and scores its videos with :func:`mulde.pipeline.predict.score_file`; the
executor (:mod:`mulde.pipeline.executor`) spreads them over workers, Ray or shards, skips
videos whose CSV exists, and lists failures in ``<out-dir>/failures.json``.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mulde.datasets.folder import list_sources, video_id
from mulde.datasets.video import IMAGE_EXTENSIONS
from mulde.errors import InputError, VideoError
from mulde.pipeline.executor import JobReport, RunOptions, WorkItem, run_job

log = logging.getLogger(__name__)

GLOB_CHARS = set("*?[")


def is_frame_folder(path: Path) -> bool:
    """A folder whose own files are images (one video as frames), not a folder of videos."""
    return path.is_dir() and any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in path.iterdir())


def _expand_one(path: Path, given: str) -> list[Path]:
    if path.is_dir():
        if is_frame_folder(path):
            return [path]
        found = list_sources(path)
        if not found:
            raise InputError(f"{path}: no videos or frame folders in it (from {given!r}); pass video files, "
                             "a folder of videos or a folder of frames")
        return found
    if path.is_file():
        return [path]
    raise VideoError(f"{path}: no such video file or folder (from {given!r})")


def is_batch_input(text: str) -> bool:
    """Whether one ``vad score`` input names several videos (list file, glob, folder of videos)."""
    path = Path(text).expanduser()
    if text.startswith("@") or (GLOB_CHARS & set(text) and not path.exists()):
        return True
    return path.is_dir() and not is_frame_folder(path)


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Video files / frame folders named by files, folders, globs and ``@list.txt`` files."""
    out: list[Path] = []
    for given in inputs:
        text = str(given)
        if text.startswith("@"):
            listing = Path(text[1:]).expanduser()
            if not listing.is_file():
                raise InputError(f"{listing}: list file not found (from {text!r}); write one path per line")
            for raw in listing.read_text().splitlines():
                line = raw.split("#", 1)[0].strip()
                if line:
                    entry = Path(line).expanduser()
                    out += _expand_one(entry if entry.is_absolute() else listing.parent / entry, text)
        elif GLOB_CHARS & set(text) and not Path(text).exists():
            matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            if not matches:
                raise InputError(f"{text!r} matches no file; check the pattern (quote it so the shell "
                                 "does not expand it)")
            for m in matches:
                out += _expand_one(Path(m), text)
        else:
            out += _expand_one(Path(text).expanduser(), text)
    if not out:
        raise InputError("no inputs to score; pass video files, folders, globs or @list.txt")
    return out


class ScoreJob:
    """Score videos with one trained run (see :mod:`mulde.pipeline.executor`)."""

    def __init__(self, run_dir: str | os.PathLike, out_dir: str | os.PathLike,
                 overrides: dict[str, Any] | None = None, fps: float | None = None,
                 plots: bool = False, label: str = "score") -> None:
        self.run_dir, self.out_dir = Path(run_dir), Path(out_dir)
        self.overrides = dict(overrides or {})
        self.fps, self.plots, self.label = fps, plots, label
        self._run = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_run": None}

    def _device(self) -> str | None:
        from mulde.pipeline.run import requested_device

        return requested_device(self.overrides)

    def uses_gpu(self) -> bool:
        import torch

        return self._device() in (None, "auto", "cuda") and torch.cuda.is_available()

    def setup(self, device: str | None) -> None:
        from mulde.pipeline.run import load_run

        if device and self._device() in (None, "auto", "cuda"):
            import torch

            torch.cuda.set_device(torch.device(device))
            self.overrides["device"] = device
        self._run = load_run(self.run_dir, device=self._device())

    def csv_path(self, item: WorkItem) -> Path:
        return self.out_dir / f"{item.key}.scores.csv"

    def is_done(self, item: WorkItem) -> bool:
        return self.csv_path(item).is_file()

    def run(self, item: WorkItem, progress: bool) -> int:
        from mulde.pipeline.predict import score_file

        plot = self.out_dir / f"{item.key}.scores.png" if self.plots else None
        frame = score_file(item.source, self.run_dir, out=self.csv_path(item), plot=plot,
                           overrides=self.overrides, progress=progress, run=self._run, fps=self.fps)
        return len(frame)


def score_many(inputs: Sequence[str | os.PathLike], run_dir: str | os.PathLike, out_dir: str | os.PathLike,
               overrides: dict[str, Any] | None = None, fps: float | None = None, plots: bool = False,
               options: RunOptions | None = None, progress: bool = True) -> JobReport:
    """Score every input into ``out_dir``; returns the executor's report (failures are listed
    in ``out_dir/failures.json``; call ``report.raise_for_failures()`` to turn them into an error).
    Without ``options`` the runtime section of the run's config with ``overrides`` decides
    (workers, executor, shard, ...)."""
    from mulde.pipeline.run import load_run, run_config

    run = load_run(run_dir, device="cpu")  # a wrong --model fails here, once, before any worker starts
    options = options or RunOptions.from_runtime(run_config(run, overrides).runtime)
    sources = expand_inputs(inputs)
    out_dir = Path(out_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    items = [WorkItem(video_id(s), str(s)) for s in sources]
    job = ScoreJob(run_dir, out_dir, overrides, fps, plots, label=f"score {len(items)} videos")
    return run_job(job, items, out_dir, options, progress=progress,
                   skip_note=f"already scored in {out_dir} (skipped; delete a CSV to score it again)")
