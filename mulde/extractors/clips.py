"""Clip sampling for frame-centric features: one fixed-length clip around every frame.

A clip of ``clip_len`` frames with temporal ``stride`` s is labelled by its centre frame c and
covers the frames ``c + s * (k - clip_len // 2)`` for k = 0 .. clip_len - 1. For the default
16-frame clip at stride 1 that is frames c-8 .. c+7 (8 before the centre, the centre, 7 after);
at stride 2 it is c-16, c-14, .. c+14.

Near the ends of a video the window runs past the first or last frame. With ``pad=True``
(default) those positions repeat the first/last frame, so every frame is a centre and gets
exactly one feature. With ``pad=False`` only centres whose whole window lies inside the video
are used and the frames at the edges take the feature of the nearest valid centre.

``clip_step`` k > 1 computes a clip only every k-th frame (for speed) and every frame takes
the feature of its nearest clip centre (:func:`assign_nearest`).
"""

from __future__ import annotations

import numpy as np

from mulde.errors import InputError


def _check(n_frames: int, clip_len: int, stride: int, step: int = 1) -> None:
    for name, value in (("clip_len", clip_len), ("stride", stride), ("clip_step", step)):
        if int(value) < 1:
            raise InputError(f"{name} must be a positive integer, got {value}")
    if int(n_frames) < 1:
        raise InputError(f"video has {n_frames} frames; need at least one frame to sample clips")


def clip_offsets(clip_len: int = 16, stride: int = 1) -> np.ndarray:
    """Offsets of a clip's frames from its centre: ``stride * (arange(clip_len) - clip_len // 2)``."""
    return (np.arange(clip_len, dtype=np.int64) - clip_len // 2) * int(stride)


def clip_span(clip_len: int = 16, stride: int = 1) -> int:
    """Number of frames a clip spans from its first to its last frame."""
    return (int(clip_len) - 1) * int(stride) + 1


def clip_centres(
    n_frames: int, step: int = 1, clip_len: int = 16, stride: int = 1, pad: bool = True
) -> np.ndarray:
    """Centre frames of the clips to compute, every ``step`` frames.

    With ``pad=True`` centres run over the whole video (0, step, 2*step, ..); with
    ``pad=False`` only over centres whose window fits inside the video, and a video shorter
    than one clip span raises :class:`InputError`.
    """
    _check(n_frames, clip_len, stride, step)
    if pad:
        first, last = 0, n_frames - 1
    else:
        offsets = clip_offsets(clip_len, stride)
        first, last = int(-offsets[0]), int(n_frames - 1 - offsets[-1])
        if last < first:
            span = clip_span(clip_len, stride)
            raise InputError(
                f"video has {n_frames} frames but one clip spans {span} frames "
                f"({clip_len} frames at stride {stride}); use pad=True or a shorter clip"
            )
    return np.arange(first, last + 1, int(step), dtype=np.int64)


def clip_indices(
    centres: np.ndarray, n_frames: int, clip_len: int = 16, stride: int = 1, pad: bool = True
) -> np.ndarray:
    """Frame indices (C, clip_len) of the clip around each centre.

    Positions before frame 0 or after the last frame repeat that edge frame when ``pad``;
    without ``pad`` such a clip raises :class:`InputError`.
    """
    _check(n_frames, clip_len, stride)
    centres = np.asarray(centres, dtype=np.int64).reshape(-1)
    idx = centres[:, None] + clip_offsets(clip_len, stride)[None, :]
    if not pad and idx.size and (idx.min() < 0 or idx.max() >= n_frames):
        raise InputError(
            f"a clip of {clip_len} frames at stride {stride} around frame "
            f"{int(centres[(idx.min(1) < 0) | (idx.max(1) >= n_frames)][0])} leaves the "
            f"{n_frames}-frame video; use pad=True"
        )
    return np.clip(idx, 0, n_frames - 1)


def assign_nearest(n_frames: int, centres: np.ndarray) -> np.ndarray:
    """For every frame, the index (into ``centres``) of the nearest clip centre.

    ``centres`` must be sorted ascending; on a tie the earlier centre wins.
    """
    centres = np.asarray(centres, dtype=np.int64).reshape(-1)
    if centres.size == 0:
        raise InputError("no clip centres to assign frames to")
    if np.any(np.diff(centres) <= 0):
        raise InputError("clip centres must be strictly increasing")
    frames = np.arange(int(n_frames), dtype=np.int64)
    right = np.clip(np.searchsorted(centres, frames, side="left"), 0, len(centres) - 1)
    left = np.clip(right - 1, 0, len(centres) - 1)
    take_left = np.abs(frames - centres[left]) <= np.abs(centres[right] - frames)
    return np.where(take_left, left, right)


def window_mean(
    values: np.ndarray, centres: np.ndarray, clip_len: int = 16, stride: int = 1, pad: bool = True
) -> np.ndarray:
    """Mean of per-frame ``values`` (N, D) over the clip window of each centre -> (C, D).

    Exactly ``values[clip_indices(...)].mean(1)`` (edge frames repeated when ``pad``), but in
    O(N + C) time with cumulative sums taken along each residue class modulo ``stride``.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise InputError(f"window_mean expects (frames, dims) values, got shape {values.shape}")
    n = values.shape[0]
    _check(n, clip_len, stride)
    s = int(stride)
    centres = np.asarray(centres, dtype=np.int64).reshape(-1)
    clip_indices(centres, n, clip_len, stride, pad)  # validates the windows
    offsets = clip_offsets(clip_len, stride)
    # csum[i] = values[i] + values[i - s] + values[i - 2s] + ... (same residue class).
    rows = -(-n // s) * s
    padded = np.zeros((rows, values.shape[1]), np.float64)
    padded[:n] = values
    csum = np.cumsum(padded.reshape(rows // s, s, -1), axis=0).reshape(rows, -1)[:n]
    lo = centres + offsets[0]
    hi = centres + offsets[-1]
    # First/last in-range member of each window's progression (same residue as the centre).
    first = np.where(lo >= 0, lo, centres - s * (centres // s))
    last = np.where(hi <= n - 1, hi, centres + s * ((n - 1 - centres) // s))
    n_low = np.where(lo < 0, (first - lo) // s, 0)
    n_high = np.where(hi > n - 1, (hi - last) // s, 0)
    before = first - s
    total = csum[last] - np.where(before[:, None] >= 0, csum[np.maximum(before, 0)], 0.0)
    total += n_low[:, None] * values[0] + n_high[:, None] * values[n - 1]
    return (total / clip_len).astype(np.float32)
