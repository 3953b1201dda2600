"""Summary of a dataset on disk: counts, frame size, label statistics and problems found."""

from __future__ import annotations

from collections import Counter

import numpy as np
from tqdm.auto import tqdm

from mulde.datasets.base import Dataset
from mulde.datasets.video import open_video
from mulde.errors import MuldeError


def dataset_info(ds: Dataset, progress: bool = True) -> dict:
    """Open every train/test video once and report what is there and what is wrong.

    Keys: dataset, root, train_videos, test_videos, train_frames, test_frames,
    anomalous_fraction (over labelled test frames, None without labels), frame_size [w, h]
    (the most common), fps (the most common), problems (list of one-line strings).
    """
    info: dict = {"dataset": ds.name, "root": str(ds.root)}
    problems: list[str] = []
    sizes: Counter = Counter()
    rates: Counter = Counter()
    labelled = anomalous = 0
    for split in ("train", "test"):
        try:
            items = ds.videos(split)
        except MuldeError as exc:
            problems.append(f"{split}: {exc}")
            items = []
        frames = 0
        for item in tqdm(items, desc=f"{ds.name} {split}", unit="video", disable=not progress):
            try:
                with open_video(item.source, fps=ds.default_fps) as reader:
                    frames += reader.n_frames
                    sizes[(reader.width, reader.height)] += 1
                    rates[round(reader.fps, 3)] += 1
            except MuldeError as exc:
                problems.append(f"{split} video {item.video_id}: {exc}")
                continue
            if split == "test":
                if item.labels is None:
                    problems.append(f"test video {item.video_id} has no labels")
                else:
                    labelled += len(item.labels)
                    anomalous += int(np.count_nonzero(item.labels))
        info[f"{split}_videos"] = len(items)
        info[f"{split}_frames"] = frames
    info["anomalous_fraction"] = round(anomalous / labelled, 6) if labelled else None
    info["frame_size"] = list(sizes.most_common(1)[0][0]) if sizes else None
    if len(sizes) > 1:
        problems.append(f"frame sizes vary across videos: {len(sizes)} different sizes")
    info["fps"] = rates.most_common(1)[0][0] if rates else None
    info["problems"] = problems
    return info


def format_info(info: dict) -> str:
    """Human-readable multi-line summary of :func:`dataset_info`'s result."""
    frac = info.get("anomalous_fraction")
    size = info.get("frame_size")
    fps = info.get("fps")
    lines = [
        f"dataset     {info.get('dataset')}  ({info.get('root')})",
        f"train       {info.get('train_videos', 0)} videos, {info.get('train_frames', 0)} frames",
        f"test        {info.get('test_videos', 0)} videos, {info.get('test_frames', 0)} frames",
        f"anomalous   {'n/a (no labels)' if frac is None else f'{100 * frac:.1f}% of labelled test frames'}",
        f"frame size  {'n/a' if not size else f'{size[0]}x{size[1]}'}",
        f"fps         {'n/a' if fps is None else f'{fps:g}'}",
    ]
    problems = info.get("problems") or []
    lines.append(f"problems    {'none' if not problems else len(problems)}")
    lines += [f"  - {p}" for p in problems]
    return "\n".join(lines)
