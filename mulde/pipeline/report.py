"""Pictures of the results: score curves over ground truth, the ROC curve, an overlay video."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from mulde.atomic import atomic_path
from mulde.errors import InputError


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _intervals(labels: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) runs of 1s in a 0/1 array."""
    padded = np.concatenate([[0], labels.astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2], edges[1::2]))


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)


def plot_evaluation(scores: dict[str, np.ndarray], labels: dict[str, np.ndarray], metrics: dict,
                    path: str | Path) -> Path:
    """One panel per test video (score over shaded anomalous frames) plus the micro ROC curve."""
    from sklearn.metrics import roc_curve

    plt = _plt()
    ids = list(scores)
    cols = min(4, len(ids) + 1)
    rows = math.ceil((len(ids) + 1) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), squeeze=False)
    for ax, vid in zip(axes.flat, ids):
        for a, b in _intervals(labels[vid]) if vid in labels else ():
            ax.axvspan(a, b - 1, color="tab:red", alpha=0.25, lw=0)
        ax.plot(scores[vid], color="tab:blue", lw=1)
        auc = metrics.get("per_video_auc", {}).get(vid)
        ax.set_title(f"{vid}" + (f"  AUC {auc:.3f}" if auc is not None else "  (one class)"), fontsize=9)
        ax.tick_params(labelsize=7)
    ax = axes.flat[len(ids)]
    if metrics.get("micro_auc") is None:  # an unlabelled test split: scores only
        ax.axis("off")
    else:
        y = np.concatenate([labels[v] for v in labels])
        s = np.concatenate([scores[v] for v in labels])
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, color="tab:green")
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
        ax.set_title(f"ROC micro {metrics['micro_auc']:.3f} / macro {metrics['macro_auc']:.3f}", fontsize=9)
        ax.set_xlabel("false positive rate", fontsize=8)
        ax.set_ylabel("true positive rate", fontsize=8)
    for ax in list(axes.flat)[len(ids) + 1:]:
        ax.axis("off")
    fig.suptitle(f"{metrics.get('dataset', '')}: anomaly score per frame (red: ground-truth anomalies)", fontsize=10)
    fig.tight_layout()
    _save(fig, Path(path))
    plt.close(fig)
    return Path(path)


def plot_scores(scores: np.ndarray, path: str | Path, title: str = "", threshold: float | None = None) -> Path:
    """Score curve of one video."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 3))
    ax.plot(scores, color="tab:blue", lw=1)
    if threshold is not None:
        ax.axhline(threshold, color="tab:red", ls="--", lw=0.8, label="training 99th percentile")
        ax.legend(fontsize=8, loc="upper right")
    ax.set_xlabel("frame")
    ax.set_ylabel("anomaly score")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    _save(fig, Path(path))
    plt.close(fig)
    return Path(path)


def _colour(z: float) -> tuple[int, int, int]:
    """BGR colour from green (normal, z <= 0) to red (z >= 3)."""
    t = float(np.clip(z / 3.0, 0.0, 1.0))
    return (0, int(255 * (1 - t)), int(255 * t))


def write_overlay(reader, frame_scores: np.ndarray, path: str | Path, boxes: dict[int, list] | None = None,
                  progress: bool = True) -> Path:
    """Copy of the video with boxes coloured by anomaly score and a score bar along the bottom.

    ``frame_scores`` are standardised (0 = training mean, 1 = one training std); ``boxes`` maps a
    frame index to a list of (x1, y1, x2, y2, z) with the object's standardised score.
    """
    import cv2
    from tqdm.auto import tqdm

    path = Path(path)
    w, h, n = reader.width, reader.height, len(reader)
    if len(frame_scores) != n:
        raise InputError(f"{path}: {len(frame_scores)} frame scores for a video of {n} frames; the "
                         "overlay draws one score per frame (score the same video)")
    path.parent.mkdir(parents=True, exist_ok=True)
    bar = 28
    with atomic_path(path) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(reader.fps or 25.0), (w, h + bar))
        if not writer.isOpened():
            raise OSError(f"{path}: OpenCV cannot write this video file; use a .mp4 or .avi name")
        curve = np.clip(np.asarray(frame_scores, dtype=np.float64) / 3.0, 0, 1)
        xs = (np.arange(n) * (w - 1) / max(n - 1, 1)).astype(int)
        ys = (bar - 2 - curve * (bar - 4)).astype(int)
        strip = np.zeros((bar, w, 3), np.uint8)
        cv2.polylines(strip, [np.stack([xs, ys], axis=1).astype(np.int32)], False, (200, 200, 200), 1)
        try:
            with tqdm(total=n, desc="overlay", unit="frame", disable=not progress) as pbar:
                for start, frames in reader.iter_chunks(64):
                    for k, rgb in enumerate(frames):
                        t = start + k
                        img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
                        for x1, y1, x2, y2, z in (boxes or {}).get(t, []):
                            cv2.rectangle(img, (int(x1), int(y1)), (int(x2), int(y2)), _colour(z), 2)
                        canvas = np.concatenate([img, strip], axis=0)
                        cv2.line(canvas, (int(xs[t]), h), (int(xs[t]), h + bar - 1), _colour(frame_scores[t]), 2)
                        cv2.putText(canvas, f"{frame_scores[t]:+.2f}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                                    _colour(frame_scores[t]), 1, cv2.LINE_AA)
                        writer.write(canvas)
                        pbar.update(1)
        finally:
            writer.release()
    return path
